"""Model outputs -> detections: decode offsets, softmax, per-class NMS.

Uses ``tf.image.combined_non_max_suppression``: per class, boxes with score >
score_threshold go through greedy NMS (a box is suppressed by a kept one when
their IoU > iou_threshold, computed on the unclipped decoded boxes), at most
max_detections_per_class survive; the survivors of all classes are sorted by
score and the best max_detections kept; the kept boxes are then clipped to [0, 1].
"""

import tensorflow as tf

from ssd_tf import box_ops


def postprocess(loc_pred, logits, anchors, variances=(0.1, 0.2), score_threshold=0.01,
                iou_threshold=0.45, max_detections_per_class=200, max_detections=200):
  """Detections of a batch.

  Args:
    loc_pred: float [B, N, 4] predicted offsets (dy, dx, dh, dw).
    logits: float [B, N, 1 + C], column 0 = background.
    anchors: float [N, 4] default boxes, normalized yxyx.
  Returns:
    dict with K = max_detections, entries sorted by descending score:
      boxes float32 [B, K, 4] normalized yxyx in [0, 1],
      scores float32 [B, K],
      labels int32 [B, K], 1..C,
      num_detections int32 [B]; entries past num_detections are zero (label 0).
  """
  boxes = box_ops.decode(loc_pred, anchors, variances)                        # [B, N, 4]
  scores = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)[..., 1:]      # [B, N, C]
  result = tf.image.combined_non_max_suppression(
      boxes[:, :, None, :], scores,
      max_output_size_per_class=max_detections_per_class,
      max_total_size=max_detections,
      iou_threshold=iou_threshold,
      score_threshold=score_threshold,
      pad_per_class=False,
      clip_boxes=True)
  num_detections = tf.cast(result.valid_detections, tf.int32)
  is_detection = tf.range(max_detections)[None, :] < num_detections[:, None]
  labels = tf.where(is_detection, tf.cast(result.nmsed_classes, tf.int32) + 1, 0)
  return dict(boxes=result.nmsed_boxes, scores=result.nmsed_scores, labels=labels,
              num_detections=num_detections)
