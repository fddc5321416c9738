"""torchvision's SSDLite320-MobileNetV3-Large (``torchvision.models.detection.ssdlite320_mobilenet_v3_large``)
-> an ssd_tf SSD.

The published COCO model is ``SSDLite320_MobileNet_V3_Large_Weights.COCO_V1``
(ssdlite320_mobilenet_v3_large_coco-a79551df.pth, 21.3 box AP on COCO val2017, 3.4 M parameters);
configs/ssdlite320_mobilenet_v3_large_torchvision.py describes it. Its state dict: the reduced-tail
MobileNetV3 split at block 13's expansion, ``backbone.features.0.{0..12}`` = features 0..12 and
``backbone.features.0.13`` = block 13's expansion, ``backbone.features.1.0.{1,2,3}`` = the rest of block
13 (depthwise, squeeze-excite, projection; the slice keeps block 13's indices) and ``backbone.features.1.{1,2,3}`` = features 14..16;
``backbone.extra.{k}.{0,1,2}.{0,1}`` the extra levels' conv and BatchNorm;
``head.{regression,classification}_head.module_list.{level}.0.{0,1}`` the depthwise conv-BN and
``.1`` the 1x1 conv, channels ordered box by box as ssd_tf's, box offsets (dx, dy, dw, dh), 91 class
columns indexed by COCO category id (as torchvision's SSD300).
"""

import re

from ssd_tf.backbones import mobilenet
from ssd_tf.convert import torchvision_mobilenet
from ssd_tf.convert import torchvision_ssd
from ssd_tf.convert import weights

KEY = "backbone.features.0.0.0.weight"  # identifies the format
label_map = torchvision_ssd.label_map
_BLOCK = re.compile(r"features\.(\d+)\.(.*)")


def backbone_key(name):
  """SSDLite's name of torchvision MobileNetV3 module ``name`` (e.g. features.13.block.1.0 ->
  backbone.features.1.0.1.0, features.16.0 -> backbone.features.1.3.0)."""
  index, rest = _BLOCK.fullmatch(name).groups()
  index, c4 = int(index), mobilenet.C4_BLOCK
  if index < c4:
    return f"backbone.features.0.{index}.{rest}"
  if index > c4:
    return f"backbone.features.1.{index - c4}.{rest}"
  part, leaf = re.fullmatch(r"block\.(\d+)\.(.*)", rest).groups()
  if part == "0":
    return f"backbone.features.0.{c4}.{leaf}"
  return f"backbone.features.1.0.{part}.{leaf}"  # a slice of a Sequential keeps its keys


def load(ssd, state):
  """Sets every weight of ``ssd`` (an SSD of configs/ssdlite320_mobilenet_v3_large_torchvision.py) from
  ``state`` (a weights.StateDict); every key must be used."""
  network, assign = ssd.network, weights.Assigner(ssd.network, state)
  torchvision_mobilenet.assign_mobilenet(assign, network.get_layer("mobilenet_v3_large"), backbone_key)
  for k in range(len(ssd.config.model.extra_layers)):
    for j in range(3):
      assign.conv_bn(network, f"extra{k}_{j + 1}", f"backbone.extra.{k}.{j}")
  for level, boxes in enumerate(ssd.boxes_per_cell):
    for kind, head, order in (("loc", "regression", weights.head_channel_order(boxes, 4, "box_major",
                                                                              weights.OFFSETS_FROM_XY)),
                              ("logits", "classification", None)):
      prefix = f"head.{head}_head.module_list.{level}"
      assign.conv_bn(network, f"level{level}_{kind}_depthwise", f"{prefix}.0")
      assign.conv(network.get_layer(f"level{level}_{kind}"), f"{prefix}.1", order)
  assign.check_complete()
  state.check_consumed()
