"""SSD300 with the paper's VGG-16 backbone on COCO 2017.

Taps: L2-normalized conv4_3 (38x38) and fc7 (19x19, dilated conv6 + conv7),
then four extra levels (10, 5, 3, 1).
"""

from ssd_tf import defaults


def get_config():
  config = defaults.base_config()
  config.name = "ssd300_vgg16_coco"
  config.model.backbone = "vgg16"
  config.model.extra_layers = defaults.SSD300_EXTRAS[1:]
  return config
