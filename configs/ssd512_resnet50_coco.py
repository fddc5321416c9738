"""SSD512 with a ResNet-50 backbone on COCO 2017: 7 feature maps, 24564 default boxes."""

from ssd_tf import defaults


def get_config():
  config = defaults.base_config()
  config.name = "ssd512_resnet50_coco"
  config.model.image_size = 512
  config.model.extra_layers = defaults.SSD512_EXTRAS
  config.anchors = defaults.anchor_config(defaults.SSD512_ANCHORS)
  config.train.batch_size = 32
  return config
