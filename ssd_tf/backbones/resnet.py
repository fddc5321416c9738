"""ResNet backbones cut after conv4 (torchvision's layer3), as in NVIDIA's SSD300-ResNet.

Taps (``TAPS``):
- ``("conv4",)`` (NVIDIA's design, the default): the first block of conv4 runs at
  stride 1, so the single tap has stride 8: 38x38 for a 300 px input, 64x64 for
  512 px. Channels: 256 for ResNet-18/34 (BasicBlock), 1024 for ResNet-50/101.
- ``("conv3", "conv4")``: conv3 (stride 8; 128 / 512 channels) and conv4 at its
  ImageNet stride 16, like the paper's VGG taps. conv4 then computes on a 4x
  smaller map: for ResNet-18 the backbone needs about half the FLOPs.

Variants (``VARIANTS``), with the same layer names (keras.applications':
conv1_conv, conv{stage}_block{i}_{j}_conv / _bn, ``_0_`` for the projection shortcut):
- "keras" (ResNet-50/101, their default): keras.applications.ResNet50/101 layer
  for layer, so its ImageNet weights transfer by name. v1 bottleneck: stride on
  the block's first 1x1 conv; convs with biases; BatchNorm epsilon 1.001e-5;
  input normalization keras.applications' 'caffe' mode.
- "torchvision" (the only one for ResNet-18/34): torchvision's ResNet, ResNet-50/101
  as "v1.5" (stride on the 3x3 conv). No conv biases; BatchNorm epsilon 1e-5;
  stride-2 3x3 convs pad 1 on every side as PyTorch does; torch mean/std
  normalization. ``ssd_tf.convert.torchvision_resnet`` loads its .pth weights.
"""

import functools

import keras

from ssd_tf import batch_norm
from ssd_tf.backbones import layers

# Blocks per stage conv2, conv3, conv4 (conv5 is not used by SSD).
BLOCKS = {18: (2, 2, 2), 34: (3, 4, 6), 50: (3, 4, 6), 101: (3, 4, 23)}
_STAGE_WIDTHS = (64, 128, 256)
_KERAS_APPLICATIONS = {50: "ResNet50", 101: "ResNet101"}
# The ImageNet files keras.applications.ResNet50/101(include_top=False) download: name and md5,
# as keras/src/applications/resnet.py has them.
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
IMAGENET_FILES = {
    50: ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "4d473c1dd8becc155b73f8504c6f6626"),
    101: ("resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5", "88cf7a10940856eca736dc7b7e228a21"),
}
VARIANTS = ("keras", "torchvision")
TAPS = (("conv4",), ("conv3", "conv4"))


def _is_bottleneck(depth):
  return depth >= 50


def resolve_variant(depth, variant=""):
  """``variant`` ("" for the depth's default: "keras" for ResNet-50/101, "torchvision" for
  ResNet-18/34) checked against ``depth``; returns one of ``VARIANTS``."""
  if variant not in ("",) + VARIANTS:
    raise ValueError(f"resnet{depth} variant (model.backbone_variant) must be '', 'keras' or "
                     f"'torchvision', got {variant!r}")
  if variant == "keras" and not _is_bottleneck(depth):
    raise ValueError(f"resnet{depth} exists only as variant 'torchvision' (keras.applications has no "
                     f"ResNet-{depth}), got model.backbone_variant='keras'")
  return variant or ("keras" if _is_bottleneck(depth) else "torchvision")


def _shortcut(x, channels, stride, name, conv, norm):
  if stride == 1 and x.shape[-1] == channels:
    return x
  x = conv(channels, 1, strides=stride, name=f"{name}_0_conv")(x)
  return norm(name=f"{name}_0_bn")(x)


def _conv3x3(x, channels, stride, name, conv):
  """3x3 conv ``{name}_conv`` padding 1 on every side, as torch does: Keras' "same" would pad only
  bottom/right at stride 2 on even sizes, so stride 2 is ``{name}_pad`` then a "valid" conv."""
  if stride == 1:
    return conv(channels, 3, padding="same", name=f"{name}_conv")(x)
  x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
  return conv(channels, 3, strides=stride, name=f"{name}_conv")(x)


def _basic_block(x, width, stride, name, conv, norm):
  """torchvision BasicBlock: 3x3 (stride) -> 3x3, output ``width`` channels."""
  shortcut = _shortcut(x, width, stride, name, conv, norm)
  y = _conv3x3(x, width, stride, f"{name}_1", conv)
  y = norm(name=f"{name}_1_bn")(y)
  y = keras.layers.Activation("relu", name=f"{name}_1_relu")(y)
  y = _conv3x3(y, width, 1, f"{name}_2", conv)
  y = norm(name=f"{name}_2_bn")(y)
  y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
  return keras.layers.Activation("relu", name=f"{name}_out")(y)


def _bottleneck_block(x, width, stride, name, conv, norm, stride_on_3x3):
  """Bottleneck 1x1 -> 3x3 -> 1x1, output 4 * ``width`` channels; the stride is on the first 1x1
  (keras.applications' ResNet v1) or, ``stride_on_3x3``, on the 3x3 (torchvision's v1.5)."""
  stride_1x1, stride_3x3 = (1, stride) if stride_on_3x3 else (stride, 1)
  shortcut = _shortcut(x, 4 * width, stride, name, conv, norm)
  y = conv(width, 1, strides=stride_1x1, name=f"{name}_1_conv")(x)
  y = norm(name=f"{name}_1_bn")(y)
  y = keras.layers.Activation("relu", name=f"{name}_1_relu")(y)
  y = _conv3x3(y, width, stride_3x3, f"{name}_2", conv)
  y = norm(name=f"{name}_2_bn")(y)
  y = keras.layers.Activation("relu", name=f"{name}_2_relu")(y)
  y = conv(4 * width, 1, name=f"{name}_3_conv")(y)
  y = norm(name=f"{name}_3_bn")(y)
  y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
  return keras.layers.Activation("relu", name=f"{name}_out")(y)


def build_resnet(depth, taps=("conv4",), conv4_stride=None, batchnorm_momentum=0.99,
                 batchnorm_synchronized=False, variant=""):
  """ResNet-``depth`` stem..conv4 as a Keras model named ``resnet{depth}``.

  ``variant``: one of ``VARIANTS``, or "" for the depth's default (``resolve_variant``).
  Input: images [B, H, W, 3] already normalized by ``normalization(depth, variant)``.
  Output: list of the ``taps`` stage outputs (one of ``TAPS``), finest first:
  conv3 [B, ceil(H/8), ceil(W/8), C3], conv4 [B, ceil(H/s), ceil(W/s), C4] with
  s = 8 for ``("conv4",)`` and 16 for ``("conv3", "conv4")``. ``conv4_stride``
  (1 or 2) overrides the stride of conv4's first block (2: the ImageNet network).
  """
  if depth not in BLOCKS:
    raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS)}, got {depth}")
  taps = tuple(taps)
  if taps not in TAPS:
    raise ValueError(f"resnet{depth} taps must be one of {', '.join(map(str, TAPS))}, got {taps}")
  keras_v1 = resolve_variant(depth, variant) == "keras"
  if conv4_stride is None:
    conv4_stride = 1 if taps == ("conv4",) else 2
  conv = functools.partial(keras.layers.Conv2D, use_bias=keras_v1, kernel_initializer=layers.CONV_INIT)
  norm = functools.partial(batch_norm.BatchNormalization, epsilon=1.001e-5 if keras_v1 else 1e-5,
                           momentum=batchnorm_momentum, synchronized=batchnorm_synchronized)
  if _is_bottleneck(depth):
    block = functools.partial(_bottleneck_block, stride_on_3x3=not keras_v1)
  else:
    block = _basic_block

  images = keras.Input((None, None, 3), name="normalized_images")
  x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(images)
  x = conv(64, 7, strides=2, name="conv1_conv")(x)
  x = norm(name="conv1_bn")(x)
  x = keras.layers.Activation("relu", name="conv1_relu")(x)
  x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)  # zeros are safe: inputs are post-ReLU
  x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
  outputs = []
  for stage, (blocks, width, stride) in enumerate(zip(BLOCKS[depth], _STAGE_WIDTHS, (1, 2, conv4_stride)),
                                                  start=2):
    for i in range(blocks):
      x = block(x, width, stride if i == 0 else 1, f"conv{stage}_block{i + 1}", conv, norm)
    if f"conv{stage}" in taps:
      outputs.append(x)
  return keras.Model(images, outputs, name=f"resnet{depth}")


def normalization(depth, variant=""):
  """The input normalization layer the ResNet-``depth`` ``variant`` weights expect (RGB [0, 255] in):
  'caffe' for "keras", torch mean/std for "torchvision"."""
  if resolve_variant(depth, variant) == "keras":
    return layers.caffe_normalization()
  return layers.torch_normalization()


def copy_keras_applications_weights(model, source):
  """Copies a keras.applications ResNet50/101 ``source`` into ``model`` by layer name.

  Works whatever ``model``'s conv4 stride: strides do not change kernel shapes.
  """
  layers.copy_layer_weights(model, source, layers.weighted_layer_names(model))


def download_imagenet_weights(depth):
  """Downloads (layers.download_imagenet_file) the file keras.applications.ResNet50/101
  (include_top=False) loads for weights="imagenet"; returns its path."""
  if depth not in _KERAS_APPLICATIONS:
    raise ValueError(
        f"keras.applications has no ImageNet weights for resnet{depth} (only ResNet50/101). Set "
        f"model.backbone_weights to a torchvision .pth file, a .weights.h5 file saved from "
        f"ssd_tf.backbones.build_backbone('resnet{depth}').model, or None to start from random weights")
  name, md5 = IMAGENET_FILES[depth]
  return layers.download_imagenet_file(name, IMAGENET_URL + name, md5)


def load_imagenet_weights_file(model, depth, path):
  """Loads keras.applications' ResNet50/101 ImageNet file ``path`` (``download_imagenet_weights``)
  into ``model``, a ResNet-``depth`` of variant "keras"."""
  source = getattr(keras.applications, _KERAS_APPLICATIONS[depth])(include_top=False, weights=path)
  copy_keras_applications_weights(model, source)


def load_imagenet_weights(model, depth, variant=""):
  """Downloads keras.applications' ImageNet ResNet-50/101 and copies it into ``model``."""
  if depth in _KERAS_APPLICATIONS and resolve_variant(depth, variant) != "keras":
    raise ValueError(f"backbone_weights='imagenet' are keras.applications' ResNet{depth}, variant 'keras'; "
                     f"for model.backbone_variant='torchvision' set model.backbone_weights to a torchvision "
                     f".pth file")
  load_imagenet_weights_file(model, depth, download_imagenet_weights(depth))
