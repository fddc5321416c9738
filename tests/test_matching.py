"""Matching: hand-built cases and a plain NumPy reference on random batches."""

import numpy as np
import pytest
import tensorflow as tf

from ssd_tf.anchors import default_boxes
from ssd_tf import box_ops, defaults, matching

QUADRANTS = np.array([[0, 0, .5, .5], [0, .5, .5, 1], [.5, 0, 1, .5], [.5, .5, 1, 1]], np.float32)


def _match(boxes, labels, crowd=None, anchors=QUADRANTS, **kwargs):
  """match() on one image given as Python lists -> (loc [N, 4], cls [N]) NumPy."""
  boxes = np.array(boxes, np.float32).reshape(1, -1, 4)
  labels = np.array(labels, np.int32).reshape(1, -1)
  crowd = np.zeros_like(labels, bool) if crowd is None else np.array(crowd, bool).reshape(1, -1)
  loc, cls = matching.match(boxes, labels, crowd, anchors, **kwargs)
  return loc.numpy()[0], cls.numpy()[0]


def test_two_ground_truths_competing_for_one_best_box_both_get_a_positive():
  anchors = np.concatenate([QUADRANTS, [[.05, .05, .35, .35]]]).astype(np.float32)
  # Both prefer anchor 4 (IoU 0.444 and 0.356, both below 0.5); the first keeps it,
  # the second takes its next best, anchor 0 (IoU 0.25).
  gt = [[.1, .1, .3, .3], [.15, .15, .4, .4]]
  loc, cls = _match(gt, [7, 9], anchors=anchors)
  np.testing.assert_array_equal(cls, [9, 0, 0, 0, 7])
  np.testing.assert_allclose(loc[4], box_ops.encode([gt[0]], anchors[4:5])[0], atol=1e-6)
  np.testing.assert_allclose(loc[0], box_ops.encode([gt[1]], anchors[0:1])[0], atol=1e-6)
  np.testing.assert_array_equal(loc[1:4], 0.0)


def test_identical_ground_truths_get_distinct_boxes():
  # Duplicated annotations tie on every box: the lower row wins, the others take their next best.
  anchors = np.array([[0, 0, .5, .5], [0, 0, .5, .4], [0, 0, .4, .5], [.5, .5, 1, 1]], np.float32)
  _, cls = _match([[0, 0, .5, .5]] * 3, [1, 2, 3], anchors=anchors)
  np.testing.assert_array_equal(cls, [1, 2, 3, 0])
  # With nothing else overlapping, only one of them can be placed.
  _, cls = _match([[0, 0, .5, .5]] * 3, [1, 2, 3])
  np.testing.assert_array_equal(cls, [1, 0, 0, 0])


def test_ground_truth_smaller_than_every_default_box_gets_exactly_one_positive():
  anchors = default_boxes(defaults.anchor_config(defaults.SSD300_ANCHORS), 300,
                          defaults.SSD300_ANCHORS["feature_map_sizes"])
  gt = [[.503, .611, .508, .614]]
  loc, cls = _match(gt, [5], anchors=anchors)
  assert np.count_nonzero(cls) == 1
  best = np.argmax(box_ops.iou(gt, anchors).numpy()[0])
  assert cls[best] == 5
  np.testing.assert_allclose(box_ops.decode(loc[best:best + 1], anchors[best:best + 1]), gt, atol=1e-5)


def test_image_without_ground_truth_has_no_positives():
  loc, cls = _match([[0, 0, .5, .5], [.2, .2, .9, .9]], [-1, -1])
  np.testing.assert_array_equal(cls, 0)
  np.testing.assert_array_equal(loc, 0.0)


def test_padding_and_degenerate_rows_never_match():
  # Row 0 would be a perfect match but is padding; row 1 has zero area; row 2 is real.
  _, cls = _match([[0, 0, .5, .5], [.5, .5, .5, 1], [.5, .5, 1, 1]], [-1, 4, 6])
  np.testing.assert_array_equal(cls, [0, 0, 0, 6])


def test_threshold_behaviour():
  anchors = np.array([[0, 0, .5, .5],       # IoU 1 (forced best)
                      [0, 0, .5, .375],     # IoU 0.75
                      [0, 0, .5, .25],      # IoU 0.5 exactly
                      [0, 0, .5, .2],       # IoU 0.4
                      [.5, .5, 1, 1]], np.float32)
  _, cls = _match([[0, 0, .5, .5]], [3], anchors=anchors)
  np.testing.assert_array_equal(cls, [3, 3, 3, 0, 0])
  _, cls = _match([[0, 0, .5, .5]], [3], anchors=anchors, iou_threshold=0.6)
  np.testing.assert_array_equal(cls, [3, 3, 0, 0, 0])
  _, cls = _match([[0, 0, .5, .5]], [3], anchors=anchors, iou_threshold=1.5)   # forced only
  np.testing.assert_array_equal(cls, [3, 0, 0, 0, 0])


def test_threshold_match_takes_the_best_ground_truth():
  anchors = np.array([[0, 0, .5, .5], [0, .5, .5, 1], [0, .2, .5, .7], [0, .18, .5, .68], [0, .12, .5, .62]],
                     np.float32)
  gt = [[0, .05, .5, .55], [0, .25, .5, .75], [0, .5, .5, 1]]
  # Forced: gt 0 -> anchor 0 (IoU 0.818), gt 1 -> anchor 2 (0.818), gt 2 -> anchor 1 (1.0).
  # Anchor 3: IoU 0.587 with gt 0, 0.754 with gt 1 -> gt 1.
  # Anchor 4: IoU 0.754 with gt 0, 0.587 with gt 1 -> gt 0.
  _, cls = _match(gt, [1, 2, 3], anchors=anchors)
  np.testing.assert_array_equal(cls, [1, 3, 2, 2, 1])
  _, cls = _match(gt, [1, 2, 3], anchors=anchors, iou_threshold=0.8)
  np.testing.assert_array_equal(cls, [1, 3, 2, 0, 0])


def test_forced_match_overrides_threshold_match():
  y_box, x_box = [0, 0, .5, .5], [0, 0, .5, .6]
  anchors = np.array([y_box, x_box, [.5, .5, 1, 1]], np.float32)
  # gt A = y_box: best is anchor 0 (IoU 1), IoU 0.833 with anchor 1 (a threshold match).
  # gt B = [0, .2, .5, .8]: IoU 0.5 with anchor 1, 0.375 with anchor 0 -> forced onto anchor 1.
  _, cls = _match([y_box, [0, .2, .5, .8]], [1, 2], anchors=anchors)
  np.testing.assert_array_equal(cls, [1, 2, 0])


def test_crowd_boxes_are_ignored_never_positive():
  anchors = np.array([[0, 0, .25, .25],            # inside the crowd: ignored
                      [0, 0, .5, .5],              # crowd IoU 1 but crowd is never positive: ignored
                      [.375, .375, .625, .625],    # 1/4 inside the crowd box: background
                      [.25, .25, .75, .5],         # exactly half inside: ignored
                      [.1, .1, .3, .3],            # inside the crowd, but the positive of gt 1
                      [.6, .6, 1, 1]], np.float32)
  crowd_box = [0, 0, .5, .5]
  _, cls = _match([crowd_box], [2], crowd=[True], anchors=anchors)
  np.testing.assert_array_equal(cls, [-1, -1, 0, -1, -1, 0])
  _, cls = _match([crowd_box, [.1, .1, .3, .3]], [2, 5], crowd=[True, False], anchors=anchors)
  np.testing.assert_array_equal(cls, [-1, -1, 0, -1, 5, 0])
  # Padding rows flagged crowd do nothing.
  _, cls = _match([crowd_box], [-1], crowd=[True], anchors=anchors)
  np.testing.assert_array_equal(cls, 0)


def test_rejects_bad_arguments():
  with pytest.raises(ValueError, match="no rows"):
    matching.match(np.zeros((2, 0, 4)), np.zeros((2, 0)), np.zeros((2, 0), bool), QUADRANTS)
  with pytest.raises(ValueError, match="iou_threshold"):
    _match([[0, 0, .5, .5]], [1], iou_threshold=0.0)


# ---- NumPy reference ------------------------------------------------------------------------

def _np_iou(a, b):
  """(IoU [N, M], intersection [N, M], area of b [M])."""
  top_left = np.maximum(a[:, None, :2], b[None, :, :2])
  bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
  area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)
  union = area(a)[:, None] + area(b)[None, :] - inter
  return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0), inter, area(b)


def _np_encode(box, anchor):
  cy, cx, h, w = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
  acy, acx, ah, aw = ((anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2,
                      anchor[2] - anchor[0], anchor[3] - anchor[1])
  return [(cy - acy) / ah / 0.1, (cx - acx) / aw / 0.1, np.log(h / ah) / 0.2, np.log(w / aw) / 0.2]


def _np_match_image(boxes, labels, crowd, anchors, iou_threshold, crowd_ioa_threshold):
  """One image, written with loops; returns (loc [N, 4], cls [N], number of forced rounds)."""
  num_anchors = len(anchors)
  iou, inter, anchor_area = _np_iou(boxes.astype(np.float64), anchors.astype(np.float64))
  positive_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
  valid = [m for m in range(len(boxes)) if labels[m] >= 1 and not crowd[m] and positive_area[m]]
  crowd_rows = [m for m in range(len(boxes)) if labels[m] >= 1 and crowd[m] and positive_area[m]]

  matched = {}                                        # anchor -> row
  for n in range(num_anchors):
    if valid:
      best = max(valid, key=lambda m: (iou[m, n], -m))
      if iou[best, n] >= iou_threshold:
        matched[n] = best

  taken, pending, rounds = set(), list(valid), 0
  while pending:
    proposals = {}
    for m in pending:
      free = [n for n in range(num_anchors) if n not in taken]
      if not free:
        continue
      n = max(free, key=lambda n: (iou[m, n], -n))
      if iou[m, n] > 0:
        proposals.setdefault(n, []).append(m)
    if not proposals:
      break
    rounds += 1
    pending = []
    for n, rows in proposals.items():
      winner = max(rows, key=lambda m: (iou[m, n], -m))
      matched[n] = winner
      taken.add(n)
      pending += [m for m in rows if m != winner]

  cls = np.zeros(num_anchors, np.int32)
  loc = np.zeros((num_anchors, 4), np.float32)
  for n in range(num_anchors):
    if n in matched:
      cls[n] = labels[matched[n]]
      loc[n] = _np_encode(boxes[matched[n]].astype(np.float64), anchors[n].astype(np.float64))
    elif any(inter[m, n] / anchor_area[n] >= crowd_ioa_threshold for m in crowd_rows):
      cls[n] = -1
  return loc, cls, rounds


def _random_batch(rng, batch, rows):
  corner = rng.uniform(0, .9, size=(batch, rows, 2))
  size = rng.uniform(.02, .5, size=(batch, rows, 2))
  boxes = np.concatenate([corner, np.minimum(corner + size, 1)], axis=-1)
  boxes[:, 1::4] = boxes[:, 0:1]                           # duplicates: conflicts for sure
  boxes[:, 3, 2] = boxes[:, 3, 0]                          # a zero-area row
  labels = rng.integers(1, 6, size=(batch, rows))
  labels[:, rows - rows // 3:] = -1                        # padding at the end
  labels[-1] = -1                                          # an image without ground truth
  crowd = rng.uniform(size=(batch, rows)) < .15
  crowd[:, 2] = True                                       # a large crowd box in every image
  boxes[:, 2, :2] = rng.uniform(0, .4, size=(batch, 2))
  boxes[:, 2, 2:] = boxes[:, 2, :2] + .6
  return boxes.astype(np.float32), labels.astype(np.int32), crowd


@pytest.mark.parametrize("iou_threshold, crowd_ioa_threshold", [(0.5, 0.5), (0.3, 0.7)])
def test_matches_numpy_reference_on_random_batches(iou_threshold, crowd_ioa_threshold):
  rng = np.random.default_rng(0)
  config = defaults.anchor_config(dict(feature_map_sizes=(5, 3, 1), scales=(.15, .4, .7, .95),
                                       aspect_ratios=((2,), (2, 3), (2,))))
  anchors = default_boxes(config, 300, config.feature_map_sizes)
  boxes, labels, crowd = _random_batch(rng, batch=6, rows=14)
  match = tf.function(matching.match, jit_compile=True)
  loc, cls = match(boxes, labels, crowd, anchors, iou_threshold, crowd_ioa_threshold)
  total_rounds = 0
  for i in range(len(boxes)):
    ref_loc, ref_cls, rounds = _np_match_image(boxes[i], labels[i], crowd[i], anchors,
                                               iou_threshold, crowd_ioa_threshold)
    total_rounds += rounds
    np.testing.assert_array_equal(cls[i], ref_cls, err_msg=f"image {i}")
    np.testing.assert_allclose(loc[i], ref_loc, atol=1e-4, err_msg=f"image {i}")
  assert total_rounds > len(boxes) - 1                     # conflicts happened and were resolved
  assert np.all(cls[-1] <= 0) and np.any(cls[:-1] > 0) and np.any(cls == -1)


def test_forced_boxes_are_never_shared():
  """Forced matches only: every valid ground truth, duplicates included, gets a box of its own."""
  rng = np.random.default_rng(1)
  anchors = default_boxes(defaults.anchor_config(dict(
      scales=(.2, .5, .8), aspect_ratios=((2,), (2,)))), 300, (4, 2))
  boxes, labels, crowd = _random_batch(rng, batch=4, rows=20)
  _, cls = matching.match(boxes, labels, crowd, anchors, iou_threshold=1.5)
  for i in range(3):
    valid = (labels[i] >= 1) & ~crowd[i] & (boxes[i, :, 2] > boxes[i, :, 0])
    assert np.count_nonzero(cls[i].numpy() > 0) == np.count_nonzero(valid)
    np.testing.assert_array_equal(np.sort(cls[i].numpy()[cls[i].numpy() > 0]), np.sort(labels[i][valid]))
