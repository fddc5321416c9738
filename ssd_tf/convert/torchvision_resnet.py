"""torchvision's ResNet state dicts into ``ssd_tf.backbones.resnet`` models of variant "torchvision".

Names: conv1, bn1 -> conv1_conv, conv1_bn; layer{s-1}.{i-1}.conv{j}, .bn{j} ->
conv{s}_block{i}_{j}_conv, _bn; layer{s-1}.{i-1}.downsample.0, .1 -> conv{s}_block{i}_0_conv, _0_bn.
Conv weights [O, I, kh, kw] -> kernels [kh, kw, I, O]; BatchNorm weight, bias, running_mean,
running_var -> gamma, beta, moving_mean, moving_variance; num_batches_tracked is dropped.
SSD stops after layer3: layer4.* and fc.* are left unused.
"""

import re

import keras
import numpy as np

from ssd_tf.convert import pth

UNUSED_PREFIXES = ("layer4.", "fc.")
_BLOCK_LAYER = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)")
_BN_LEAVES = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, moving_mean, moving_variance


def torch_name(layer_name):
  """The torchvision module of Keras layer ``layer_name``, e.g. conv3_block1_0_bn -> layer2.0.downsample.1."""
  if layer_name in ("conv1_conv", "conv1_bn"):
    return "conv1" if layer_name == "conv1_conv" else "bn1"
  match = _BLOCK_LAYER.fullmatch(layer_name)
  if not match:
    raise ValueError(f"layer {layer_name!r} has no torchvision ResNet counterpart")
  stage, block, j, kind = match.groups()
  module = f"downsample.{0 if kind == 'conv' else 1}" if j == "0" else f"{kind}{j}"
  return f"layer{int(stage) - 1}.{int(block) - 1}.{module}"


def load_resnet(model, state_dict, depth, source="state dict"):
  """Sets every weight of ``model`` (``build_resnet(depth, variant="torchvision")``, any taps and
  conv4 stride) from torchvision resnet{depth}'s ``state_dict`` ({name: array}, e.g.
  ``pth.read_state_dict``); returns the names of the unused entries (layer4.*, fc.*).

  A missing entry, a shape that differs or any other entry left over: ValueError, one line naming
  ``source`` and the entries with their shapes.
  """
  if model.name != f"resnet{depth}":
    raise ValueError(f"load_resnet: torchvision resnet{depth} weights given for model {model.name}")
  if model.get_layer("conv1_conv").use_bias:
    raise ValueError(f"load_resnet: {model.name} is variant 'keras' (convs with biases); torchvision weights "
                     f"need build_resnet({depth}, variant='torchvision')")
  state = pth.StateDict(state_dict, f"{source} (as torchvision resnet{depth})")
  weights_set = 0
  for layer in model.layers:
    if not layer.weights:
      continue
    name = torch_name(layer.name)
    if isinstance(layer, keras.layers.BatchNormalization):
      values = [state.take(f"{name}.{leaf}", layer.gamma.shape) for leaf in _BN_LEAVES]
      state.discard(f"{name}.num_batches_tracked")
    else:
      height, width, inputs, outputs = layer.kernel.shape
      values = [np.transpose(state.take(f"{name}.weight", (outputs, inputs, height, width)), (2, 3, 1, 0))]
    layer.set_weights(values)
    weights_set += len(values)
  assert weights_set == len(model.weights), f"set {weights_set} of {model.name}'s {len(model.weights)} weights"
  return state.check_consumed(UNUSED_PREFIXES)
