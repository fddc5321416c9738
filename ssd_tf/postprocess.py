"""Model outputs -> detections: decode offsets, softmax, per-class NMS.

Uses ``tf.image.combined_non_max_suppression``: per class, boxes with score >
score_threshold (and, with pre_nms_top_k > 0, among the class's pre_nms_top_k best)
go through greedy NMS (a box is suppressed by a kept one when their IoU >
iou_threshold), at most max_detections_per_class survive; the survivors of all
classes are sorted by score and the best max_detections kept. ``clip_boxes``:
"after_nms" clips the kept boxes to [0, 1] (NMS sees the unclipped boxes; ssd_tf),
"before_nms" clips every decoded box first (torchvision), "none" never clips (NVIDIA).
"""

import tensorflow as tf

from ssd_tf import box_ops


def postprocess(loc_pred, logits, anchors, variances=(0.1, 0.2), score_threshold=0.01,
                iou_threshold=0.45, max_detections_per_class=200, max_detections=200,
                pre_nms_top_k=0, clip_boxes="after_nms"):
  """Detections of a batch.

  Args:
    loc_pred: float [B, N, 4] predicted offsets (dy, dx, dh, dw).
    logits: float [B, N, 1 + C], column 0 = background.
    anchors: float [N, 4] default boxes, normalized yxyx.
  Returns:
    dict with K = max_detections, entries sorted by descending score:
      boxes float32 [B, K, 4] normalized yxyx (in [0, 1] unless clip_boxes="none"),
      scores float32 [B, K],
      labels int32 [B, K], 1..C,
      num_detections int32 [B]; entries past num_detections are zero (label 0).
  """
  if clip_boxes not in ("after_nms", "before_nms", "none"):
    raise ValueError(f"postprocess.clip_boxes={clip_boxes!r} must be 'after_nms', 'before_nms' or 'none'")
  boxes = box_ops.decode(loc_pred, anchors, variances)                        # [B, N, 4]
  if clip_boxes == "before_nms":
    boxes = tf.clip_by_value(boxes, 0.0, 1.0)
  scores = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)[..., 1:]      # [B, N, C]
  if pre_nms_top_k > 0:
    boxes, scores = _top_k_per_class(boxes, scores, pre_nms_top_k)          # [B, k, C, 4], [B, k, C]
  else:
    boxes = boxes[:, :, None, :]                                              # [B, N, 1, 4]
  result = tf.image.combined_non_max_suppression(
      boxes, scores,
      max_output_size_per_class=max_detections_per_class,
      max_total_size=max_detections,
      iou_threshold=iou_threshold,
      score_threshold=score_threshold,
      pad_per_class=False,
      clip_boxes=clip_boxes == "after_nms")
  num_detections = tf.cast(result.valid_detections, tf.int32)
  is_detection = tf.range(max_detections)[None, :] < num_detections[:, None]
  labels = tf.where(is_detection, tf.cast(result.nmsed_classes, tf.int32) + 1, 0)
  return dict(boxes=result.nmsed_boxes, scores=result.nmsed_scores, labels=labels,
              num_detections=num_detections)


def _top_k_per_class(boxes, scores, k):
  """boxes [B, N, 4], scores [B, N, C] -> each class's k best: boxes [B, k, C, 4], scores [B, k, C]."""
  k = min(int(k), int(scores.shape[1]))
  top_scores, top_index = tf.math.top_k(tf.transpose(scores, [0, 2, 1]), k=k)  # [B, C, k]
  top_boxes = tf.gather(boxes, top_index, batch_dims=1)                         # [B, C, k, 4]
  return tf.transpose(top_boxes, [0, 2, 1, 3]), tf.transpose(top_scores, [0, 2, 1])
