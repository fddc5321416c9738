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


_TRACE_LINE = re.compile(r"Graph execution error:|Detected at node |<stack traces unavailable>")


def _message(error):
  """An InvalidArgumentError's own words: without TensorFlow's stack traces, node names and op tags."""
  lines = [line for line in error.message.splitlines()
           if line.strip() and not line[0].isspace() and not _TRACE_LINE.match(line)]
  text = re.sub(r"\{\{.*?\}\}|\[Op:[\w<>]+\]", "", " ".join(lines)).strip()
  asserted = re.search(r"assertion failed: \[(.*)\]|Summarized data: b'(.*)'", text)  # in a graph | eager
  return next(group for group in asserted.groups() if group is not None) if asserted else text


def _image_error(error, name):
  """The ValueError for an image TensorFlow refused (InvalidArgumentError ``error``), named ``name`` (_name)."""
  text = _message(error)
  if text.startswith("image 0 "):  # images.decode's own checks, on a batch of one
    return ValueError(f"{name or 'the image'} {text[len('image 0 '):]}")
  return ValueError(f"{name + ': ' if name else ''}truncated or corrupt image ({text})")


def decode_rgb(encoded):
  """Encoded image bytes -> uint8 [H, W, 3] RGB numpy array (images.decode); ValueError if not an image."""
  try:
    return images.decode(encoded).numpy()
  except tf.errors.InvalidArgumentError as error:
    raise ValueError(_message(error)) from None


def _name(image, index=None):
  """How errors name ``image``: its path, "image <index> of the list (<path>)" for a list's item; None for
  bytes or an array given alone (their messages describe them)."""
  path = os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
  if index is None:
    return path
  return f"image {index} of the list" + (f" ({path})" if path else "")


def _encoded(image, name):
  """A path, encoded bytes or a uint8 [H, W, 3] array -> (encoded bytes, (height, width)).

  The size of bytes is read from their header (images.header_size; nothing is decoded here).
  Errors start with ``name`` (_name): an unreadable file is an OSError; an empty file, bytes
  that are not an image, an array that is not uint8 [H, W, 3] with pixels, any other value a
  ValueError.
  """
  prefix = f"{name}: " if name else ""
  if isinstance(image, (str, os.PathLike)):
    try:
      with open(image, "rb") as f:
        image = f.read()
    except OSError as error:
      raise type(error)(f"{prefix}{error.strerror or error}") from None
  if isinstance(image, bytes):
    if not image:
      raise ValueError(f"{prefix}empty (0 bytes), not an image")
    try:
      height, width = images.header_size(image).numpy()
    except tf.errors.InvalidArgumentError as error:  # a corrupt JPEG header
      raise _image_error(error, name) from None
    if height < 0:
      raise ValueError(f"{prefix}not a JPEG, PNG, GIF or BMP image")
    return image, (int(height), int(width))
  array = np.asarray(image)
  if array.dtype == object or array.ndim == 0:
    raise ValueError(f"{prefix}an image is a file path, encoded bytes or a uint8 [H, W, 3] RGB array, "
                     f"got {type(image).__name__}")
  if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or not array.size:
    raise ValueError(f"{prefix}an image array must be uint8 [H, W, 3] RGB with pixels, got {array.dtype} "
                     f"{list(array.shape)}")
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
    A bad image is one OSError or ValueError line naming it (its path, "image 3 of the list").
    """
    single = not isinstance(images, (list, tuple))
    named = [(images, _name(images))] if single else [(image, _name(image, i)) for i, image in enumerate(images)]
    results = self._detect([(*_encoded(image, name), name) for image, name in named], min_score)
    return results[0] if single else results

  def _detect(self, batch, min_score):
    """[(encoded, size, name)] -> [[Detection]] per image, detected as one batch. A batch that
    TensorFlow refuses is detected one image at a time, so that the error names the image."""
    if not batch:
      return []
    try:
      outputs = {k: v.numpy() for k, v in self._serve(tf.constant([e for e, _, _ in batch])).items()}
    except tf.errors.InvalidArgumentError as error:  # e.g. a truncated file, an image over the pixel limit
      if len(batch) > 1:
        return [self._detect([item], min_score)[0] for item in batch]
      raise _image_error(error, batch[0][2]) from None
    return [self._detections(outputs, i, size, min_score) for i, (_, size, _) in enumerate(batch)]

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
  (best, else newest; or ``checkpoint``): SSD.from_run. A SavedModel: its serving_default signature
  and the label map among its assets. A path that is neither, or a broken one, is one OSError or
  ValueError line naming it.
  """
  path = os.fspath(path)
  if tf.saved_model.contains_saved_model(path):
    signature = _load_saved_model(path).signatures["serving_default"]
    return Detector(lambda encoded: signature(images=encoded), LabelMap.load(export.asset_label_map_path(path)),
                    path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such run directory or SavedModel")
  if not os.path.isdir(path):
    raise NotADirectoryError(f"{path} is a file: give a run directory or an exported SavedModel directory")
  run = run_dir.RunDir(path)
  if config is None and not run.has_config():
    raise FileNotFoundError(f"{path} is neither a run directory (no config.json) nor a SavedModel "
                            f"(no saved_model.pb)")
  ssd = SSD.from_run(path, checkpoint, config)
  label_map = run.load_label_map()
  module = export.DetectionModule(ssd, label_map, run.label_map_json)
  # A closure: tf.function methods hold their instance weakly, the module must stay alive.
  return Detector(lambda encoded: module.serve_encoded(encoded), label_map, path)


def _load_saved_model(path):
  """tf.saved_model.load, a SavedModel it cannot load (truncated, files missing) one line naming ``path``."""
  try:
    return tf.saved_model.load(path)
  except (OSError, ValueError, tf.errors.OpError) as error:
    reason = re.sub(r"\bb'([^']*)'", r"\1", str(error).strip().splitlines()[0])  # TF quotes paths as bytes
    error_class = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
    raise error_class(f"{path}: not a loadable SavedModel, truncated or incomplete ({reason})") from None
