"""SSD300 with a ResNet-18 backbone on COCO 2017: the fast one.

ResNet-18's conv4 stage has 256 channels; the extra layers follow NVIDIA's
SSD300-ResNet plan with a 128-channel last level.
"""

from ssd_tf import defaults


def get_config():
  config = defaults.base_config()
  config.name = "ssd300_resnet18_coco"
  config.model.backbone = "resnet18"
  config.model.backbone_weights = None  # keras.applications has no ResNet-18: see README
  config.model.extra_layers = defaults.SSD300_EXTRAS[:-1] + ((128, 128, 1, "valid"),)
  return config
