"""Memorize the real COCO sample: SSD-ResNet18 trained and evaluated on the same 80 train2017 images.

A check of the whole real-COCO chain (crowd boxes, 80 classes with category ids
up to 90, images of any size and aspect) rather than a model to use: training
without augmentation on 80 images, then scoring on those same images, must reach
a high AP. The sample is found at $COCO_TINY_DIR (default: ../shared/data/coco_tiny
beside the repository).

  python main.py --config=configs/coco_tiny_overfit.py --workdir=runs/coco_tiny_overfit
"""

from configs import quickstart
from ssd_tf import defaults


def get_config():
  config = quickstart.get_config()
  config.name = "coco_tiny_overfit"
  config.model.num_classes = 80
  config.data.coco_dir = defaults.coco_sample_dir()
  config.data.eval_split = config.data.train_split  # scored on the images it trained on
  config.data.max_boxes = 100
  config.data.shuffle_buffer = 80
  for key in ("photometric_prob", "expand_prob", "crop_prob", "flip_prob"):
    config.data.augment[key] = 0.0  # memorization: every epoch shows the same images
  config.train.steps = 600
  config.eval.batch_size = 8
  return config
