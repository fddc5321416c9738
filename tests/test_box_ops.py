"""Box ops: IoU / IoA against NumPy, encode/decode round trip and hand values, COCO converters."""

import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import box_ops


def _np_overlaps(a, b):
  """Plain-loop reference: (intersection [N, M], area_a [N], area_b [M])."""
  def area(box):
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
  inter = np.zeros((len(a), len(b)))
  for i, p in enumerate(a):
    for j, q in enumerate(b):
      h = min(p[2], q[2]) - max(p[0], q[0])
      w = min(p[3], q[3]) - max(p[1], q[1])
      inter[i, j] = max(h, 0.0) * max(w, 0.0)
  return inter, np.array([area(p) for p in a]), np.array([area(q) for q in b])


def _np_iou(a, b):
  inter, area_a, area_b = _np_overlaps(a, b)
  union = area_a[:, None] + area_b[None, :] - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _np_ioa(a, b):
  inter, _, area_b = _np_overlaps(a, b)
  return np.where(area_b[None, :] > 0, inter / np.where(area_b > 0, area_b, 1.0)[None, :], 0.0)


def _random_boxes(rng, n):
  """Random boxes with some zero-area (points, lines) and some duplicates."""
  corners = rng.uniform(0, 1, size=(n, 2, 2))
  boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
  boxes[::7, 2] = boxes[::7, 0]                    # zero height
  boxes[::11, 2:] = boxes[::11, :2]                # points
  boxes[1::5] = boxes[0]                           # identical to box 0
  return boxes.astype(np.float32)


def test_iou_hand_values():
  a = [[0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.2, 0.6]]
  b = [[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.6, 0.6, 1.0, 1.0], [0.2, 0.2, 0.2, 0.6]]
  # identical 1; quarter-offset: inter 0.0625, union 0.4375 -> 1/7; disjoint 0; zero-area 0.
  np.testing.assert_allclose(box_ops.iou(a, b), [[1.0, 1 / 7, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], atol=1e-6)
  # ioa: fraction of each b box inside a[0]: 1, 0.0625 / 0.25, 0, 0 (zero area).
  np.testing.assert_allclose(box_ops.ioa(a, b)[0], [1.0, 0.25, 0.0, 0.0], atol=1e-6)


def test_iou_and_ioa_match_numpy_on_random_boxes():
  rng = np.random.default_rng(0)
  a, b = _random_boxes(rng, 40), _random_boxes(rng, 30)
  b[3] = a[5]                                      # an identical pair across the two sets
  iou = box_ops.iou(a, b).numpy()
  assert np.all(np.isfinite(iou))
  np.testing.assert_allclose(iou, _np_iou(a, b), atol=1e-6)
  assert iou[5, 3] == pytest.approx(1.0)
  np.testing.assert_allclose(box_ops.ioa(a, b).numpy(), _np_ioa(a, b), atol=1e-6)


def test_iou_broadcasts_batch_dims():
  rng = np.random.default_rng(1)
  gt = np.stack([_random_boxes(rng, 6), _random_boxes(rng, 6)])   # [2, 6, 4]
  anchors = _random_boxes(rng, 9)                                  # [9, 4]
  iou = box_ops.iou(gt, anchors).numpy()
  assert iou.shape == (2, 6, 9)
  for i in range(2):
    np.testing.assert_allclose(iou[i], _np_iou(gt[i], anchors), atol=1e-6)


def test_iou_gradient_is_finite_for_degenerate_boxes():
  boxes = tf.Variable([[0.3, 0.3, 0.3, 0.3], [0.1, 0.1, 0.5, 0.5]])
  with tf.GradientTape() as tape:
    value = tf.reduce_sum(box_ops.iou(boxes, boxes))
  assert np.all(np.isfinite(tape.gradient(value, boxes).numpy()))


def test_encode_hand_values():
  anchors = [[0.4, 0.4, 0.6, 0.6]]                 # centre 0.5, size 0.2
  boxes = [[0.42, 0.38, 0.82, 0.58]]               # centre (0.62, 0.48), size (0.4, 0.2)
  # dy = 0.12 / (0.2 * 0.1) = 6, dx = -0.02 / 0.02 = -1, dh = log 2 / 0.2, dw = 0.
  np.testing.assert_allclose(box_ops.encode(boxes, anchors), [[6.0, -1.0, np.log(2) / 0.2, 0.0]], atol=1e-5)


def test_encode_decode_round_trip():
  rng = np.random.default_rng(2)
  anchors = _random_boxes(rng, 50)
  anchors[:, 2:] = anchors[:, :2] + rng.uniform(0.01, 0.5, size=(50, 2))
  boxes = np.stack([_random_boxes(rng, 50), _random_boxes(rng, 50)])
  boxes[..., 2:] = boxes[..., :2] + rng.uniform(0.005, 0.9, size=(2, 50, 2))
  for variances in [(0.1, 0.2), (1.0, 1.0)]:
    offsets = box_ops.encode(boxes, anchors, variances)
    np.testing.assert_allclose(box_ops.decode(offsets, anchors, variances), boxes, atol=1e-5)


def test_encode_degenerate_boxes_is_finite_and_decode_caps_sizes():
  anchors = [[0.4, 0.4, 0.6, 0.6], [0.5, 0.5, 0.5, 0.5]]
  boxes = [[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2]]
  assert np.all(np.isfinite(box_ops.encode(boxes, anchors).numpy()))
  decoded = box_ops.decode([[0.0, 0.0, 1e4, 1e4]], [[0.4, 0.4, 0.6, 0.6]]).numpy()
  np.testing.assert_allclose(decoded[0, 2:] - decoded[0, :2], [0.2 * 1000 / 16] * 2, rtol=1e-5)


def test_coco_converters_hand_values_and_round_trip():
  xywh = np.array([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 640.0, 480.0]])
  boxes = box_ops.coco_xywh_to_boxes(xywh, height=480, width=640)
  assert boxes.dtype == np.float32
  np.testing.assert_allclose(boxes, [[20 / 480, 10 / 640, 60 / 480, 40 / 640], [0, 0, 1, 1]], atol=1e-7)
  np.testing.assert_allclose(box_ops.boxes_to_coco_xywh(boxes, 480, 640), xywh, atol=1e-4)
  rng = np.random.default_rng(3)
  random_xywh = np.concatenate([rng.uniform(0, 300, (20, 2)), rng.uniform(0, 200, (20, 2))], axis=1)
  round_trip = box_ops.boxes_to_coco_xywh(box_ops.coco_xywh_to_boxes(random_xywh, 333, 517), 333, 517)
  np.testing.assert_allclose(round_trip, random_xywh, atol=1e-3)
  assert box_ops.coco_xywh_to_boxes(np.zeros((0, 4)), 10, 10).shape == (0, 4)


@pytest.mark.parametrize("boxes, height, width, message", [
    (np.zeros((3, 5)), 10, 10, r"\[K, 4\]"), (np.zeros((3, 4)), 0, 10, "height and width")])
def test_coco_converters_reject_bad_input(boxes, height, width, message):
  with pytest.raises(ValueError, match=message):
    box_ops.coco_xywh_to_boxes(boxes, height, width)
  with pytest.raises(ValueError, match=message):
    box_ops.boxes_to_coco_xywh(boxes, height, width)
