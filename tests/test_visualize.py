"""Drawing boxes: outline pixels at hand-computed coordinates, untouched interiors, captions at borders."""

import numpy as np
from PIL import Image

from ssd_tf import visualize

GREY = 60


def blank(height=100, width=200):
  return np.full((height, width, 3), GREY, np.uint8)


def test_outline_at_expected_pixels_and_interior_unchanged():
  image = blank()
  # H=100, W=200: rows 20..59, columns 50..149; the 2-pixel outline lies inside that range.
  out = visualize.draw_detections(image, [[0.2, 0.25, 0.6, 0.75]], [3], scores=[0.871],
                                  class_names=["a", "b", "cat"])
  color = visualize.class_color(3)
  edges = [(20, 100), (21, 100), (59, 100), (58, 100), (40, 50), (40, 51), (40, 149), (40, 148), (59, 149)]
  for y, x in edges:
    assert tuple(out[y, x]) == color, (y, x)
  for y, x in [(22, 100), (40, 52), (40, 147), (57, 120), (40, 100), (60, 100), (40, 150), (40, 49)]:
    assert tuple(out[y, x]) == (GREY,) * 3, (y, x)
  # The caption sits above the box, starting at its left edge, in the class colour.
  caption = out[:20, 50:]
  assert (caption == color).all(axis=-1).sum() > 50 and tuple(out[19, 50]) == color
  assert (out[:20, :50] == GREY).all() and (out[:20, 150:] == GREY).all()
  assert out.dtype == np.uint8 and (image == GREY).all()  # input untouched


def test_ground_truth_is_thin_white_and_padding_skipped():
  out = visualize.draw_detections(blank(), np.zeros((0, 4)), np.zeros(0, np.int32),
                                  ground_truth=[[0.1, 0.1, 0.9, 0.9], [0, 0, 0, 0]])
  for y, x in [(10, 100), (89, 100), (50, 20), (50, 179)]:  # rows 10..89, columns 20..179
    assert tuple(out[y, x]) == visualize.GROUND_TRUTH_COLOR, (y, x)
  assert tuple(out[11, 100]) == (GREY,) * 3  # one pixel wide
  assert tuple(out[0, 0]) == (GREY,) * 3  # the zero padding row draws nothing
  assert (out != GREY).any(axis=-1).sum() == 2 * (160 + 80) - 4


def test_captions_near_borders_stay_inside_the_image():
  boxes = [[0.0, 0.0, 0.1, 0.1], [0.85, 0.9, 1.0, 1.0], [0.0, 0.95, 0.05, 1.0]]
  out = visualize.draw_detections(blank(), boxes, [1, 2, 3], scores=[0.5, 0.25, 0.999],
                                  class_names=["a", "a long class name", "c"])
  assert out.shape == (100, 200, 3)
  # The top-left box has no room above: its caption goes inside, below the top edge.
  color = visualize.class_color(1)
  assert tuple(out[0, 0]) == color and (out[2:13, 20:30] == color).all(axis=-1).any()
  assert (out[0:2, 20:150] == GREY).all()
  # The bottom-right caption is pushed left so that it ends at the right border.
  assert tuple(out[84, 199]) == visualize.class_color(2)


def test_zero_detections_return_an_unchanged_copy():
  image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
  out = visualize.draw_detections(image, np.zeros((0, 4)), [])
  assert out is not image and np.array_equal(out, image)


def test_batch_for_tensorboard_and_png(tmp_path):
  images = np.full((3, 50, 60, 3), 60.4, np.float32)
  detections = dict(boxes=np.tile(np.array([0.2, 0.2, 0.8, 0.8], np.float32), (3, 2, 1)),
                    scores=np.full((3, 2), 0.9, np.float32),
                    labels=np.array([[1, 2], [2, 1], [1, 1]], np.int32),
                    num_detections=np.array([1, 0, 2], np.int32))
  drawn = visualize.draw_detection_batch(images, detections, class_names=["x", "y"], max_images=2)
  assert drawn.shape == (2, 50, 60, 3) and drawn.dtype == np.uint8
  assert tuple(drawn[0, 10, 30]) == visualize.class_color(1)  # row round(0.2*50) = 10
  assert (drawn[1] == GREY).all()  # num_detections 0: the padded rows are not drawn
  path = tmp_path / "drawn.png"
  visualize.save_png(path, drawn[0])
  assert np.array_equal(np.asarray(Image.open(path)), drawn[0])
