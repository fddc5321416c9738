"""The Python API: ``ssd_tf.load(path).detect(images)``.

  import ssd_tf
  detector = ssd_tf.load("runs/quickstart")             # a run directory, or an exported SavedModel
  for d in detector.detect("photo.jpg", min_score=0.3):  # a path, encoded bytes, a uint8 HxWx3 array
    print(d.name, d.category_id, d.score, d.box)         # box: (xmin, ymin, xmax, ymax) in pixels

A run directory and its exported SavedModel detect through the same graph (the
SavedModel's ``serving_default``: decode, resize, network, NMS), so they give the
same detections for the same image.
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from ssd_tf import export
from ssd_tf import images
from ssd_tf import run_dir
from ssd_tf.label_map import LabelMap
from ssd_tf.ssd import SSD


@dataclasses.dataclass(frozen=True)
class Detection:
  """One detected object.

  box: (xmin, ymin, xmax, ymax) in pixels of the image as given (not the network input).
  label: the contiguous training label 1..C; category_id: the dataset's id (label_map.json).
  """
  name: str
  category_id: int
  label: int
  score: float
  box: tuple


def _message(error):
  """An InvalidArgumentError's message without TensorFlow's node names and op tags."""
  text = re.sub(r"\{\{.*?\}\}|\[Op:[\w<>]+\]|\n\t.*", "", error.message)
  text = re.sub(r"^.*assertion failed: \[(.*)\]\s*$", r"\1", text.strip(), flags=re.S)  # in a graph
  return re.sub(r"^Expected .* Summarized data: b'(.*)'$", r"\1", text, flags=re.S).strip()  # eager


def decode_rgb(encoded):
  """Encoded image bytes -> uint8 [H, W, 3] RGB numpy array (images.decode); ValueError if not an image."""
  try:
    return images.decode(encoded).numpy()
  except tf.errors.InvalidArgumentError as error:
    raise ValueError(_message(error)) from None


def _encoded(image):
  """A path, encoded bytes or a uint8 [H, W, 3] array -> (encoded bytes, (height, width)).

  The size of bytes is read from their header (images.header_size; nothing is decoded
  here); an unreadable file is an OSError, bytes that are not an image a ValueError.
  """
  if isinstance(image, (str, os.PathLike)):
    with open(image, "rb") as f:
      image = f.read()
  if isinstance(image, bytes):
    try:
      height, width = images.header_size(image).numpy()
    except tf.errors.InvalidArgumentError as error:
      raise ValueError(_message(error)) from None
    if height < 0:
      raise ValueError("not a JPEG, PNG, GIF or BMP image")
    return image, (int(height), int(width))
  array = np.asarray(image)
  if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
    raise ValueError(f"an image array must be uint8 [H, W, 3] RGB, got {array.dtype} {list(array.shape)}")
  return tf.io.encode_png(array).numpy(), array.shape[:2]  # lossless


class Detector:
  """Detects objects in images with a trained SSD (see ssd_tf.load)."""

  def __init__(self, serve_encoded, label_map, source):
    """serve_encoded: tf.string [B] encoded images -> the SavedModel's output dict (ssd_tf.export)."""
    self._serve = serve_encoded
    self.label_map = label_map
    self.source = source

  def __repr__(self):
    return f"Detector({self.source!r}, {self.label_map.num_classes} classes)"

  def detect(self, images, min_score=0.3):
    """Detections of one image, or of a list of images (detected as one batch).

    images: a file path, encoded JPEG/PNG/GIF/BMP bytes or a uint8 [H, W, 3] RGB array; or a list.
    Returns [Detection] by descending score (for a list: one such list per image).
    """
    single = not isinstance(images, (list, tuple))
    if single:
      batch = [_encoded(images)]
    else:
      batch = []
      for i, image in enumerate(images):
        try:
          batch.append(_encoded(image))
        except (OSError, ValueError) as error:
          raise type(error)(f"image {i} of the list: {error}") from None
    if not batch:
      return []
    try:
      outputs = {k: v.numpy() for k, v in self._serve(tf.constant([e for e, _ in batch])).items()}
    except tf.errors.InvalidArgumentError as error:  # e.g. "image 1 declares 16000 x 16000 pixels, ..."
      raise ValueError(_message(error) + ("" if single else " (its index in the list)")) from None
    results = [self._detections(outputs, i, size, min_score) for i, (_, size) in enumerate(batch)]
    return results[0] if single else results

  def _detections(self, outputs, i, size, min_score):
    height, width = size
    count = int(outputs["num_detections"][i])
    scale = np.array([width, height, width, height], np.float64)
    detections = []
    for (y0, x0, y1, x1), category_id, score in zip(outputs["detection_boxes"][i, :count],
                                                    outputs["detection_classes"][i, :count],
                                                    outputs["detection_scores"][i, :count]):
      if score < min_score:
        break  # sorted by score
      label = int(self.label_map.labels([int(category_id)])[0])
      box = tuple(float(v) for v in np.array([x0, y0, x1, y1], np.float64) * scale)
      detections.append(Detection(self.label_map.name(label), int(category_id), label, float(score), box))
    return detections


def load(path, checkpoint=None, config=None):
  """A Detector from a run directory or an exported SavedModel directory.

  A run directory: its config.json (or ``config``), label_map.json and the checkpoint it means
  (best, else newest; or ``checkpoint``): SSD.from_run. A SavedModel: its serving_default signature and the
  label map among its assets.
  """
  path = os.fspath(path)
  if tf.saved_model.contains_saved_model(path):
    signature = tf.saved_model.load(path).signatures["serving_default"]
    return Detector(lambda encoded: signature(images=encoded), LabelMap.load(export.asset_label_map_path(path)),
                    path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: no such run directory or SavedModel")
  run = run_dir.RunDir(path)
  ssd = SSD.from_run(path, checkpoint, config)
  label_map = run.load_label_map()
  module = export.DetectionModule(ssd, label_map, run.label_map_json)
  # A closure: tf.function methods hold their instance weakly, the module must stay alive.
  return Detector(lambda encoded: module.serve_encoded(encoded), label_map, path)
