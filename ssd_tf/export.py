"""SavedModel for TF Serving: preprocessing, the SSD, decoding and NMS in one graph.

Signatures (outputs named as the TF Object Detection API names them, same dtypes):

* ``serving_default``: ``images`` tf.string [B] of encoded JPEG/PNG/GIF/BMP bytes, any sizes.
* ``serving_images``: ``images`` uint8 [B, H, W, 3] RGB, any H and W.

Outputs: ``detection_boxes`` float32 [B, K, 4] normalized [ymin, xmin, ymax, xmax] of
the input image, ``detection_scores`` float32 [B, K], ``detection_classes`` float32
[B, K] dataset category ids, ``num_detections`` float32 [B]. Rows past
num_detections are zero. The label map travels as the asset ``label_map.json``.
"""

import os

import numpy as np
import tensorflow as tf

from ssd_tf import postprocess as postprocess_lib
from ssd_tf.data import augment


class DetectionModule(tf.Module):
  """An SSD wrapped with its pre- and post-processing, ready for tf.saved_model.save.

  It tracks the tf.Variables the signatures read, not the Keras model (held by the Detector, which
  tf.Module does not track): a Keras 3 variable saves as a copy of its tf.Variable, and the session
  loader (TF Serving, ``saved_model_cli run``) restores the checkpoint into such copies only,
  leaving the variables the graph reads uninitialized.
  """

  def __init__(self, model, config, label_map, label_map_path):
    super().__init__()
    self.model_variables = [variable.value for variable in model.variables]
    self.label_map_asset = tf.saved_model.Asset(label_map_path)
    self._image_size = int(config.model.image_size)
    self._detector = postprocess_lib.Detector(model, config)
    # Index = contiguous label (0 = background), value = dataset category id.
    self._category_ids = tf.constant(
        np.concatenate([[0.0], label_map.category_ids(np.arange(1, label_map.num_classes + 1))]),
        dtype=tf.float32)

  def _resize(self, images):
    """uint8 [(B,) H, W, 3] -> float32 [(B,) S, S, 3] in [0, 255]: the eval pipeline's resize."""
    return augment.resize(tf.cast(images, tf.float32), self._image_size)

  def _decode(self, encoded):
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return self._resize(image)

  def detect(self, images):
    """float32 [B, S, S, 3] RGB 0..255 -> the output dict of the module docstring."""
    detections = self._detector(images)
    return {
        "detection_boxes": detections["boxes"],
        "detection_scores": detections["scores"],
        "detection_classes": tf.gather(self._category_ids, detections["classes"]),
        "num_detections": tf.cast(detections["num_detections"], tf.float32),
    }

  def decode_batch(self, images):
    """tf.string [B] encoded images -> float32 [B, S, S, 3]: serving_default's preprocessing."""
    return tf.map_fn(self._decode, images,
                     fn_output_signature=tf.TensorSpec([self._image_size, self._image_size, 3],
                                                       tf.float32))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
  def serve_encoded(self, images):
    return self.detect(self.decode_batch(images))

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
  def serve_images(self, images):
    return self.detect(self._resize(images))


def export_saved_model(model, config, label_map, label_map_path, export_dir):
  """Writes the SavedModel to export_dir (via a temporary sibling, renamed when complete)."""
  if os.path.basename(label_map_path) != "label_map.json":
    raise ValueError(f"the label map asset must be named label_map.json, got {label_map_path}")
  module = DetectionModule(model, config, label_map, label_map_path)
  partial = export_dir.rstrip("/") + ".partial"
  if tf.io.gfile.exists(partial):
    tf.io.gfile.rmtree(partial)
  tf.saved_model.save(module, partial, signatures={
      "serving_default": module.serve_encoded,
      "serving_images": module.serve_images,
  })
  if tf.io.gfile.exists(export_dir):
    tf.io.gfile.rmtree(export_dir)
  tf.io.gfile.rename(partial, export_dir)
  return export_dir


def asset_label_map_path(saved_model_dir):
  """Where an exported SavedModel keeps its label map."""
  return os.path.join(saved_model_dir, "assets", "label_map.json")
