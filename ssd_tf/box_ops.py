"""Box geometry: IoU, intersection over area, SSD offset encoding, COCO converters.

Boxes are ``[ymin, xmin, ymax, xmax]`` float32 normalized to [0, 1]. The TF ops
accept tensors or arrays of any float dtype and compute in float32. Boxes with
ymax < ymin or xmax < xmin count as empty (area 0).
"""

import math

import numpy as np
import tensorflow as tf

# Smallest box side used inside log and divisions (normalized units).
_EPS = 1e-8
# Decoded log size ratios are capped here (a box at most 1000/16 times its
# default box, as torchvision does) so untrained outputs never overflow exp().
_MAX_LOG_RATIO = math.log(1000.0 / 16.0)


def _as_boxes(boxes):
  return tf.cast(tf.convert_to_tensor(boxes), tf.float32)


def _area(boxes):
  """[..., 4] -> [...] area, 0 for empty boxes."""
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
  return tf.maximum(ymax - ymin, 0.0) * tf.maximum(xmax - xmin, 0.0)


def _intersection(a, b):
  """a [..., N, 4], b [..., M, 4] -> [..., N, M] intersection areas (leading dims broadcast)."""
  a = a[..., :, None, :]
  b = b[..., None, :, :]
  height = tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0])
  width = tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1])
  return tf.maximum(height, 0.0) * tf.maximum(width, 0.0)


def iou(a, b):
  """Pairwise intersection over union: a [..., N, 4], b [..., M, 4] -> [..., N, M].

  Leading dims broadcast (e.g. [B, M, 4] ground truth against [N, 4] anchors).
  A pair whose union is empty (two zero-area boxes) has IoU 0, never NaN.
  """
  a, b = _as_boxes(a), _as_boxes(b)
  inter = _intersection(a, b)
  union = _area(a)[..., :, None] + _area(b)[..., None, :] - inter
  return tf.math.divide_no_nan(inter, union)


def ioa(a, b):
  """Pairwise intersection over the area of the SECOND box: a [..., N, 4], b [..., M, 4] -> [..., N, M].

  ``ioa(crowd_boxes, anchors)[..., i, j]`` is the fraction of default box j
  that lies inside crowd box i. Zero-area b boxes give 0.
  """
  a, b = _as_boxes(a), _as_boxes(b)
  return tf.math.divide_no_nan(_intersection(a, b), _area(b)[..., None, :])


def _centre_size(boxes):
  """[..., 4] yxyx -> (cy, cx, h, w), sizes at least _EPS."""
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
  h = tf.maximum(ymax - ymin, _EPS)
  w = tf.maximum(xmax - xmin, _EPS)
  return (ymin + ymax) / 2, (xmin + xmax) / 2, h, w


def encode(boxes, anchors, variances=(0.1, 0.2)):
  """Boxes [..., N, 4] -> SSD offsets [..., N, 4] ``(dy, dx, dh, dw)`` against anchors [N, 4].

  dy = (cy - cy_a) / (h_a * v0), dh = log(h / h_a) / v1 (same for x, w). Sizes
  below 1e-8 are raised to 1e-8, so degenerate boxes give large finite offsets.
  """
  cy, cx, h, w = _centre_size(_as_boxes(boxes))
  cy_a, cx_a, h_a, w_a = _centre_size(_as_boxes(anchors))
  v_centre, v_size = float(variances[0]), float(variances[1])
  return tf.stack([
      (cy - cy_a) / (h_a * v_centre),
      (cx - cx_a) / (w_a * v_centre),
      tf.math.log(h / h_a) / v_size,
      tf.math.log(w / w_a) / v_size,
  ], axis=-1)


def decode(offsets, anchors, variances=(0.1, 0.2)):
  """SSD offsets [..., N, 4] ``(dy, dx, dh, dw)`` + anchors [N, 4] -> boxes [..., N, 4] yxyx.

  Inverse of :func:`encode`. Log size ratios are capped at log(1000/16) so
  exp() stays finite; boxes are not clipped.
  """
  dy, dx, dh, dw = tf.unstack(_as_boxes(offsets), axis=-1)
  cy_a, cx_a, h_a, w_a = _centre_size(_as_boxes(anchors))
  v_centre, v_size = float(variances[0]), float(variances[1])
  cy = cy_a + dy * v_centre * h_a
  cx = cx_a + dx * v_centre * w_a
  h = h_a * tf.exp(tf.minimum(dh * v_size, _MAX_LOG_RATIO))
  w = w_a * tf.exp(tf.minimum(dw * v_size, _MAX_LOG_RATIO))
  return tf.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)


def _check_edge_args(name, boxes, height, width):
  boxes = np.asarray(boxes, dtype=np.float64)
  if boxes.ndim != 2 or boxes.shape[1] != 4:
    raise ValueError(f"{name}: boxes must have shape [K, 4], got {boxes.shape}")
  if not (height > 0 and width > 0):
    raise ValueError(f"{name}: image height and width must be positive, got {height}x{width}")
  return boxes


def coco_xywh_to_boxes(xywh, height, width):
  """COCO ``[x, y, w, h]`` pixel boxes [K, 4] -> normalized yxyx float32 [K, 4] (no clipping)."""
  xywh = _check_edge_args("coco_xywh_to_boxes", xywh, height, width)
  x, y, w, h = xywh.T
  return np.stack([y / height, x / width, (y + h) / height, (x + w) / width], axis=-1).astype(np.float32)


def boxes_to_coco_xywh(boxes, height, width):
  """Normalized yxyx boxes [K, 4] -> COCO ``[x, y, w, h]`` pixel boxes float32 [K, 4]."""
  boxes = _check_edge_args("boxes_to_coco_xywh", boxes, height, width)
  ymin, xmin, ymax, xmax = boxes.T
  return np.stack([xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height],
                  axis=-1).astype(np.float32)
