"""The SSD network: backbone taps -> extra feature levels -> per-level box and class heads.

Output layout follows ``ssd_tf.anchors.default_boxes``: levels in order, cells
row-major, ``boxes_per_cell`` boxes per cell; row n of ``loc``/``logits`` belongs
to default box n.

SSDLite (model.ssdlite, the MobileNetV2 paper's; torchvision's ``ssdlite.py``): every extra level
and head is depthwise-separable with BatchNorm (epsilon model.batchnorm_epsilon) and ReLU6: an extra
level is 1x1 conv to ``mid`` -> depthwise 3x3 (stride) -> 1x1 conv to ``out``, each conv-BN-ReLU6; a
head is depthwise ``head_kernel_size`` conv-BN-ReLU6 then a 1x1 conv with bias. Their convs start
from N(0, 0.03), as torchvision's.

Layer names: the backbone is one nested layer named after it (``resnet50``,
``vgg16``...); extra levels ``extra{k}_{1,2}_{conv,bn,relu}`` (``_pad`` before a
"symmetric" conv; no ``_bn`` without model.extra_batchnorm; SSDLite adds ``extra{k}_3``,
its ``_2_conv`` is the depthwise one); heads ``level{k}_loc`` and ``level{k}_logits``
(k = 0 for the finest level; SSDLite's depthwise part before each is
``level{k}_{loc,logits}_depthwise_{conv,bn,relu}``).
Weight decay is a loss term (ssd_tf/optim.py), not kernel regularizers.
"""

import functools

import keras

from ssd_tf import anchors
from ssd_tf import batch_norm
from ssd_tf.backbones import build_backbone
from ssd_tf.backbones.layers import CONV_INIT, NORMALIZATIONS


# SSDLite's convs (torchvision's _normal_init), as a config so that each layer draws its own values.
SSDLITE_INIT = {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 0.03}}


def _pad(x, padding, name):
  """(x, the conv's padding): "symmetric" pads 1 on every side first, as PyTorch does."""
  if padding == "symmetric":
    return keras.layers.ZeroPadding2D(1, name=name)(x), "valid"
  return x, padding


def _ssdlite_conv(x, channels, kernel, stride, padding, name, norm):
  """conv (depthwise when ``channels`` is None) -> BN -> ReLU6, ``{name}_{conv,bn,relu}``."""
  if channels is None:
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False,
                                     depthwise_initializer=SSDLITE_INIT, name=f"{name}_conv")(x)
  else:
    x = keras.layers.Conv2D(channels, kernel, strides=stride, padding=padding, use_bias=False,
                            kernel_initializer=SSDLITE_INIT, name=f"{name}_conv")(x)
  return keras.layers.ReLU(6.0, name=f"{name}_relu")(norm(name=f"{name}_bn")(x))


def _ssdlite_extra_level(x, spec, name, norm):
  """SSDLite's extra level: 1x1 to ``mid``, depthwise 3x3 (stride, padding), 1x1 to ``out``."""
  mid, out, stride, padding = spec
  x = _ssdlite_conv(x, mid, 1, 1, "same", f"{name}_1", norm)
  x, padding = _pad(x, padding, f"{name}_2_pad")
  x = _ssdlite_conv(x, None, 3, stride, padding, f"{name}_2", norm)
  return _ssdlite_conv(x, out, 1, 1, "same", f"{name}_3", norm)


def _extra_level(x, spec, name, norm):
  """1x1 conv-BN-ReLU to ``mid`` channels, then 3x3 conv (stride, padding)-BN-ReLU to ``out`` channels.

  ``norm`` None: convs with biases and no BatchNorm (torchvision's SSD300-VGG16). Padding
  "symmetric" pads 1 on every side as PyTorch does; "same" pads only bottom/right when a
  stride-2 conv meets an even size (10 -> 5, 38 -> 19).
  """
  mid, out, stride, padding = spec
  conv = functools.partial(keras.layers.Conv2D, use_bias=norm is None, kernel_initializer=CONV_INIT)
  x = conv(mid, 1, name=f"{name}_1_conv")(x)
  if norm:
    x = norm(name=f"{name}_1_bn")(x)
  x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
  x, padding = _pad(x, padding, f"{name}_2_pad")
  x = conv(out, 3, strides=stride, padding=padding, name=f"{name}_2_conv")(x)
  if norm:
    x = norm(name=f"{name}_2_bn")(x)
  return keras.layers.Activation("relu", name=f"{name}_2_relu")(x)


def _check_extra_layers(config, num_taps):
  """ValueError unless taps + extra levels give one level per anchors.aspect_ratios entry."""
  m, levels = config.model, anchors.num_levels(config.anchors)
  for spec in m.extra_layers:
    if len(spec) != 4 or spec[3] not in ("same", "valid", "symmetric"):
      raise ValueError(f"model.extra_layers entries are (mid_channels, out_channels, stride, "
                       f"'same'|'valid'|'symmetric'), got {spec}")
  if num_taps + len(m.extra_layers) != levels:
    raise ValueError(
        f"backbone {m.backbone} has {num_taps} feature tap(s) and model.extra_layers adds "
        f"{len(m.extra_layers)} level(s): {num_taps + len(m.extra_layers)} levels, but "
        f"anchors.aspect_ratios lists {levels}")


def build_network(config, backbone_weights):
  """The SSD Keras network of ``config`` (see ssd_tf/defaults.py).

  ``backbone_weights``: None, "imagenet" or a weights file (config.model.backbone_weights
  when training starts; None when a checkpoint will set every weight).
  Input: ``images`` float32 [B, S, S, 3] RGB in [0, 255], S = config.model.image_size.
  Outputs: {"loc": [B, N, 4] encoded offsets (dy, dx, dh, dw), "logits": [B, N, 1 + C]},
  float32 under any mixed-precision policy; N default boxes, in ssd_tf.anchors' layout.
  """
  m = config.model
  num_boxes = anchors.boxes_per_cell(config.anchors)
  backbone = build_backbone(m.backbone, backbone_weights, m.batchnorm_momentum, m.batchnorm_synchronized,
                            taps=m.backbone_taps, variant=m.backbone_variant)
  if m.input_normalization:
    backbone = backbone._replace(normalization=NORMALIZATIONS[m.input_normalization]())

  images = keras.Input((m.image_size, m.image_size, 3), dtype="float32", name="images")
  features = backbone.taps(images)
  _check_extra_layers(config, len(features))
  if m.ssdlite and not m.extra_batchnorm:
    raise ValueError("model.ssdlite needs model.extra_batchnorm=True (SSDLite's layers are conv-BN-ReLU6)")
  norm = functools.partial(batch_norm.BatchNormalization, momentum=m.batchnorm_momentum,
                           epsilon=m.batchnorm_epsilon,
                           synchronized=m.batchnorm_synchronized) if m.extra_batchnorm else None
  extra_level = _ssdlite_extra_level if m.ssdlite else _extra_level
  for k, spec in enumerate(m.extra_layers):
    features.append(extra_level(features[-1], spec, f"extra{k}", norm))

  columns = {"loc": 4, "logits": m.num_classes + 1}
  outputs = {}
  for kind, width in columns.items():
    flat = []
    for k, (feature, boxes) in enumerate(zip(features, num_boxes)):
      if m.ssdlite:
        feature = _ssdlite_conv(feature, None, m.head_kernel_size, 1, "same", f"level{k}_{kind}_depthwise", norm)
        x = keras.layers.Conv2D(boxes * width, 1, kernel_initializer=SSDLITE_INIT, name=f"level{k}_{kind}")(feature)
      else:
        x = keras.layers.Conv2D(boxes * width, m.head_kernel_size, padding="same",
                                name=f"level{k}_{kind}")(feature)
      flat.append(keras.layers.Reshape((-1, width), name=f"level{k}_{kind}_flat")(x))
    x = flat[0] if len(flat) == 1 else keras.layers.Concatenate(axis=1, name=f"{kind}_concat")(flat)
    # float32 under any mixed-precision policy
    outputs[kind] = keras.layers.Activation("linear", dtype="float32", name=kind)(x)
  return keras.Model(images, outputs, name=config.name)


def feature_map_sizes(network):
  """The side of each level's feature map, finest first, read from the heads of a built network."""
  names, sizes = {layer.name for layer in network.layers}, []
  while f"level{len(sizes)}_loc" in names:
    sizes.append(int(network.get_layer(f"level{len(sizes)}_loc").input.shape[1]))
  return sizes
