"""torchvision's ResNet state dicts into ``ssd_tf.backbones.resnet`` models of variant "torchvision".

Names: conv1, bn1 -> conv1_conv, conv1_bn; layer{s-1}.{i-1}.conv{j}, .bn{j} ->
conv{s}_block{i}_{j}_conv, _bn; layer{s-1}.{i-1}.downsample.0, .1 -> conv{s}_block{i}_0_conv, _0_bn.
Conv weights [O, I, kh, kw] -> kernels [kh, kw, I, O]; BatchNorm weight, bias, running_mean,
running_var -> gamma, beta, moving_mean, moving_variance; num_batches_tracked is dropped.
SSD stops after layer3: layer4.* and fc.* are left unused.
"""

import re

import keras

from ssd_tf.convert import weights

UNUSED_PREFIXES = ("layer4.", "fc.")
_BLOCK_LAYER = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)")


def torch_name(layer_name):
  """The torchvision module name of Keras layer ``layer_name`` (e.g. conv3_block1_0_bn -> layer2.0.downsample.1)."""
  if layer_name in ("conv1_conv", "conv1_bn"):
    return "conv1" if layer_name == "conv1_conv" else "bn1"
  match = _BLOCK_LAYER.fullmatch(layer_name)
  if not match:
    raise ValueError(f"layer {layer_name!r} has no torchvision ResNet counterpart")
  stage, block, j, kind = match.groups()
  module = f"downsample.{0 if kind == 'conv' else 1}" if j == "0" else f"{kind}{j}"
  return f"layer{int(stage) - 1}.{int(block) - 1}.{module}"


def assign_resnet(assign, model, key=lambda name: name):
  """Sets every weight of ResNet ``model`` through ``assign`` (a weights.Assigner), reading the entry
  ``key(torchvision module name)``: the identity for torchvision's files, a renaming for checkpoints
  that hold a torchvision ResNet under other names (NVIDIA's SSD)."""
  if model.get_layer("conv1_conv").use_bias:
    raise ValueError(f"{assign.state.source}: {model.name} is variant 'keras' (convs with biases); torchvision "
                     f"weights need model.backbone_variant='torchvision'")
  for layer in model.layers:
    if layer.weights:
      module = key(torch_name(layer.name))
      if isinstance(layer, keras.layers.BatchNormalization):
        assign.batch_norm(layer, module)
      else:
        assign.conv(layer, module)


def load_resnet(model, state_dict, depth, source="state dict"):
  """Sets every weight of ``model`` (``build_resnet(depth, variant="torchvision")``, any taps and
  conv4 stride) from torchvision resnet{depth}'s ``state_dict`` ({name: array}, e.g.
  ``pth.read_state_dict``); returns the names of the unused entries (layer4.*, fc.*).

  A missing entry, a shape that differs or any other entry left over: ValueError, one line naming
  ``source`` and the entries with their shapes.
  """
  if model.name != f"resnet{depth}":
    raise ValueError(f"load_resnet: torchvision resnet{depth} weights given for model {model.name}")
  state = weights.StateDict(state_dict, f"{source} (as torchvision resnet{depth})")
  assign = weights.Assigner(model, state)
  assign_resnet(assign, model)
  assign.check_complete()
  return state.check_consumed(UNUSED_PREFIXES)
