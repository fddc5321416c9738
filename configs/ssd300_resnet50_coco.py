"""SSD300 with a ResNet-50 backbone on COCO 2017 (NVIDIA's SSD300-ResNet design)."""

from ssd_tf import defaults


def get_config():
  return defaults.base_config()
