"""NVIDIA DeepLearningExamples' SSD300-ResNet50 (PyTorch/Detection/SSD) -> an ssd_tf SSD.

The published checkpoint is nvidia_ssdpyt_amp_200703.pt (about 0.25 box AP on COCO val2017);
configs/ssd300_resnet50_nvidia.py describes the model. Its training checkpoints hold the state
dict under "model" (ssd_tf.convert.pth reads either form, with or without "module.").
Keys: ``feature_extractor.feature_extractor.{0,1,4,5,6}`` torchvision ResNet-50's conv1, bn1,
layer1..layer3 (layer3's first block at stride 1); ``additional_blocks.{0..4}.{0,1,3,4}`` the
extra levels' conv, BN, conv, BN; ``loc.{0..5}`` and ``conf.{0..5}`` the heads. NVIDIA views a
head's [B, A*K, H, W] output as [B, K, A*H*W]: channel k*A + a is column k of box a, and boxes
run anchor by anchor over the map; ssd_tf's channel is a*K + k with boxes cell by cell, and its
box offsets are (dy, dx, dh, dw) where NVIDIA's are (dx, dy, dw, dh). Permuting the head
channels makes the two networks compute the same boxes, in ssd_tf's order.
"""

from ssd_tf.convert import torchvision_resnet
from ssd_tf.convert import weights
from ssd_tf.label_map import LabelMap

KEY = "feature_extractor.feature_extractor.0.weight"  # identifies the format
_PREFIX = "feature_extractor.feature_extractor."
# torchvision ResNet module -> its index among the first children NVIDIA keeps.
_BACKBONE = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6"}


def label_map():
  """NVIDIA's 80 contiguous COCO labels (sorted category ids, as ssd_tf prepares COCO)."""
  return LabelMap.coco()


def _backbone_key(torchvision_module):
  """torchvision ResNet module name (conv1, layer2.0.conv1...) -> its name in NVIDIA's state dict."""
  first, _, rest = torchvision_module.partition(".")
  return f"{_PREFIX}{_BACKBONE[first]}" + (f".{rest}" if rest else "")


def load(ssd, state):
  """Sets every weight of ``ssd`` (an SSD of configs/ssd300_resnet50_nvidia.py) from ``state``
  (a weights.StateDict); every key must be used."""
  network, assign = ssd.network, weights.Assigner(ssd.network, state)
  torchvision_resnet.assign_resnet(assign, network.get_layer("resnet50"), key=_backbone_key)
  for k in range(len(ssd.config.model.extra_layers)):
    for j, (conv, norm) in enumerate((("0", "1"), ("3", "4")), start=1):
      assign.conv(network.get_layer(f"extra{k}_{j}_conv"), f"additional_blocks.{k}.{conv}")
      assign.batch_norm(network.get_layer(f"extra{k}_{j}_bn"), f"additional_blocks.{k}.{norm}")
  for level, boxes in enumerate(ssd.boxes_per_cell):
    assign.conv(network.get_layer(f"level{level}_loc"), f"loc.{level}",
                weights.head_channel_order(boxes, 4, "column_major", weights.OFFSETS_FROM_XY))
    assign.conv(network.get_layer(f"level{level}_logits"), f"conf.{level}",
                weights.head_channel_order(boxes, ssd.num_classes + 1, "column_major"))
  assign.check_complete()
  state.check_consumed()
