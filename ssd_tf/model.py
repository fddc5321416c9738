"""SSD detector: backbone taps -> extra feature levels -> per-level box and class heads.

Output layout follows ``ssd_tf.anchors.default_boxes``: levels in order, cells
row-major, ``boxes_per_cell`` boxes per cell; row n of ``loc``/``logits`` belongs
to default box n.

Layer names: the backbone is one nested layer named after it (``resnet50``,
``vgg16``...); extra levels ``extra{k}_{1,2}_{conv,bn,relu}``; heads
``level{k}_loc`` and ``level{k}_logits`` (k = 0 for the finest level).
Weight decay is left to the optimizer (no kernel regularizers).
"""

import functools
import math

import keras

from ssd_tf import anchors
from ssd_tf import batch_norm as batch_norm_lib
from ssd_tf.backbones import build_backbone
from ssd_tf.backbones.layers import CONV_INIT


def _extra_level_size(size, stride, padding):
  """Spatial size after an extra level's 3x3 conv."""
  return math.ceil(size / stride) if padding == "same" else (size - 3) // stride + 1


def _extra_level(x, spec, name, batch_norm):
  """1x1 conv-BN-ReLU to ``mid`` channels, then 3x3 conv (stride, padding)-BN-ReLU to ``out`` channels."""
  mid, out, stride, padding = spec
  x = keras.layers.Conv2D(mid, 1, use_bias=False, kernel_initializer=CONV_INIT, name=f"{name}_1_conv")(x)
  x = batch_norm(name=f"{name}_1_bn")(x)
  x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
  x = keras.layers.Conv2D(out, 3, strides=stride, padding=padding, use_bias=False,
                          kernel_initializer=CONV_INIT, name=f"{name}_2_conv")(x)
  x = batch_norm(name=f"{name}_2_bn")(x)
  return keras.layers.Activation("relu", name=f"{name}_2_relu")(x)


def _check_levels(config, tap_sizes):
  """Raises ValueError unless taps + extra levels give exactly config.anchors.feature_map_sizes."""
  m, expected = config.model, list(config.anchors.feature_map_sizes)
  if len(tap_sizes) + len(m.extra_layers) != len(expected):
    raise ValueError(
        f"backbone {m.backbone} has {len(tap_sizes)} feature tap(s) and model.extra_layers adds "
        f"{len(m.extra_layers)} level(s): {len(tap_sizes) + len(m.extra_layers)} levels, but "
        f"anchors.feature_map_sizes lists {len(expected)}")
  sizes = list(tap_sizes)
  for spec in m.extra_layers:
    if len(spec) != 4 or spec[3] not in ("same", "valid"):
      raise ValueError(f"model.extra_layers entries are (mid_channels, out_channels, stride, "
                       f"'same'|'valid'), got {spec}")
    sizes.append(_extra_level_size(sizes[-1], spec[2], spec[3]))
  if sizes != expected:
    raise ValueError(
        f"model.image_size={m.image_size} with backbone {m.backbone} and model.extra_layers gives "
        f"feature maps {sizes}, but anchors.feature_map_sizes is {expected}: set "
        f"anchors.feature_map_sizes (and steps) to {sizes} or change image_size / extra_layers")


def build_ssd(config):
  """SSD Keras model from ``config`` (see ssd_tf/defaults.py).

  Input: ``images`` float32 [B, S, S, 3] RGB in [0, 255], S = config.model.image_size.
  Outputs: {"loc": [B, N, 4] encoded offsets (dy, dx, dh, dw), "logits": [B, N, 1 + C]},
  float32 under any mixed-precision policy; N = anchors.num_default_boxes(config.anchors).
  """
  m = config.model
  num_boxes = anchors.boxes_per_cell(config.anchors)
  anchors.default_boxes(config.anchors, m.image_size)  # raises on a bad anchor spec (e.g. ratios short)
  backbone = build_backbone(m.backbone, m.backbone_weights, m.batchnorm_momentum, m.batchnorm_synchronized,
                            taps=m.backbone_taps)

  images = keras.Input((m.image_size, m.image_size, 3), dtype="float32", name="images")
  features = backbone.taps(images)
  _check_levels(config, [f.shape[1] for f in features])
  batch_norm = functools.partial(batch_norm_lib.BatchNormalization, momentum=m.batchnorm_momentum, epsilon=1e-5,
                                 synchronized=m.batchnorm_synchronized)
  for k, spec in enumerate(m.extra_layers):
    features.append(_extra_level(features[-1], spec, f"extra{k}", batch_norm))

  columns = {"loc": 4, "logits": m.num_classes + 1}
  outputs = {}
  for kind, width in columns.items():
    flat = []
    for k, (feature, boxes) in enumerate(zip(features, num_boxes)):
      x = keras.layers.Conv2D(boxes * width, m.head_kernel_size, padding="same",
                              name=f"level{k}_{kind}")(feature)
      flat.append(keras.layers.Reshape((-1, width), name=f"level{k}_{kind}_flat")(x))
    x = flat[0] if len(flat) == 1 else keras.layers.Concatenate(axis=1, name=f"{kind}_concat")(flat)
    # float32 under any mixed-precision policy
    outputs[kind] = keras.layers.Activation("linear", dtype="float32", name=kind)(x)
  return keras.Model(images, outputs, name=config.name)
