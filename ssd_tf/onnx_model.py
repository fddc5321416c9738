"""Runs an exported ONNX model in ONNX Runtime, or an OpenVINO IR in OpenVINO (onnx_export.py)."""

import os

import numpy as np

from ssd_tf import onnx_export
from ssd_tf.label_map import LabelMap

PRECISIONS = ("f32", "bf16")


class ExportedModel:
  """What both runtimes share: the metadata, and ``detect`` for the Evaluator on top of a subclass's
  ``__call__``: uint8 [B, H, W, 3] -> {name: array} of the four outputs of onnx_export's docstring.

  Attributes: path, image_size S, label_map (the one inside the file).
  """

  def __init__(self, path):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path} not found: export one with export_savedmodel.py --format=onnx|openvino")
    self.path = path
    meta = onnx_export.metadata(path)
    self.image_size = meta["ssd_tf.image_size"]
    self.label_map = LabelMap(meta["ssd_tf.label_map"])

  def detect(self, images):
    """float [B, S, S, 3] RGB 0..255 (the eval pipeline's images) -> as postprocess.postprocess:
    boxes [B, K, 4], scores [B, K], labels int32 [B, K] 1..C (0 past num_detections),
    num_detections int32 [B]. The images are rounded to uint8, as a client sends them."""
    pixels = np.round(np.clip(np.asarray(images, np.float32), 0, 255)).astype(np.uint8)
    outputs = self(pixels)
    count = outputs["num_detections"].astype(np.int32)
    valid = np.arange(outputs["detection_scores"].shape[1])[None, :] < count[:, None]
    ids = outputs["detection_classes"].astype(np.int64)
    labels = np.zeros(ids.shape, np.int32)
    labels[valid] = self.label_map.labels(ids[valid])
    return dict(boxes=outputs["detection_boxes"], scores=outputs["detection_scores"], labels=labels,
                num_detections=count)


class OnnxModel(ExportedModel):
  """A model.onnx in ``onnxruntime.InferenceSession`` (CPU, ``num_threads`` intra-op threads; 0: ORT's choice).
  ``spinning=False``: its threads sleep as soon as a call ends instead of spinning for the next one (ORT's
  default), which leaves the cores to whatever else runs in the process (benchmarks/runtimes.py)."""

  def __init__(self, path, num_threads=0, spinning=True):
    super().__init__(path)
    ort = onnx_export.require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    if not spinning:
      options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    self._names = [o.name for o in self._session.get_outputs()]

  def __call__(self, images):
    return dict(zip(self._names, self._session.run(None, {"images": np.asarray(images)})))


class OpenVinoModel(ExportedModel):
  """A model.xml compiled by ``openvino.Core`` for the CPU at ``precision`` (f32, bf16; None: OpenVINO's
  choice, bf16 on CPUs with AMX or AVX512_BF16) with ``num_threads`` threads (0: OpenVINO's choice)."""

  def __init__(self, path, num_threads=0, precision="f32"):
    super().__init__(path)
    if precision is not None and precision not in PRECISIONS:
      raise ValueError(f"OpenVINO precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    ov = onnx_export.require("openvino", "openvino")
    properties = {"INFERENCE_NUM_THREADS": int(num_threads)}
    if precision:
      properties["INFERENCE_PRECISION_HINT"] = precision
    self._compiled = ov.Core().compile_model(path, "CPU", properties)
    self._request = self._compiled.create_infer_request()
    self._names = [o.get_any_name() for o in self._compiled.outputs]

  def __call__(self, images):
    results = self._request.infer({"images": np.asarray(images)})
    return {name: np.array(results[output]) for name, output in zip(self._names, self._compiled.outputs)}


def load(path, num_threads=0, precision="f32"):
  """The model of an exported .onnx or .xml file (or of a folder holding model.onnx or model.xml)."""
  if os.path.isdir(path):
    found = [os.path.join(path, name) for name in onnx_export.FILES.values()
             if os.path.isfile(os.path.join(path, name))]
    if not found:
      raise FileNotFoundError(f"{path} holds no model.onnx or model.xml")
    path = found[0]
  if path.endswith(".onnx"):
    return OnnxModel(path, num_threads)
  if path.endswith(".xml"):
    return OpenVinoModel(path, num_threads, precision)
  raise ValueError(f"{path}: not an .onnx or OpenVINO .xml file")
