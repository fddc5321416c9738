"""torchvision's MobileNetV3-Large state dicts into ``ssd_tf.backbones.mobilenet`` models.

Names (torchvision's ``mobilenet_v3_large().features``): stem_conv, stem_bn -> features.0.{0,1};
block{i}_{part}_conv, _bn -> features.{i}.block.{j}.{0,1}, where j counts the block's parts in order
(expansion when present, depthwise, squeeze-excite when present, projection); block{i}_se_reduce,
_se_expand -> features.{i}.block.{j}.fc1, .fc2; last_conv, last_bn -> features.16.{0,1}. Depthwise
kernels [C, 1, k, k] -> [k, k, C, 1]. The classifier (classifier.*) is left unused.
"""

import re

import keras

from ssd_tf.backbones import mobilenet
from ssd_tf.convert import weights

UNUSED_PREFIXES = ("classifier.",)
_BLOCK_LAYER = re.compile(r"block(\d+)_(expand|depthwise|se|project)_(conv|bn|reduce|expand)")
_FIXED = {"stem_conv": "features.0.0", "stem_bn": "features.0.1",
          "last_conv": f"features.{len(mobilenet.BLOCKS) + 1}.0", "last_bn": f"features.{len(mobilenet.BLOCKS) + 1}.1"}
_LEAF = {"conv": "0", "bn": "1", "reduce": "fc1", "expand": "fc2"}


def torch_name(layer_name, layer_names):
  """The torchvision module name of Keras layer ``layer_name`` of a model whose layers are ``layer_names``
  (e.g. block4_se_reduce -> features.4.block.2.fc1)."""
  if layer_name in _FIXED:
    return _FIXED[layer_name]
  match = _BLOCK_LAYER.fullmatch(layer_name)
  if not match:
    raise ValueError(f"layer {layer_name!r} has no torchvision MobileNetV3 counterpart")
  block, part, leaf = match.groups()
  parts = [p for p, present in (("expand", f"block{block}_expand_conv" in layer_names), ("depthwise", True),
                                ("se", f"block{block}_se_reduce" in layer_names), ("project", True)) if present]
  return f"features.{block}.block.{parts.index(part)}.{_LEAF[leaf]}"


def assign_mobilenet(assign, model, key=lambda name: name):
  """Sets every weight of MobileNetV3 ``model`` through ``assign`` (a weights.Assigner), reading the entry
  ``key(torchvision module name)``: the identity for torchvision's ImageNet file, a renaming for SSDLite."""
  names = {layer.name for layer in model.layers}
  for layer in model.layers:
    if not layer.weights:
      continue
    module = key(torch_name(layer.name, names))
    if isinstance(layer, keras.layers.BatchNormalization):
      assign.batch_norm(layer, module)
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
      assign.depthwise_conv(layer, module)
    else:
      assign.conv(layer, module)


def load_mobilenet(model, state_dict, source="state dict"):
  """Sets every weight of ``model`` (``mobilenet.build_mobilenet_v3_large``) from torchvision
  mobilenet_v3_large's ``state_dict`` ({name: array}); returns the names of the unused entries
  (classifier.*). The ImageNet file has the full tail: a reduced-tail model is named in the error.
  """
  state = weights.StateDict(state_dict, f"{source} (as torchvision mobilenet_v3_large)")
  last = model.get_layer("last_conv").kernel.shape[-1]
  stored = state_dict.get(_FIXED["last_conv"] + ".weight")
  if stored is not None and stored.shape[0] != last:
    variant = "reduced_tail" if stored.shape[0] < last else "''"
    raise ValueError(f"{source}: its last conv has {stored.shape[0]} channels, the model's {last}: set "
                     f"model.backbone_variant={variant}")
  assign = weights.Assigner(model, state)
  assign_mobilenet(assign, model)
  assign.check_complete()
  return state.check_consumed(UNUSED_PREFIXES)
