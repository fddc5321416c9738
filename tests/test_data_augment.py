"""SSD augmentations: boxes still frame their objects after the full chain; each step's rules."""

import colorsys

import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import defaults
from ssd_tf import images
from ssd_tf.data import augment

SIZE = 300
MEAN = (123.7, 116.3, 103.5)
HEIGHT, WIDTH = 240, 320
# Non-overlapping boxes (pixels: y0, x0, y1, x1), each painted its own colour on black; label k+1.
PAINTED = ((10, 10, 130, 150), (110, 170, 230, 310), (140, 20, 230, 150))
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.float32)
CROWD_LABEL = 2


def _config(**changes):
  cfg = defaults.base_config().data.augment
  cfg.update(changes)
  return cfg


def _painted_element():
  image = np.zeros([HEIGHT, WIDTH, 3], np.uint8)
  for (y0, x0, y1, x1), colour in zip(PAINTED, COLOURS):
    image[y0:y1, x0:x1] = colour
  boxes = np.array([[y0 / HEIGHT, x0 / WIDTH, y1 / HEIGHT, x1 / WIDTH] for y0, x0, y1, x1 in PAINTED],
                   np.float32)
  return dict(image=tf.constant(image), boxes=tf.constant(boxes), labels=tf.constant([1, 2, 3]),
              is_crowd=tf.constant([False, True, False]), image_id=tf.constant(7, tf.int64))


def _colour_box_ious(out):
  """IoU of each output box with the bounding box of the pixels nearest its colour."""
  image = out["image"].numpy()
  references = np.concatenate([COLOURS, [[0, 0, 0], MEAN]])
  nearest = np.argmin(((image[..., None, :] - references) ** 2).sum(-1), axis=-1)
  ious = []
  for box, label in zip(out["boxes"].numpy(), out["labels"].numpy()):
    rows, cols = np.nonzero(nearest == label - 1)
    if rows.size == 0:
      ious.append(0.0)
      continue
    found = np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]) / SIZE
    inter = np.prod(np.maximum(np.minimum(box[2:], found[2:]) - np.maximum(box[:2], found[:2]), 0))
    ious.append(inter / (np.prod(box[2:] - box[:2]) + np.prod(found[2:] - found[:2]) - inter))
  return np.array(ious)


def _run_seeds(cfg, seeds):
  element = _painted_element()
  transform = tf.function(lambda seed: augment.train_transform(element, seed, cfg, SIZE, MEAN))
  for s in seeds:
    yield transform(tf.constant([3, s], tf.int64))


def test_surviving_boxes_frame_their_colour():
  cfg = _config(photometric_prob=0.0)   # colours must stay identifiable; geometry is the subject
  expanded = cropped = flipped_or_moved = 0
  for out in _run_seeds(cfg, range(200)):
    boxes, labels, crowd = (out[k].numpy() for k in ("boxes", "labels", "is_crowd"))
    assert out["image"].shape == (SIZE, SIZE, 3) and out["image"].dtype == tf.float32
    assert boxes.shape == (len(labels), 4) and len(set(labels)) == len(labels)
    assert np.all(boxes >= 0.0) and np.all(boxes <= 1.0)
    assert np.all((boxes[:, 2:] - boxes[:, :2]) * SIZE >= cfg.min_box_px)
    np.testing.assert_array_equal(crowd, labels == CROWD_LABEL)
    ious = _colour_box_ious(out)
    assert np.all(ious >= 0.9), (labels, ious)
    image = out["image"].numpy()
    expanded += np.any(np.all(image == np.float32(MEAN), axis=-1))
    cropped += len(labels) < 3
    flipped_or_moved += 1 in labels and boxes[list(labels).index(1), 1] > 0.5
  # the chain really expanded, cropped boxes away and flipped
  assert expanded > 40 and cropped > 20 and flipped_or_moved > 20


def test_the_colour_check_catches_a_box_that_misses_the_flip(monkeypatch):
  real = augment.transform_boxes
  monkeypatch.setattr(augment, "transform_boxes",
                      lambda boxes, window, flip, size, min_px: real(boxes, window, tf.constant(False),
                                                                    size, min_px))
  worst = min(_colour_box_ious(out).min(initial=1.0) for out in _run_seeds(_config(photometric_prob=0.0),
                                                                            range(20)))
  assert worst < 0.5


def test_fill_keeps_the_mean_colour_under_photometric_distortion():
  element = _painted_element()
  element["image"] = tf.fill([HEIGHT, WIDTH, 3], tf.constant(180, tf.uint8))
  cfg = _config(photometric_prob=1.0, expand_prob=1.0)
  transform = tf.function(lambda seed: augment.train_transform(element, seed, cfg, SIZE, MEAN))
  changed = 0
  for s in range(10):
    image = transform(tf.constant([5, s], tf.int64))["image"].numpy().reshape(-1, 3)
    fill = np.all(image == np.float32(MEAN), axis=-1)
    photo = image[~fill]
    assert fill.any() and photo.size                       # 4x expand at most: both remain
    np.testing.assert_allclose(photo, np.broadcast_to(photo[0], photo.shape), atol=0.05)  # still uniform
    assert np.all((photo >= 0) & (photo <= 255))
    changed += np.abs(photo[0] - 180).max() > 1
  assert changed >= 8


def _photometric(image, cfg, seed=(1, 2)):
  return augment.photometric_distort(tf.constant(image, tf.float32), tf.constant(seed, tf.int64), cfg).numpy()


def test_photometric_ops_against_numpy():
  rng = np.random.default_rng(0)
  image = rng.uniform(100, 150, (6, 7, 3)).astype(np.float32)
  grey = image @ np.array([0.299, 0.587, 0.114], np.float32)
  # contrast x2 and saturation 0 (in either order: no clipping at these values), no brightness, no hue
  cfg = _config(photometric_prob=1.0, brightness_delta=0.0, contrast_range=(2.0, 2.0),
                saturation_range=(0.0, 0.0), hue_delta=0.0)
  expected = 2.0 * (grey - grey.mean()) + grey.mean()
  for seed in [(0, 1), (0, 2), (0, 3)]:
    np.testing.assert_allclose(_photometric(image, cfg, seed), np.repeat(expected[..., None], 3, -1),
                               atol=0.05)
  # brightness alone: one shift for all pixels, within the delta
  cfg = _config(photometric_prob=1.0, brightness_delta=32.0, contrast_range=(1.0, 1.0),
                saturation_range=(1.0, 1.0), hue_delta=0.0)
  shift = _photometric(image, cfg) - image
  assert np.ptp(shift) < 0.05 and 0 < abs(shift.mean()) <= 32
  # hue alone: value and saturation kept, every hue turned by the same angle
  cfg = _config(photometric_prob=1.0, brightness_delta=0.0, contrast_range=(1.0, 1.0),
                saturation_range=(1.0, 1.0), hue_delta=0.1)
  before = np.array([colorsys.rgb_to_hsv(*p) for p in image.reshape(-1, 3) / 255])
  after = np.array([colorsys.rgb_to_hsv(*p) for p in _photometric(image, cfg).reshape(-1, 3) / 255])
  np.testing.assert_allclose(after[:, 1:], before[:, 1:], atol=2e-3)
  turn = (after[:, 0] - before[:, 0] + 0.5) % 1.0 - 0.5
  assert np.ptp(turn) < 5e-3 and 0 < abs(turn.mean()) <= 0.1


def test_photometric_probability_and_clipping():
  image = np.full((4, 4, 3), 250.0, np.float32)
  cfg = _config(photometric_prob=0.5, brightness_delta=32.0, contrast_range=(1.0, 1.0),
                saturation_range=(1.0, 1.0), hue_delta=0.0)
  distort = tf.function(lambda seed: augment.photometric_distort(tf.constant(image), seed, cfg))
  outputs = np.stack([distort(tf.constant([9, s], tf.int64)).numpy() for s in range(400)])
  changed = np.abs(outputs - 250).max(axis=(1, 2, 3)) > 1e-3
  assert 0.4 < changed.mean() < 0.6        # brightness applied about half the time
  assert outputs.max() <= 255.0 and outputs.min() >= 250 - 32


def test_expand_canvas():
  cfg = _config(expand_prob=1.0, expand_max_ratio=4.0)
  canvases = np.stack([augment.sample_expand(tf.constant([0, s], tf.int64), cfg).numpy() for s in range(100)])
  sides = canvases[:, 2:] - canvases[:, :2]
  np.testing.assert_allclose(sides[:, 0], sides[:, 1], rtol=1e-6)      # same ratio on both axes
  assert sides.min() >= 1.0 and sides.max() <= 4.0 and sides.max() > 3.0
  assert np.all(canvases[:, :2] <= 0.0) and np.all(canvases[:, 2:] >= 1.0)  # the image lies inside
  never = augment.sample_expand(tf.constant([0, 1], tf.int64), _config(expand_prob=0.0)).numpy()
  np.testing.assert_array_equal(never, [0, 0, 1, 1])


def test_crop_meets_its_constraints():
  cfg = _config(crop_min_ious=(0.5,), crop_keep_whole=False)
  boxes = tf.constant([[0.1, 0.1, 0.7, 0.6], [0.5, 0.5, 0.9, 0.95], [0.0, 0.0, 1.0, 1.0]])
  is_crowd = tf.constant([False, False, True])
  canvas = tf.constant([-0.1, -0.2, 1.1, 1.0])
  found = 0
  for s in range(100):
    seed = tf.constant([1, s], tf.int64)
    window = augment.sample_crop(seed, canvas, boxes, is_crowd, 200, 300, cfg).numpy()
    if np.array_equal(window, canvas.numpy()):
      continue
    found += 1
    side = window[2:] - window[:2]
    assert np.all(window[:2] >= canvas[:2] - 1e-6) and np.all(window[2:] <= canvas[2:] + 1e-6)
    assert np.all(side >= 0.3 * 1.2 - 1e-6) and np.all(side <= 1.2 + 1e-6)
    assert 0.5 <= side[1] * 300 / (side[0] * 200) <= 2.0                    # pixel aspect
    ious = _iou(window, boxes.numpy()[:2])                                   # the crowd box never counts
    centres = (boxes.numpy()[:2, :2] + boxes.numpy()[:2, 2:]) / 2
    inside = np.all((centres > window[:2]) & (centres < window[2:]), axis=1)
    assert ious.max() >= 0.5 and inside.any()
  assert found > 30


def test_crop_of_an_image_without_objects_is_unconstrained():
  cfg = _config(crop_min_ious=(0.9,), crop_keep_whole=False)
  canvas = tf.constant([0.0, 0.0, 1.0, 1.0])
  windows = [augment.sample_crop(tf.constant([2, s], tf.int64), canvas, tf.zeros([0, 4]),
                                 tf.zeros([0], tf.bool), 100, 100, cfg).numpy() for s in range(20)]
  assert sum(not np.array_equal(w, canvas.numpy()) for w in windows) == 20


def _iou(window, boxes):
  inter = np.prod(np.maximum(np.minimum(window[2:], boxes[:, 2:]) - np.maximum(window[:2], boxes[:, :2]), 0),
                  axis=1)
  return inter / (np.prod(window[2:] - window[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter)


def test_transform_boxes_by_hand():
  boxes = tf.constant([[0.3, 0.2, 0.5, 0.4],     # centre inside, crosses the left edge: clipped
                       [0.1, 0.1, 0.3, 0.3],     # centre outside: dropped
                       [0.5, 0.5, 0.502, 0.6]])  # 0.004 of the window tall = 1.2 px: kept at 1 px minimum
  window = tf.constant([0.25, 0.25, 0.75, 0.75])
  kept, keep = augment.transform_boxes(boxes, window, tf.constant(False), SIZE, 1.0)
  np.testing.assert_array_equal(keep.numpy(), [True, False, True])
  np.testing.assert_allclose(kept.numpy(), [[0.1, 0.0, 0.5, 0.3], [0.5, 0.5, 0.504, 0.7]], atol=1e-6)
  flipped, _ = augment.transform_boxes(boxes, window, tf.constant(True), SIZE, 1.0)
  np.testing.assert_allclose(flipped.numpy(), [[0.1, 0.7, 0.5, 1.0], [0.5, 0.3, 0.504, 0.5]], atol=1e-6)
  _, keep = augment.transform_boxes(boxes, window, tf.constant(False), SIZE, 2.0)
  np.testing.assert_array_equal(keep.numpy(), [True, False, False])


def test_render_whole_window_is_the_eval_resize_and_flip_mirrors():
  image = tf.constant(np.random.default_rng(1).integers(0, 256, (37, 53, 3)), tf.uint8)
  window = tf.constant([0.0, 0.0, 1.0, 1.0])
  rendered, inside = augment.render(image, window, tf.constant(False), 20)
  np.testing.assert_allclose(rendered.numpy(), images.resize(image, 20).numpy(), atol=1e-3)
  assert inside.numpy().all()
  mirrored, _ = augment.render(image, window, tf.constant(True), 20)
  np.testing.assert_allclose(mirrored.numpy(), rendered.numpy()[:, ::-1], atol=1e-6)
  # a window twice the image, image in its top-left quarter: the inside mask is that quarter
  _, inside = augment.render(image, tf.constant([0.0, 0.0, 2.0, 2.0]), tf.constant(False), 20)
  expected = np.zeros([20, 20], bool)
  expected[:10, :10] = True
  np.testing.assert_array_equal(inside.numpy(), expected)


def test_same_seed_same_result():
  element = _painted_element()
  cfg = _config()
  first = augment.train_transform(element, tf.constant([4, 4], tf.int64), cfg, 64, MEAN)
  again = augment.train_transform(element, tf.constant([4, 4], tf.int64), cfg, 64, MEAN)
  other = augment.train_transform(element, tf.constant([4, 5], tf.int64), cfg, 64, MEAN)
  np.testing.assert_array_equal(first["image"].numpy(), again["image"].numpy())
  np.testing.assert_array_equal(first["boxes"].numpy(), again["boxes"].numpy())
  assert not np.array_equal(first["image"].numpy(), other["image"].numpy())
  assert int(first["image_id"]) == 7        # other keys pass through


def test_image_without_boxes():
  element = _painted_element()
  element.update(boxes=tf.zeros([0, 4]), labels=tf.zeros([0], tf.int32), is_crowd=tf.zeros([0], tf.bool))
  for s in range(5):
    out = augment.train_transform(element, tf.constant([6, s], tf.int64), _config(), 32, MEAN)
    assert out["image"].shape == (32, 32, 3) and out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)


@pytest.mark.slow
def test_surviving_boxes_frame_their_colour_many_seeds():
  for out in _run_seeds(_config(photometric_prob=0.0), range(200, 2200)):
    assert np.all(_colour_box_ious(out) >= 0.9)
