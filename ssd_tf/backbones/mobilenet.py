"""MobileNetV3-Large as torchvision builds it (``torchvision.models.mobilenet_v3_large``), cut for SSDLite.

Blocks (Table 1 of the MobileNetV3 paper, torchvision's ``_mobilenet_v3_conf``): a 3x3 stride-2 stem
(16 channels, hard-swish), 15 inverted residual blocks, then a 1x1 conv to 6x the last block's width
(hard-swish). A block: 1x1 expansion conv-BN-activation (absent when the expansion equals the input
width), depthwise k x k conv-BN-activation (the block's stride), squeeze-excite (average pool, 1x1 conv
to expansion / 4 rounded to a multiple of 8, ReLU, 1x1 conv back, hard-sigmoid, scale) on the blocks
that have it, 1x1 projection conv-BN, plus the input when stride 1 and widths equal. BatchNorm epsilon
0.001; convs without biases except squeeze-excite's; stride-2 convs pad (k - 1) / 2 on every side as
PyTorch does.

Variants (model.backbone_variant): "" the ImageNet network (torchvision's default; its .pth file loads
here), "reduced_tail": the last three blocks and the final conv at half width (80/480 in place of
160/960; Table 6 of the paper), as torchvision's COCO SSDLite builds it.

Taps (SSDLite, section 6.3 of the paper): the expansion output of block 13, the first stride-32 block
(stride 16, 672 channels: 20x20 at 320 px), and the final conv (stride 32, 960 or 480 channels: 10x10).
Layer names: ``stem_{conv,bn,act}``, ``block{i}_{expand,depthwise,project}_{conv,bn,act}`` (i = 1..15,
``_pad`` before a stride-2 depthwise conv), ``block{i}_se_{pool,reduce,expand,scale}``, ``block{i}_add``,
``last_{conv,bn,act}``. Input normalization: torch mean/std (the ImageNet weights'); SSDLite overrides it
with "tf" ([-1, 1]).
"""

import functools

import keras

from ssd_tf import batch_norm
from ssd_tf.backbones import layers

VARIANTS = ("", "reduced_tail")
EPSILON = 0.001
# (kernel, expansion, output channels, squeeze-excite, activation, stride) of blocks 1..15; widths of the
# last three blocks are halved in the reduced tail.
BLOCKS = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hard_swish", 2),
    (3, 200, 80, False, "hard_swish", 1),
    (3, 184, 80, False, "hard_swish", 1),
    (3, 184, 80, False, "hard_swish", 1),
    (3, 480, 112, True, "hard_swish", 1),
    (3, 672, 112, True, "hard_swish", 1),
    (5, 672, 160, True, "hard_swish", 2),
    (5, 960, 160, True, "hard_swish", 1),
    (5, 960, 160, True, "hard_swish", 1),
)
C4_BLOCK = 13  # the first stride-32 block: SSDLite taps its expansion output
STEM_CHANNELS = 16


def make_divisible(value, divisor=8):
  """``value`` rounded to the nearest multiple of ``divisor``, never below 90% of it (torchvision's rule)."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


def block_specs(variant=""):
  """BLOCKS with the tail widths of ``variant`` (one of VARIANTS)."""
  if variant not in VARIANTS:
    raise ValueError(f"mobilenet_v3_large variant (model.backbone_variant) must be '' or 'reduced_tail', "
                     f"got {variant!r}")
  divider = 2 if variant == "reduced_tail" else 1
  specs = []
  for i, (kernel, expansion, out, se, activation, stride) in enumerate(BLOCKS, start=1):
    if i >= C4_BLOCK:
      out //= divider
    if i > C4_BLOCK:
      expansion //= divider
    specs.append((kernel, expansion, out, se, activation, stride))
  return tuple(specs)


def hard_swish(x):
  """x * relu6(x + 3) / 6, written so that TFLite's converter keeps it as ADD (ReLU6 fused) and MUL: its
  fused HARD_SWISH op has no int8 kernel in XNNPACK, which split the int8 SSDLite320 network into 23 delegate
  pieces (22.4 -> 13.8 ms; float32 11.7 -> 13.4 ms; Zen 3 EPYC, cpu family 25, 2 threads, 2026-12-08, a one-off
  timing of tflite_export.convert(..., post_process=False); tests/test_tflite.py checks the pieces)."""
  return keras.ops.relu6(x + 3.0) * x * (1.0 / 6.0)


def _conv_bn_act(x, channels, kernel, stride, name, norm, activation, depthwise=False):
  """conv (``{name}_conv``; depthwise when asked) -> BN -> activation (None: none); PyTorch's padding."""
  if stride > 1:
    x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
  padding = "valid" if stride > 1 else "same"
  if depthwise:
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False,
                                     depthwise_initializer=layers.CONV_INIT, name=f"{name}_conv")(x)
  else:
    x = keras.layers.Conv2D(channels, kernel, strides=stride, padding=padding, use_bias=False,
                            kernel_initializer=layers.CONV_INIT, name=f"{name}_conv")(x)
  x = norm(name=f"{name}_bn")(x)
  if activation == "hard_swish":
    activation = hard_swish
  return keras.layers.Activation(activation, name=f"{name}_act")(x) if activation else x


def _squeeze_excite(x, name):
  channels = x.shape[-1]
  s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
  s = keras.layers.Conv2D(make_divisible(channels // 4), 1, activation="relu", kernel_initializer=layers.CONV_INIT,
                          name=f"{name}_reduce")(s)
  s = keras.layers.Conv2D(channels, 1, activation="hard_sigmoid", kernel_initializer=layers.CONV_INIT,
                          name=f"{name}_expand")(s)
  return keras.layers.Multiply(name=f"{name}_scale")([x, s])


def build_mobilenet_v3_large(variant="", batchnorm_momentum=0.99, batchnorm_synchronized=False):
  """MobileNetV3-Large stem..last conv as a Keras model named ``mobilenet_v3_large``.

  Input: images [B, H, W, 3] normalized by ``normalization()``. Output: [block 13's expansion
  [B, H/16, W/16, 672], the last conv [B, H/32, W/32, 960 (480 reduced tail)]] (sides rounded up).
  """
  norm = functools.partial(batch_norm.BatchNormalization, epsilon=EPSILON, momentum=batchnorm_momentum,
                           synchronized=batchnorm_synchronized)
  images = keras.Input((None, None, 3), name="normalized_images")
  x = _conv_bn_act(images, STEM_CHANNELS, 3, 2, "stem", norm, "hard_swish")
  taps = []
  for i, (kernel, expansion, out, se, activation, stride) in enumerate(block_specs(variant), start=1):
    name, inputs = f"block{i}", x
    if expansion != x.shape[-1]:
      x = _conv_bn_act(x, expansion, 1, 1, f"{name}_expand", norm, activation)
    if i == C4_BLOCK:
      taps.append(x)
    x = _conv_bn_act(x, expansion, kernel, stride, f"{name}_depthwise", norm, activation, depthwise=True)
    if se:
      x = _squeeze_excite(x, f"{name}_se")
    x = _conv_bn_act(x, out, 1, 1, f"{name}_project", norm, None)
    if stride == 1 and inputs.shape[-1] == out:
      x = keras.layers.Add(name=f"{name}_add")([inputs, x])
  taps.append(_conv_bn_act(x, 6 * x.shape[-1], 1, 1, "last", norm, "hard_swish"))
  return keras.Model(images, taps, name="mobilenet_v3_large")


def normalization():
  """The input normalization torchvision's ImageNet MobileNetV3 weights expect: torch mean/std."""
  return layers.torch_normalization()
