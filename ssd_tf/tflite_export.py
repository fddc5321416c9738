"""An SSD as a TFLite model with TFLite's built-in detection post-processing inside.

The model (one image per call):

  input   ``image`` uint8 [1, S, S, 3] RGB: the whole picture resized to S x S (``resize_image``)
  outputs ``detection_boxes`` float32 [1, K, 4] normalized ymin, xmin, ymax, xmax of the image,
          ``detection_classes`` float32 [1, K] class index 0..C-1 (ssd_tf label = index + 1),
          ``detection_scores`` float32 [1, K] sorted, descending, ``num_detections`` float32 [1];
          rows past num_detections are zero; in this order in the subgraph's outputs (the TF
          Object Detection API's order). K = config.postprocess.max_detections.

Inside: cast to float, the Keras network (its input normalization included), softmax over
the 1 + C columns, then for each pair of classes one ``TFLite_Detection_PostProcess`` op (regular NMS)
on their columns (with postprocess.pre_nms_top_k > 0, on each class's k best boxes alone): it decodes
the offsets (dy, dx, dh, dw) against the default boxes as (ycentre, xcentre, h, w) with scales 1 / variances, keeps scores >= score_threshold and runs greedy NMS per class
(IoU > iou_threshold suppresses), at most max_detections_per_class each; the K best of all classes
are kept (TOPK_V2, GATHER), and boxes are clipped to [0, 1] unless postprocess.clip_boxes is "none".
Pairs rather than one op over all classes: the op's regular NMS runs its classes on the
interpreter's threads, and with more than one thread it never looks at class index ``num_threads``
(its shared column counter is pre-incremented; TF 2.21 and ai-edge-litert 2.3.0; README, Edge). An
op with no more classes than threads has nothing to skip, and one thread runs a plain loop, so every
thread count gives the same detections. The op is declared through a tf.function whose
``experimental_implements`` names it; the converter replaces the function by the op.
"""

import os

import numpy as np
import tensorflow as tf
from flatbuffers import flexbuffers
from tensorflow.lite.tools import flatbuffer_utils

from ssd_tf import files
from ssd_tf import images

QUANTIZATIONS = ("none", "float16", "int8")
OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
_OP = "TFLite_Detection_PostProcess"
# Classes per op: the op's regular NMS never skips a class when it has no more classes than the
# interpreter has threads (or runs on one thread); see the module docstring.
CLASSES_PER_OP = 2
# The TFLite ops of the post-processing, kept in float under int8 (with RESHAPE and CONCATENATION the
# heads' last ops: the network's outputs are dequantized once, before them).
FLOAT_OPS = ("RESHAPE", "CONCATENATION", "TRANSPOSE", "TOPK_V2", "UNPACK", "GATHER", "SELECT_V2", "EXPAND_DIMS",
             "STRIDED_SLICE", "SPLIT", "ADD_N", "MINIMUM", "RELU", "LESS")


def centre_size(boxes):
  """[N, 4] ymin, xmin, ymax, xmax -> float32 [N, 4] ycentre, xcentre, h, w (the op's anchors)."""
  boxes = np.asarray(boxes, np.float64)
  size = boxes[:, 2:] - boxes[:, :2]
  return np.concatenate([boxes[:, :2] + size / 2, size], axis=1).astype(np.float32)


def op_attributes(postprocess, variances, num_classes):
  """Attributes of a post-processing op over ``num_classes`` (<= CLASSES_PER_OP) classes, from
  config.postprocess and box_coder.variances: each class keeps at most max_detections_per_class, the op
  as many as can reach the model's max_detections."""
  per_class = min(int(postprocess.max_detections_per_class), int(postprocess.max_detections))
  return dict(max_detections=min(int(postprocess.max_detections), num_classes * per_class),
              max_classes_per_detection=1, detections_per_class=per_class, use_regular_nms=True,
              nms_score_threshold=float(postprocess.score_threshold),
              nms_iou_threshold=float(postprocess.iou_threshold), num_classes=int(num_classes),
              y_scale=1 / float(variances[0]), x_scale=1 / float(variances[0]),
              h_scale=1 / float(variances[1]), w_scale=1 / float(variances[1]))


def _implements(attributes):
  """The NodeDef text of experimental_implements naming the op with its attributes."""
  def value(v):
    if isinstance(v, bool):
      return f"b: {str(v).lower()}"
    return f"i: {v}" if isinstance(v, int) else f"f: {v!r}"
  return " ".join([f'name: "{_OP}"'] + [f'attr {{ key: "{k}" value {{ {value(v)} }} }}'
                                          for k, v in attributes.items()])


def detection_op(attributes):
  """A tf.function standing for the op with ``attributes``: (box_encodings [1, N, 4], class_scores
  [1, N, c], anchors [N, 4]) -> boxes [1, k, 4], classes [1, k] 0..c-1, scores [1, k], count [1]. The
  converter puts the op in place of its body."""
  k = attributes["max_detections"]

  @tf.function(experimental_implements=_implements(attributes))
  def op(box_encodings, class_scores, anchors):
    del box_encodings, class_scores, anchors
    return tf.zeros([1, k, 4]), tf.zeros([1, k]), tf.zeros([1, k]), tf.zeros([1])

  return op


class TFLiteModule(tf.Module):
  """What the converter reads: the SSD's network variables and ``detect`` (module docstring)."""

  def __init__(self, ssd, post_process=True):
    super().__init__()
    self.network_variables = [variable.value for variable in ssd.network.variables]
    self._ssd = ssd
    self._anchors = centre_size(ssd.default_boxes.numpy())
    self._max_detections = int(ssd.config.postprocess.max_detections)
    self._clip = ssd.config.postprocess.clip_boxes != "none"
    self._top_k = int(ssd.config.postprocess.pre_nms_top_k)
    self._with_post_process = post_process
    c = ssd.num_classes
    self.groups = [min(CLASSES_PER_OP, c - start) for start in range(0, c, CLASSES_PER_OP)]
    size = ssd.image_size
    self.detect = tf.function(self._detect, input_signature=[tf.TensorSpec([1, size, size, 3], tf.uint8,
                                                                           name="image")])

  def attributes(self):
    """{classes in a group: the attributes of its op}."""
    return {n: op_attributes(self._ssd.config.postprocess, self._ssd.variances, n) for n in set(self.groups)}

  def _detect(self, image):
    outputs = self._ssd(tf.cast(image, tf.float32), training=False)
    loc = tf.cast(outputs["loc"], tf.float32)                                     # [1, N, 4]
    scores = tf.nn.softmax(tf.cast(outputs["logits"], tf.float32), axis=-1)       # [1, N, 1 + C]
    if not self._with_post_process:
      return dict(box_encodings=loc, class_scores=scores)
    return self.post_process(loc, scores)

  def _all_box_inputs(self, loc, columns):
    """Each group's (box_encodings [1, N, 4], class_scores [1, N, n], anchors [N, 4]): every box."""
    anchors = tf.constant(self._anchors)
    return [(loc, group, anchors) for group in tf.split(columns, self.groups, axis=-1)]

  def _top_k_inputs(self, loc, columns):
    """Each group's inputs over its classes' k best boxes (postprocess.pre_nms_top_k, as
    SSD.detect picks them, exactly k however many scores tie): the n k rows of box_encodings
    [1, n k, 4] and anchors [n k, 4] are class j's k best boxes in rows j k .. (j + 1) k - 1, where
    class_scores [1, n k, n] holds class j's scores in column j and zeros elsewhere."""
    k = min(self._top_k, columns.shape[1])
    top_scores, top_index = tf.math.top_k(tf.transpose(columns[0]), k=k)        # [C, k]
    top_scores, top_index = tf.unstack(top_scores), tf.unstack(top_index)      # C x [k]
    anchors, rows = tf.constant(self._anchors), loc[0]                           # [N, 4]
    inputs, first = [], 0
    for n in self.groups:
      index = tf.concat(top_index[first:first + n], axis=0)                     # [n k]
      group_scores = tf.concat(top_scores[first:first + n], axis=0)             # [n k]
      block = np.repeat(np.eye(n, dtype=bool), k, axis=0)                       # [n k, n]
      class_scores = tf.where(block, tf.expand_dims(group_scores, 1), 0.0)      # [n k, n]
      inputs.append((tf.expand_dims(tf.gather(rows, index), 0), tf.expand_dims(class_scores, 0),
                     tf.gather(anchors, index)))
      first += n
    return inputs

  def post_process(self, loc, scores):
    """loc [1, N, 4] offsets, scores [1, N, 1 + C] softmax -> the output dict (module docstring)."""
    ops = {n: detection_op(attributes) for n, attributes in self.attributes().items()}
    inputs = self._top_k_inputs if self._top_k > 0 else self._all_box_inputs
    # Per group of classes: boxes [1, k, 4], classes [1, k] in the group, scores [1, k], count [1].
    found = [ops[n](*group) for n, group in zip(self.groups, inputs(loc, scores[..., 1:]))]
    boxes = tf.concat([d[0] for d in found], axis=1)                              # [1, R, 4]
    scores = tf.concat([d[2] for d in found], axis=1)                             # [1, R]
    first = np.cumsum([0] + self.groups[:-1])  # the group's first class, added with ADD_N (float under int8)
    classes = tf.add_n([tf.concat([d[1] for d in found], axis=1),
                        np.repeat(first, [d[1].shape[1] for d in found])[None].astype(np.float32)])
    total = self._max_detections
    count = tf.minimum(tf.add_n([d[3] for d in found]), float(total))             # [1]
    scores, index = tf.math.top_k(scores, k=min(total, scores.shape[1]))        # [1, K']
    valid = tf.range(index.shape[1])[None] < tf.cast(count, tf.int32)[:, None]
    boxes = tf.gather(boxes, index, batch_dims=1)
    if self._clip:
      boxes = tf.clip_by_value(boxes, 0.0, 1.0)
    classes = tf.where(valid, tf.gather(classes, index, batch_dims=1), 0.0)
    pad = total - index.shape[1]  # fewer classes x k than K: zero rows, as the op pads
    if pad:
      boxes, classes, scores = (tf.concat([t, tf.zeros([1, pad] + t.shape[2:])], axis=1)
                                for t in (boxes, classes, scores))
    return dict(zip(OUTPUTS, (boxes, classes, scores, count)))


def convert(ssd, quantize="none", calibration=None, post_process=True):
  """The SSD (float32 policy) -> .tflite bytes.

  quantize: "none" (float32), "float16" (float16 weights, float compute) or "int8" (full
  integer, uint8 input; ``calibration``: an iterable of uint8 [S, S, 3] images).
  post_process=False: the network and softmax alone (outputs box_encodings [1, N, 4], class_scores
  [1, N, 1 + C]), to time them apart (benchmarks/inference.py).
  """
  if quantize not in QUANTIZATIONS:
    raise ValueError(f"--quantize={quantize}: choose one of {', '.join(QUANTIZATIONS)}")
  if quantize == "int8" and calibration is None:
    raise ValueError("--quantize=int8 needs calibration images")
  module = TFLiteModule(ssd, post_process)
  converter = tf.lite.TFLiteConverter.from_concrete_functions([module.detect.get_concrete_function()], module)
  converter.allow_custom_ops = True  # the detection op is TFLite's own, registered as a custom op
  if quantize == "float16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif quantize == "int8":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = tf.uint8
    # The converter would also quantize what follows the detection op (boxes and scores to 8 bits);
    # the quantization debugger's denylist keeps those ops, and the heads' concatenation, in float.
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=converter.representative_dataset,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS)))
    return _finish(debugger.get_nondebug_quantized_model(), module.attributes())
  return _finish(converter.convert(), module.attributes())


def _finish(model_bytes, attributes):
  """Sets each op's attributes to ``attributes[its num_classes]`` (the converter drops
  detections_per_class) and orders the subgraph's outputs as OUTPUTS (the converter orders them
  arbitrarily; the signature's names stay)."""
  model = flatbuffer_utils.convert_bytearray_to_object(model_bytes)
  codes = [code.customCode for code in model.operatorCodes]
  graph = model.subgraphs[0]
  for op in graph.operators:
    if codes[op.opcodeIndex] == _OP.encode():
      num_classes = flexbuffers.Loads(bytes(op.customOptions))["num_classes"]
      op.customOptions = list(flexbuffers.Dumps(attributes[num_classes]))
  names = {o.tensorIndex: o.name.decode() for o in model.signatureDefs[0].outputs}
  if set(names.values()) == set(OUTPUTS):
    graph.outputs = sorted(graph.outputs, key=lambda tensor: OUTPUTS.index(names[tensor]))
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def resize_image(image, size, antialias=True):
  """uint8 [H, W, 3] RGB -> uint8 [1, size, size, 3]: what a caller feeds the model.

  The whole image, bilinear (antialiased when shrinking, as ssd_tf's eval and SavedModel
  resize), rounded to the nearest integer.
  """
  resized = images.resize(tf.cast(image, tf.float32), size, antialias)
  return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)[None].numpy()


def write(model_bytes, label_map, export_dir):
  """Writes export_dir/model.tflite, label_map.json and labels.txt (line i: the name of class index i,
  i.e. of label i + 1), into a sibling folder first that then replaces export_dir (files.write_dir)."""
  def fill(folder):
    with open(os.path.join(folder, "model.tflite"), "wb") as f:
      f.write(model_bytes)
    label_map.save(os.path.join(folder, "label_map.json"))
    files.write_atomic(os.path.join(folder, "labels.txt"), "".join(f"{name}\n" for name in label_map.names()))

  files.write_dir(export_dir, fill)
  return os.path.join(export_dir, "model.tflite")
