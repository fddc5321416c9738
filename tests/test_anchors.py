"""Default boxes: counts, hand-computed values, layout order, scales, clipping, spec errors."""

import numpy as np
import pytest

from ssd_tf import anchors, defaults


SSD_SIZES = {300: defaults.SSD300_ANCHORS["feature_map_sizes"], 512: defaults.SSD512_ANCHORS["feature_map_sizes"]}


def _config(spec=defaults.SSD300_ANCHORS, **changes):
  clip = changes.pop("clip", "corners")
  return defaults.anchor_config(dict(spec, **changes), clip=clip)


@pytest.mark.parametrize("spec, image_size, expected", [
    (defaults.SSD300_ANCHORS, 300, 8732), (defaults.SSD512_ANCHORS, 512, 24564)])
def test_released_specs_have_the_paper_counts(spec, image_size, expected):
  config = _config(spec)
  boxes = anchors.default_boxes(config, image_size, config.feature_map_sizes)
  assert boxes.shape == (expected, 4) and boxes.dtype == np.float32
  assert anchors.num_default_boxes(config, config.feature_map_sizes) == expected


def test_boxes_per_cell():
  assert anchors.boxes_per_cell(_config()) == [4, 6, 6, 6, 4, 4]
  assert anchors.boxes_per_cell(_config(defaults.SSD512_ANCHORS)) == [4, 6, 6, 6, 6, 4, 4]


# SSD300, first cell of the first level: centre 4/300, scales 0.07 and 0.15.
# Values worked out by hand: half sizes 0.035 (s), sqrt(0.07*0.15)/2 = 0.0512348 (extra),
# 0.07/sqrt(2)/2 = 0.0247487 and 0.07*sqrt(2)/2 = 0.0494975 (ratio 2).
FIRST_CELL_UNCLIPPED = [
    [-0.0216667, -0.0216667, 0.0483333, 0.0483333],
    [-0.0379014, -0.0379014, 0.0645681, 0.0645681],
    [-0.0114154, -0.0361641, 0.0380821, 0.0628308],   # wide: w = s sqrt(2), h = s / sqrt(2)
    [-0.0361641, -0.0114154, 0.0628308, 0.0380821],   # tall
]
# SSD300 last level, one cell centred at 0.5, scales 0.87 and 1.05: half sizes 0.435,
# sqrt(0.9135)/2 = 0.4778860, 0.87/sqrt(2)/2 = 0.3075914, 0.87*sqrt(2)/2 = 0.6151829.
LAST_CELL_UNCLIPPED = [
    [0.065, 0.065, 0.935, 0.935],
    [0.0221140, 0.0221140, 0.9778860, 0.9778860],
    [0.1924086, -0.1151829, 0.8075914, 1.1151829],
    [-0.1151829, 0.1924086, 1.1151829, 0.8075914],
]


def test_hand_computed_boxes_first_and_last_level_unclipped():
  boxes = anchors.default_boxes(_config(clip="none"), 300, SSD_SIZES[300])
  np.testing.assert_allclose(boxes[:4], FIRST_CELL_UNCLIPPED, atol=1e-6)
  np.testing.assert_allclose(boxes[-4:], LAST_CELL_UNCLIPPED, atol=1e-6)


def test_clipping_limits_to_unit_square():
  clipped = anchors.default_boxes(_config(), 300, SSD_SIZES[300])
  unclipped = anchors.default_boxes(_config(clip="none"), 300, SSD_SIZES[300])
  np.testing.assert_allclose(clipped[:4], np.clip(FIRST_CELL_UNCLIPPED, 0, 1), atol=1e-6)
  np.testing.assert_allclose(clipped[-2], [0.1924086, 0.0, 0.8075914, 1.0], atol=1e-6)
  assert clipped.min() == 0.0 and clipped.max() == 1.0
  assert unclipped.min() < -0.1 and unclipped.max() > 1.1
  inside = np.all((unclipped >= 0) & (unclipped <= 1), axis=1)
  np.testing.assert_array_equal(clipped[inside], unclipped[inside])


def test_ssd512_first_box():
  # centre 4/512 = 0.0078125, scale 0.04: [-0.0121875, ..., 0.0278125] clipped at 0.
  boxes = anchors.default_boxes(_config(defaults.SSD512_ANCHORS), 512, SSD_SIZES[512])
  np.testing.assert_allclose(boxes[0], [0.0, 0.0, 0.0278125, 0.0278125], atol=1e-6)


def test_layout_matches_a_head_reshape():
  """Level 2 of SSD300 (19x19, 6 boxes): a head output [H, W, A*4] reshaped to [H*W*A, 4]."""
  boxes = anchors.default_boxes(_config(clip="none"), 300, SSD_SIZES[300])
  level = boxes[38 * 38 * 4: 38 * 38 * 4 + 19 * 19 * 6]
  head = level.reshape(19, 19, 6 * 4)                      # what a conv head's output looks like
  # Cell (row 2, column 5): centre y = 2.5 * 16 / 300 = 0.1333333, x = 5.5 * 16 / 300 = 0.2933333.
  cell = head[2, 5].reshape(6, 4)
  centres = (cell[:, :2] + cell[:, 2:]) / 2
  np.testing.assert_allclose(centres, [[0.1333333, 0.2933333]] * 6, atol=1e-6)
  sizes = cell[:, 2:] - cell[:, :2]                        # (h, w)
  np.testing.assert_allclose(sizes, [
      [0.15, 0.15],
      [0.2224860, 0.2224860],     # sqrt(0.15 * 0.33)
      [0.1060660, 0.2121320],     # ratio 2: h = 0.15 / sqrt(2), w = 0.15 * sqrt(2)
      [0.2121320, 0.1060660],
      [0.0866025, 0.2598076],     # ratio 3: h = 0.15 / sqrt(3), w = 0.15 * sqrt(3)
      [0.2598076, 0.0866025],
  ], atol=1e-6)
  # Moving one column right moves x by one step (16 px), moving one row down moves y.
  np.testing.assert_allclose(head[2, 6].reshape(6, 4) - cell, [[0, 16 / 300, 0, 16 / 300]] * 6, atol=1e-6)
  np.testing.assert_allclose(head[3, 5].reshape(6, 4) - cell, [[16 / 300, 0, 16 / 300, 0]] * 6, atol=1e-6)


def test_paper_formula_scales():
  config = _config(scales=())
  np.testing.assert_allclose(anchors.level_scales(config), [0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.0])
  boxes = anchors.default_boxes(_config(scales=(), clip="none"), 300, SSD_SIZES[300])
  np.testing.assert_allclose(boxes[0, 2:] - boxes[0, :2], [0.2, 0.2], atol=1e-6)
  # last level extra box: sqrt(0.9 * 1.0) = 0.9486833
  np.testing.assert_allclose(boxes[-3, 2:] - boxes[-3, :2], [0.9486833, 0.9486833], atol=1e-6)


def test_strides_default_to_image_size_over_feature_map():
  config = _config(feature_map_sizes=(4, 2), strides=(), scales=(0.1, 0.5, 0.9), aspect_ratios=((2,), (2,)))
  boxes = anchors.default_boxes(config, 64, config.feature_map_sizes)
  centres = (boxes[:, :2] + boxes[:, 2:]) / 2
  # level 1: 4x4 cells of 0.25 -> centres 0.125, 0.375, ...; cell (0, 1) is boxes 4..7.
  np.testing.assert_allclose(centres[4], [0.125, 0.375], atol=1e-6)
  np.testing.assert_allclose(centres[16 * 4], [0.25, 0.25], atol=1e-6)  # level 2 first cell


@pytest.mark.parametrize("changes, field", [
    (dict(aspect_ratios=((2,),) * 5), "aspect_ratios"),
    (dict(strides=(8, 16, 32)), "strides"),
    (dict(scales=(0.1, 0.2)), "scales"),
])
def test_mismatched_spec_lengths_raise(changes, field):
  config = _config(**changes)
  with pytest.raises(ValueError, match=field):
    anchors.default_boxes(config, 300, config.feature_map_sizes)
  if field != "scales":
    with pytest.raises(ValueError, match=field):
      anchors.num_default_boxes(config, config.feature_map_sizes)


def test_size_clamp_keeps_corners_outside_the_image():
  """torchvision's clip: heights and widths clamped to 1, centres kept, so corners may leave [0, 1]."""
  boxes = anchors.default_boxes(_config(clip="size"), 300, SSD_SIZES[300])
  np.testing.assert_allclose(boxes[:4], FIRST_CELL_UNCLIPPED, atol=1e-6)  # no side above 1
  expected_last = np.array(LAST_CELL_UNCLIPPED)
  expected_last[2] = [0.1924086, 0.0, 0.8075914, 1.0]  # width 0.87 sqrt(2) = 1.23 -> 1, centre 0.5
  expected_last[3] = [0.0, 0.1924086, 1.0, 0.8075914]
  np.testing.assert_allclose(boxes[-4:], expected_last, atol=1e-6)
  assert boxes.min() < 0


def test_centre_size_clamp_also_clamps_centres():
  """NVIDIA's clip: a centre past the image (stride 16 on a 38-cell map of 300 px) moves to 1."""
  config = _config(feature_map_sizes=(38,), strides=(16,), scales=(0.1, 0.2), aspect_ratios=((2,),))
  config.clip = "centre_size"
  clamped = anchors.default_boxes(config, 300, (38,))
  config.clip = "size"
  sized = anchors.default_boxes(config, 300, (38,))
  last_centre = (37.5 * 16) / 300  # 2.0
  np.testing.assert_allclose((sized[-4:, 0] + sized[-4:, 2]) / 2, last_centre, atol=1e-6)
  np.testing.assert_allclose((clamped[-4:, 0] + clamped[-4:, 2]) / 2, 1.0, atol=1e-6)
  np.testing.assert_allclose(clamped[-4:, 2] - clamped[-4:, 0], sized[-4:, 2] - sized[-4:, 0], atol=1e-6)
