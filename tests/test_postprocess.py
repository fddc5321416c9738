"""Post-processing against a brute-force per-class greedy NMS, and hand cases."""

import numpy as np
import pytest

from ssd_tf import box_ops, postprocess

ANCHORS = np.array([[.1, .1, .5, .5], [.12, .1, .52, .5], [.5, .5, .9, .9]], np.float32)


def _np_iou(a, b):
  height = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
  width = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
  inter = height * width
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def _np_detections(boxes, scores, score_threshold, iou_threshold, max_per_class, max_total, pre_nms_top_k=0,
                   clip_boxes="after_nms"):
  """One image: boxes [N, 4] decoded, scores [N, C] foreground -> list of (score, class 1..C, box)."""
  if clip_boxes == "before_nms":
    boxes = np.clip(boxes, 0, 1)
  detections = []
  for c in range(scores.shape[1]):
    candidates = [i for i in np.argsort(-scores[:, c], kind="stable")[:pre_nms_top_k or None]
                  if scores[i, c] > score_threshold]
    kept = []
    for i in candidates:
      if len(kept) == max_per_class:
        break
      if all(_np_iou(boxes[i], boxes[k]) <= iou_threshold for k in kept):
        kept.append(i)
    detections += [(scores[i, c], c + 1, boxes[i] if clip_boxes == "none" else np.clip(boxes[i], 0, 1))
                   for i in kept]
  return sorted(detections, key=lambda d: -d[0])[:max_total]


def _softmax(logits):
  exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return exp / exp.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("settings", [
    dict(),                                                   # package defaults
    dict(score_threshold=0.1, iou_threshold=0.3, max_detections_per_class=7, max_detections=25),
    dict(pre_nms_top_k=20, clip_boxes="before_nms"),          # torchvision's order (top-400 at full size)
    dict(score_threshold=0.05, iou_threshold=0.5, pre_nms_top_k=30, clip_boxes="none"),  # NVIDIA's
])
def test_matches_brute_force_nms_on_random_inputs(settings):
  rng = np.random.default_rng(0)
  num_anchors, num_classes = 150, 4
  centre = rng.uniform(0, 1, size=(num_anchors, 2))
  size = rng.uniform(.05, .4, size=(num_anchors, 2))
  anchors = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
  loc_pred = rng.normal(0, 1, size=(2, num_anchors, 4)).astype(np.float32)
  logits = rng.normal(0, 2, size=(2, num_anchors, 1 + num_classes)).astype(np.float32)

  result = postprocess.postprocess(loc_pred, logits, anchors, **settings)
  defaults = dict(score_threshold=0.01, iou_threshold=0.45, max_detections_per_class=200, max_detections=200)
  settings = dict(defaults, **settings)
  boxes = box_ops.decode(loc_pred, anchors).numpy()
  assert boxes.min() < 0 and boxes.max() > 1  # the clip modes differ on these inputs
  scores = _softmax(logits.astype(np.float64))[..., 1:]
  for i in range(2):
    expected = _np_detections(boxes[i], scores[i], settings["score_threshold"], settings["iou_threshold"],
                              settings["max_detections_per_class"], settings["max_detections"],
                              settings.get("pre_nms_top_k", 0), settings.get("clip_boxes", "after_nms"))
    count = int(result["num_detections"][i])
    assert count == len(expected) > 10
    np.testing.assert_allclose(result["scores"][i, :count], [d[0] for d in expected], rtol=1e-5)
    np.testing.assert_array_equal(result["labels"][i, :count], [d[1] for d in expected])
    np.testing.assert_allclose(result["boxes"][i, :count], [d[2] for d in expected], atol=1e-6)
    np.testing.assert_array_equal(result["labels"][i, count:], 0)
    np.testing.assert_array_equal(result["scores"][i, count:], 0.0)
  assert result["boxes"].shape == (2, settings["max_detections"], 4)
  assert result["labels"].dtype == np.int32 and result["num_detections"].dtype == np.int32
  assert result["boxes"].dtype == np.float32 and result["scores"].dtype == np.float32


def _hand_case(logits):
  """Zero offsets (boxes = anchors) and hand logits [N, 1 + C] for one image."""
  result = postprocess.postprocess(np.zeros((1, len(logits), 4), np.float32), np.array([logits], np.float32),
                                   ANCHORS[:len(logits)])
  count = int(result["num_detections"][0])
  return result["boxes"][0, :count].numpy(), result["labels"][0, :count].numpy(), result["scores"][0, :count]


def test_overlapping_boxes_of_one_class_keep_the_best():
  # Anchors 0 and 1 overlap with IoU 0.9; both say class 1, anchor 0 more surely.
  boxes, classes, scores = _hand_case([[0, 9, -9], [0, 8, -9]])
  np.testing.assert_array_equal(classes, [1])
  np.testing.assert_allclose(boxes, ANCHORS[:1], atol=1e-6)
  assert float(scores[0]) == pytest.approx(np.exp(9) / (1 + np.exp(9) + np.exp(-9)), rel=1e-6)


def test_overlapping_boxes_of_different_classes_are_both_kept():
  boxes, classes, _ = _hand_case([[0, 9, -9], [0, -9, 8]])
  np.testing.assert_array_equal(classes, [1, 2])
  np.testing.assert_allclose(boxes, ANCHORS[:2], atol=1e-6)


def test_low_scores_are_dropped_and_boxes_clipped():
  # Anchor 0: background wins, both classes score 1.2e-4 < 0.01: no detection.
  # Anchor 1: flat logits, each class scores 1/3 > 0.01: one detection per class.
  # Anchor 2: class 1, offsets growing it 4x to [-.1, -.1, 1.5, 1.5], clipped to the unit square.
  loc_pred = np.zeros((1, 3, 4), np.float32)
  loc_pred[0, 2, 2:] = np.log(4) / 0.2
  logits = np.array([[[9, 0, 0], [-9, -9, -9], [0, 9, 0]]], np.float32)
  result = postprocess.postprocess(loc_pred, logits, ANCHORS)
  assert int(result["num_detections"][0]) == 3
  np.testing.assert_allclose(result["boxes"][0, 0], [0, 0, 1, 1], atol=1e-6)
  assert int(result["labels"][0, 0]) == 1
  np.testing.assert_allclose(result["scores"][0, 1:3], [1 / 3, 1 / 3], rtol=1e-5)
  np.testing.assert_allclose(result["boxes"][0, 1:3], ANCHORS[[1, 1]], atol=1e-6)
  assert sorted(result["labels"][0, 1:3].numpy()) == [1, 2]
