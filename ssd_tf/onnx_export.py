"""An SSD as one ONNX model, or one OpenVINO IR, holding what the SavedModel's serving_images holds.

The model (<export_dir>/model.onnx, or model.xml + model.bin; label_map.json beside):

  input   ``images`` uint8 [B, H, W, 3] RGB, B >= 1, any H and W (one size per call)
  outputs ``detection_boxes`` float32 [B, K, 4] normalized ymin, xmin, ymax, xmax of the input image,
          ``detection_scores`` float32 [B, K] descending, ``detection_classes`` float32 [B, K] dataset
          category ids, ``num_detections`` float32 [B]; rows past num_detections are zero. The
          SavedModel's names, order and meaning (export.py); K = config.postprocess.max_detections.

Inside, all float32: the eval resize to S x S (antialiased bilinear, as two matrix products:
images.resize_by_matmul), the network, box decoding, softmax and the combined per-class NMS of
postprocess.py, which tf2onnx writes as ONNX's NonMaxSuppression. The OpenVINO IR is that ONNX model
read by ``openvino.convert_model`` (its NonMaxSuppression op is OpenVINO's own), weights kept in float32;
its compute precision is chosen when it is compiled (``INFERENCE_PRECISION_HINT``: OpenVINO's CPU plugin
picks bf16 by itself on CPUs with AMX or AVX512_BF16). The image size S and the label map also travel
inside: ONNX metadata_props / OpenVINO rt_info ``ssd_tf.image_size`` and ``ssd_tf.label_map``.

Optional dependencies: tf2onnx (both formats) and openvino (OpenVINO); the runtimes are onnxruntime and
openvino (onnx_model.py).
"""

import contextlib
import json
import logging
import os
import tempfile

import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from ssd_tf import export
from ssd_tf import files
from ssd_tf import images

FILES = {"onnx": "model.onnx", "openvino": "model.xml"}
NETWORK_OUTPUTS = ("loc", "logits")
OPSET = 17
INSTALL = {"onnx": "pip install tf2onnx==1.17.0 onnxruntime==1.32.0",  # the tested versions (requirements-test.txt)
           "openvino": "pip install tf2onnx==1.17.0 openvino==2026.4.1"}


def require(module, feature):
  """Imports ``module``, or raises ImportError naming the pip command of ``feature`` ("onnx", "openvino")."""
  handlers = list(logging.getLogger().handlers)  # importing openvino removes the root logger's (absl's)
  try:
    return __import__(module)
  except ImportError as e:
    raise ImportError(f"{feature} needs {module}: `{INSTALL[feature]}`", name=module) from e
  finally:
    logging.getLogger().handlers[:] = handlers


def detector_function(ssd, label_map):
  """The tf.function of the module docstring: uint8 [B, H, W, 3] -> (boxes, scores, classes, count)."""
  module = export.DetectionModule(ssd, label_map)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
  def detect(pixels):
    return module.detections(images.resize_by_matmul(pixels, ssd.image_size, ssd.config.model.resize_antialias))

  return detect, ("images",), export.OUTPUTS


def network_function(ssd):
  """The network alone (to time it apart): float32 [B, S, S, 3] RGB 0..255 -> (loc [B, N, 4], logits
  [B, N, 1 + C])."""
  size = ssd.image_size

  @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
  def network(batch):
    outputs = ssd(batch, training=False)
    return tuple(tf.cast(outputs[name], tf.float32) for name in NETWORK_OUTPUTS)

  return network, ("images",), NETWORK_OUTPUTS


def to_onnx(ssd, label_map, network_only=False):
  """The SSD (float32 policy) -> onnx.ModelProto: the detector of the module docstring, or with
  ``network_only`` the network alone (network_function)."""
  require("tf2onnx", "onnx")
  import tf2onnx  # pylint: disable=import-outside-toplevel
  function, input_names, output_names = network_function(ssd) if network_only else detector_function(ssd, label_map)
  frozen = convert_to_constants.convert_variables_to_constants_v2(function.get_concrete_function())
  with _converter_logs_off():
    model, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
        output_names=[t.name for t in frozen.outputs], opset=OPSET)
  _rename(model.graph, dict(zip([t.name for t in frozen.inputs] + [t.name for t in frozen.outputs],
                                input_names + output_names)))
  for key, value in _metadata(ssd, label_map).items():
    model.metadata_props.add(key=key, value=value)
  return model


def to_openvino(onnx_model):
  """An onnx.ModelProto (to_onnx) -> openvino.Model, its metadata copied into rt_info."""
  ov = require("openvino", "openvino")
  with tempfile.TemporaryDirectory() as folder:  # convert_model reads ONNX from a file
    path = os.path.join(folder, "model.onnx")
    with open(path, "wb") as f:
      f.write(onnx_model.SerializeToString())
    with _converter_logs_off():
      model = ov.convert_model(path)
  for entry in onnx_model.metadata_props:
    model.set_rt_info(entry.value, entry.key.split("."))
  return model


def metadata(path):
  """{``ssd_tf.image_size``: int, ``ssd_tf.label_map``: label map entries} of an exported file."""
  if path.endswith(".onnx"):
    onnx = require("onnx", "onnx")
    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
  else:
    model = require("openvino", "openvino").Core().read_model(path)
    props = {key: model.get_rt_info(key.split(".")).astype(str) for key in ("ssd_tf.image_size", "ssd_tf.label_map")
             if model.has_rt_info(key.split("."))}
  if "ssd_tf.image_size" not in props:
    raise ValueError(f"{path} is not an ssd_tf export (no ssd_tf.image_size in its metadata)")
  return {"ssd_tf.image_size": int(props["ssd_tf.image_size"]),
          "ssd_tf.label_map": json.loads(props["ssd_tf.label_map"])}


def write(model, label_map, export_dir):
  """Writes an onnx.ModelProto or openvino.Model to export_dir (model.onnx, or model.xml + model.bin in
  float32) with label_map.json, into a sibling folder first (files.write_dir). Returns the model file."""
  is_onnx = hasattr(model, "SerializeToString")
  name = FILES["onnx" if is_onnx else "openvino"]

  def fill(folder):
    if is_onnx:
      with open(os.path.join(folder, name), "wb") as f:
        f.write(model.SerializeToString())
    else:
      require("openvino", "openvino").save_model(model, os.path.join(folder, name), compress_to_fp16=False)
    label_map.save(os.path.join(folder, "label_map.json"))

  files.write_dir(export_dir, fill)
  return os.path.join(export_dir, name)


@contextlib.contextmanager
def _converter_logs_off():
  """Meanwhile, TensorFlow's and tf2onnx's Python loggers pass errors only (tf2onnx logs its progress and
  TensorFlow's deprecation notes of the APIs it calls); handlers the converters add to the root logger go."""
  root = logging.getLogger()
  handlers = list(root.handlers)
  loggers = [logging.getLogger(name) for name in ("tensorflow", "tf2onnx")]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)
    root.handlers[:] = handlers


def _metadata(ssd, label_map):
  return {"ssd_tf.image_size": str(ssd.image_size), "ssd_tf.label_map": json.dumps(label_map.entries)}


def _rename(graph, names):
  """Renames tensors of an onnx.GraphProto (the graph's inputs, outputs and every node's uses)."""
  for value in list(graph.input) + list(graph.output):
    value.name = names.get(value.name, value.name)
  for node in graph.node:
    node.input[:] = [names.get(n, n) for n in node.input]
    node.output[:] = [names.get(n, n) for n in node.output]
