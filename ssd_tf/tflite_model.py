"""Runs an exported .tflite detector (ssd_tf.tflite_export) in TensorFlow's TFLite interpreter."""

import os
import warnings

import numpy as np
import tensorflow as tf

from ssd_tf import tflite_export


class TFLiteModel:
  """A .tflite detector in ``tf.lite.Interpreter`` (XNNPACK delegate, ``num_threads`` threads).

  Attributes: path, image_size S.
  """

  def __init__(self, path, num_threads=1):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} not found: export one with export_savedmodel.py --format=tflite")
    with warnings.catch_warnings():  # tf.lite.Interpreter's note that LiteRT will replace it
      warnings.simplefilter("ignore")
      self._interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
    try:
      self._run = self._interpreter.get_signature_runner()
    except ValueError:
      raise ValueError(f"{path} is not an ssd_tf TFLite detector (no single signature)") from None
    signature = self._interpreter.get_signature_list()["serving_default"]
    if signature["inputs"] != ["image"] or sorted(signature["outputs"]) != sorted(tflite_export.OUTPUTS):
      raise ValueError(f"{path} is not an ssd_tf TFLite detector: signature {signature}")
    self.path = path
    self.image_size = int(self._run.get_input_details()["image"]["shape"][1])

  def __call__(self, image):
    """uint8 [1, S, S, 3] -> {name: array} of the four outputs (tflite_export's docstring)."""
    return self._run(image=np.asarray(image, np.uint8))

  def detect(self, images):
    """float [B, S, S, 3] RGB 0..255 (the eval pipeline's images) -> as postprocess.postprocess:
    boxes [B, K, 4], scores [B, K], labels int32 [B, K] 1..C (0 past num_detections),
    num_detections int32 [B]. Each image is rounded to uint8 and run alone (batch 1)."""
    pixels = np.round(np.clip(np.asarray(images, np.float32), 0, 255)).astype(np.uint8)
    outputs = [self(image[None]) for image in pixels]
    count = np.array([int(o["num_detections"][0]) for o in outputs], np.int32)
    valid = np.arange(outputs[0]["detection_scores"].shape[1])[None, :] < count[:, None]
    labels = np.stack([o["detection_classes"][0] for o in outputs]).astype(np.int32) + 1
    return dict(boxes=np.stack([o["detection_boxes"][0] for o in outputs]),
                scores=np.stack([o["detection_scores"][0] for o in outputs]),
                labels=np.where(valid, labels, 0), num_detections=count)
