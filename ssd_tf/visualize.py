"""Drawing detections (and optionally ground truth) on images with PIL.

Boxes are normalized yxyx; a box covers pixel columns round(xmin*W)..round(xmax*W)-1
and rows round(ymin*H)..round(ymax*H)-1, its outline drawn inside that range.
Detections get their class colour and a "name 0.87" caption; ground truth is a
thin white outline.
"""

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

OUTLINE_WIDTH = 2
GROUND_TRUTH_COLOR = (255, 255, 255)


def class_color(label):
  """A fixed, saturated RGB colour for label 1..C (hues spread by the golden ratio)."""
  hue = (int(label) * 0.618033988749895) % 1.0
  return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, 0.85, 0.95))


def _pixel_boxes(boxes, height, width):
  """Normalized yxyx [K,4] -> int (x0, y0, x1, y1) inclusive pixel corners, clipped to the image."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scale = np.array([height, width, height, width], np.float64)
  y0, x0, y1, x1 = np.round(boxes * scale).astype(np.int64).T
  x0, y0 = np.clip(x0, 0, width - 1), np.clip(y0, 0, height - 1)
  x1, y1 = np.clip(x1 - 1, x0, width - 1), np.clip(y1 - 1, y0, height - 1)
  return np.stack([x0, y0, x1, y1], axis=-1).tolist()


def _caption(draw, font, corner, text, color, image_size):
  """Filled caption above the box's top-left corner, inside the box when there is no room above."""
  width, height = image_size
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  text_w, text_h = right - left + 2, bottom - top + 2
  x0, y0 = corner
  x = max(0, min(x0, width - text_w))
  y = y0 - text_h if y0 - text_h >= 0 else min(y0 + OUTLINE_WIDTH, max(0, height - text_h))
  draw.rectangle([x, y, x + text_w - 1, y + text_h - 1], fill=color)
  luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
  text_color = (0, 0, 0) if luminance > 140 else (255, 255, 255)
  draw.text((x + 1 - left, y + 1 - top), text, fill=text_color, font=font)


def draw_detections(image, boxes, labels, scores=None, class_names=None, ground_truth=None):
  """Returns a copy of ``image`` with boxes drawn.

  Args:
    image: uint8 [H,W,3] RGB.
    boxes: [K,4] normalized yxyx detections (only the valid rows).
    labels: [K] int labels 1..C (colour and caption).
    scores: optional [K]; captions read "name 0.87".
    class_names: optional names, index 0 = label 1 (LabelMap.names()); default captions use the label.
    ground_truth: optional [M,4] normalized yxyx, drawn as thin white outlines; rows without
      area (padding) are skipped.
  Returns:
    uint8 [H,W,3].
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"draw_detections: image must be uint8 [H,W,3], got {image.dtype} {image.shape}")
  labels = np.asarray(labels).reshape(-1)
  boxes = np.asarray(boxes).reshape(-1, 4)
  if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
    raise ValueError(f"draw_detections: {len(boxes)} boxes, {len(labels)} labels, "
                     f"{'no' if scores is None else len(scores)} scores")
  height, width = image.shape[:2]
  canvas = Image.fromarray(image)
  draw = ImageDraw.Draw(canvas)
  if ground_truth is not None:
    ground_truth = np.asarray(ground_truth).reshape(-1, 4)
    has_area = (ground_truth[:, 2] > ground_truth[:, 0]) & (ground_truth[:, 3] > ground_truth[:, 1])
    ground_truth = ground_truth[has_area]
    for corners in _pixel_boxes(ground_truth, height, width):
      draw.rectangle(corners, outline=GROUND_TRUTH_COLOR, width=1)
  font = ImageFont.load_default()
  for i, corners in enumerate(_pixel_boxes(boxes, height, width)):
    color = class_color(labels[i])
    draw.rectangle(corners, outline=color, width=OUTLINE_WIDTH)
    text = class_names[labels[i] - 1] if class_names is not None else str(int(labels[i]))
    if scores is not None:
      text += f" {float(scores[i]):.2f}"
    _caption(draw, font, corners[:2], text, color, (width, height))
  return np.asarray(canvas).copy()


def draw_detection_batch(images, detections, class_names=None, ground_truth=None, max_images=None):
  """Draws a batch for TensorBoard (tf.summary.image takes the uint8 result as is).

  Args:
    images: [N,H,W,3] uint8, or float in [0, 255] as the pipeline yields.
    detections: dict(boxes [N,K,4], scores [N,K], labels [N,K], num_detections [N]) from postprocess.
    class_names: as in draw_detections.
    ground_truth: optional [N,M,4] normalized yxyx (padding rows without area are skipped).
    max_images: draw only the first this many images.
  Returns:
    uint8 [n,H,W,3], n = min(N, max_images).
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
  count = len(images) if max_images is None else min(len(images), max_images)
  arrays = {key: np.asarray(detections[key]) for key in ("boxes", "scores", "labels", "num_detections")}
  drawn = []
  for i in range(count):
    n = int(arrays["num_detections"][i])
    drawn.append(draw_detections(images[i], arrays["boxes"][i, :n], arrays["labels"][i, :n],
                                 arrays["scores"][i, :n], class_names,
                                 None if ground_truth is None else np.asarray(ground_truth)[i]))
  return np.stack(drawn) if drawn else np.zeros((0,) + images.shape[1:], np.uint8)


def save_png(path, image):
  """Writes a uint8 [H,W,3] image as PNG."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"save_png({path}): image must be uint8, got {image.dtype}")
  Image.fromarray(image).save(path, format="PNG")
