"""torchvision's SSD300-VGG16 (``torchvision.models.detection.ssd300_vgg16``) -> an ssd_tf SSD.

The published COCO model is ``SSD300_VGG16_Weights.COCO_V1`` (ssd300_vgg16_coco-b556d3b4.pth,
25.1 box AP on COCO val2017); configs/ssd300_vgg16_torchvision.py describes it. Its state dict:
``backbone.features.{0..21}`` conv1_1..conv4_3, ``backbone.scale_weight`` the conv4_3 L2Norm
scale, ``backbone.extra.0.{1,3,5}`` conv5_1..5_3, ``backbone.extra.0.7.{1,3}`` conv6/conv7,
``backbone.extra.{1..4}.{0,2}`` the extra levels (convs with biases, no BatchNorm),
``head.{regression,classification}_head.module_list.{0..5}`` the heads, channels ordered
box by box as ssd_tf's, box offsets (dx, dy, dw, dh) where ssd_tf has (dy, dx, dh, dw), and
91 class columns indexed by COCO category id (10 of them unused).
"""

from ssd_tf.backbones import vgg
from ssd_tf.convert import weights
from ssd_tf.label_map import COCO_CATEGORIES, LabelMap, UNUSED_NAME

KEY = "backbone.features.0.weight"  # identifies the format
# torchvision.models.vgg16 `features` indices of the 13 convs, in vgg.CONV_LAYERS order.
_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)
_CONV5_INDICES = (1, 3, 5)  # in backbone.extra.0 (after pool4)


def label_map():
  """The 90 labels of torchvision's COCO columns 1..90: label i is COCO category id i, the 10
  ids COCO does not use named label_map.UNUSED_NAME (as torchvision names them)."""
  names = dict(COCO_CATEGORIES)
  return LabelMap([dict(label=i, category_id=i, name=names.get(i, UNUSED_NAME)) for i in range(1, 91)])


def load(ssd, state):
  """Sets every weight of ``ssd`` (an SSD of configs/ssd300_vgg16_torchvision.py) from ``state``
  (a weights.StateDict); every key must be used."""
  network, assign = ssd.network, weights.Assigner(ssd.network, state)
  backbone = network.get_layer("vgg16")
  sources = [f"backbone.features.{i}" for i in _CONV_INDICES] + [f"backbone.extra.0.{i}" for i in _CONV5_INDICES]
  for name, prefix in zip(vgg.CONV_LAYERS, sources):
    assign.conv(backbone.get_layer(name), prefix)
  norm = backbone.get_layer("conv4_3_norm")
  assign.set(norm, [state.take("backbone.scale_weight", norm.scale.shape)])
  assign.conv(backbone.get_layer("conv6"), "backbone.extra.0.7.1")
  assign.conv(backbone.get_layer("conv7"), "backbone.extra.0.7.3")
  for k in range(len(ssd.config.model.extra_layers)):
    assign.conv(network.get_layer(f"extra{k}_1_conv"), f"backbone.extra.{k + 1}.0")
    assign.conv(network.get_layer(f"extra{k}_2_conv"), f"backbone.extra.{k + 1}.2")
  for level, boxes in enumerate(ssd.boxes_per_cell):
    assign.conv(network.get_layer(f"level{level}_loc"), f"head.regression_head.module_list.{level}",
                weights.head_channel_order(boxes, 4, "box_major", weights.OFFSETS_FROM_XY))
    assign.conv(network.get_layer(f"level{level}_logits"), f"head.classification_head.module_list.{level}")
  assign.check_complete()
  state.check_consumed()
