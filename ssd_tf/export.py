"""SavedModel for TF Serving: preprocessing, the SSD, decoding and NMS in one graph.

Signatures (outputs named as the TF Object Detection API names them, same dtypes):

* ``serving_default``: ``images`` tf.string [B] of encoded JPEG/PNG/GIF/BMP bytes, any sizes.
* ``serving_images``: ``images`` uint8 [B, H, W, 3] RGB, any H and W.

Outputs: ``detection_boxes`` float32 [B, K, 4] normalized [ymin, xmin, ymax, xmax] of
the input image, ``detection_scores`` float32 [B, K], ``detection_classes`` float32
[B, K] dataset category ids, ``num_detections`` float32 [B]. Rows past
num_detections are zero; an empty batch (B = 0) gives empty outputs. The label map
travels as the asset ``label_map.json``.

Refused with InvalidArgument, naming the image's index in the batch: bytes that are not
a JPEG/PNG/GIF/BMP, an image whose header declares more than config.data.max_image_pixels
pixels (checked before decoding: a decompression bomb costs no memory), an image without
pixels.
"""

import contextlib
import functools
import os

import numpy as np
import tensorflow as tf

from ssd_tf import files
from ssd_tf import images

OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


class DetectionModule(tf.Module):
  """An SSD wrapped with its pre- and post-processing, ready for tf.saved_model.save.

  Under mixed precision its graphs read the weights already in the compute dtype (compute_dtype_copies,
  taken when it is built): the same outputs, bit for bit, without casting every kernel at every call.

  It tracks the tf.Variables the signatures read, not the Keras network (held by the SSD, which
  tf.Module does not track): a Keras 3 variable saves as a copy of its tf.Variable, and the session
  loader (TF Serving, ``saved_model_cli run``) restores the checkpoint into such copies only,
  leaving the variables the graph reads uninitialized.
  """

  def __init__(self, ssd, label_map, label_map_path=None):
    super().__init__()
    copies = compute_dtype_copies(ssd.network)
    copied = {id(variable) for variable, _ in copies}
    self.network_variables = [copy for _, copy in copies] + [
        variable.value for variable in ssd.network.variables if id(variable) not in copied]
    self._reading_copies = functools.partial(reading_copies, copies)  # a partial: not saved with the module
    if label_map_path:  # the SavedModel's asset
      self.label_map_asset = tf.saved_model.Asset(label_map_path)
    self._image_size = ssd.image_size
    self._resize_antialias = bool(ssd.config.model.resize_antialias)
    self._max_pixels = int(ssd.config.data.max_image_pixels)
    self._max_detections = int(ssd.config.postprocess.max_detections)
    self._ssd = ssd
    # Index = contiguous label (0 = background), value = dataset category id.
    self._category_ids = tf.constant(
        np.concatenate([[0.0], label_map.category_ids(np.arange(1, label_map.num_classes + 1))]),
        dtype=tf.float32)

  def _resize(self, batch):
    """uint8 [(B,) H, W, 3] -> float32 [(B,) S, S, 3] in [0, 255]: the eval pipeline's resize."""
    return images.resize(tf.cast(batch, tf.float32), self._image_size, self._resize_antialias)

  def detections(self, batch):
    """float32 [B, S, S, 3] RGB 0..255, B > 0 -> (boxes, scores, classes, count) of the module docstring."""
    with self._reading_copies():
      detections = self._ssd.detect(batch)
    return (detections["boxes"], detections["scores"], tf.gather(self._category_ids, detections["labels"]),
            tf.cast(detections["num_detections"], tf.float32))

  def detect(self, batch):
    """float32 [B, S, S, 3] RGB 0..255 -> the output dict of the module docstring (B may be 0)."""
    def empty():
      k = self._max_detections
      return tf.zeros([0, k, 4]), tf.zeros([0, k]), tf.zeros([0, k]), tf.zeros([0])

    outputs = tf.cond(tf.shape(batch)[0] > 0, lambda: self.detections(batch), empty)
    return dict(zip(OUTPUTS, outputs))

  def decode_batch(self, encoded):
    """tf.string [B] encoded images -> float32 [B, S, S, 3]: serving_default's preprocessing."""
    return tf.map_fn(
        lambda args: self._resize(images.decode(args[1], self._max_pixels, index=args[0])),
        (tf.range(tf.size(encoded)), encoded),
        fn_output_signature=tf.TensorSpec([self._image_size, self._image_size, 3], tf.float32))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
  def serve_encoded(self, encoded):
    return self.detect(self.decode_batch(encoded))

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
  def serve_images(self, pixels):
    shape = tf.shape(pixels)
    has_pixels = tf.debugging.Assert(tf.logical_or(shape[0] == 0, shape[1] * shape[2] > 0),
                                     [tf.strings.format("images of shape {} have no pixels", [shape])])
    with tf.control_dependencies([has_pixels]):
      return self.detect(self._resize(pixels))


def compute_dtype_copies(network):
  """[(Keras variable, tf.Variable)]: for each float32 weight that a layer casts to its compute dtype at
  every call (mixed precision: conv and dense kernels and biases; BatchNormalization's stay float32, as
  Keras creates them autocast=False), a copy already in that dtype. [] under float32.

  At batch 1 the casts cost as much as a quarter of the network's time (quickstart, mixed_bfloat16: 12.1 ->
  9.2 ms on a 2-core Xeon, 2026-12-07). Reads Keras 3's layer and variable internals (_flatten_layers, the
  layer's own variable lists, Variable._autocast), checked by tests/test_export.py.
  """
  copies = []
  for layer in network._flatten_layers():  # pylint: disable=protected-access
    if not layer.autocast or layer.compute_dtype == layer.variable_dtype:
      continue
    for variable in layer._trainable_variables + layer._non_trainable_variables:  # pylint: disable=protected-access
      if variable._autocast and variable.dtype == "float32":  # pylint: disable=protected-access
        copies.append((variable, tf.Variable(tf.cast(variable.value, layer.compute_dtype), trainable=False,
                                             name=variable.name)))
  return copies


@contextlib.contextmanager
def reading_copies(copies):
  """Meanwhile (while a graph is traced), each Keras variable of ``copies`` reads its copy: the graph
  captures the copy, which its autocast then leaves as it is (a cast to its own dtype is no op)."""
  originals = [(variable, variable._value) for variable, _ in copies]  # pylint: disable=protected-access
  try:
    for variable, copy in copies:
      variable._value = copy  # pylint: disable=protected-access
    yield
  finally:
    for variable, original in originals:
      variable._value = original  # pylint: disable=protected-access


def export_saved_model(ssd, label_map, label_map_path, export_dir):
  """Writes the SavedModel of an SSD to export_dir: into a sibling folder first, which then replaces
  export_dir in one step (files.write_dir), so a kill at any moment leaves a loadable SavedModel
  (the old or the new) wherever there was one."""
  if os.path.basename(label_map_path) != "label_map.json":
    raise ValueError(f"the label map asset must be named label_map.json, got {label_map_path}")
  module = DetectionModule(ssd, label_map, label_map_path)
  signatures = {"serving_default": module.serve_encoded, "serving_images": module.serve_images}
  return files.write_dir(export_dir, lambda folder: tf.saved_model.save(module, folder, signatures=signatures))


def asset_label_map_path(saved_model_dir):
  """Where an exported SavedModel keeps its label map."""
  return os.path.join(saved_model_dir, "assets", "label_map.json")
