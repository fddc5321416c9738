"""The quickstart shrunk for the command-line tests: SSD-ResNet18 at 64 px, a few steps on a CPU.

Feature maps 8, 4, 2 (the backbone's conv3 and conv4 taps and one extra level); global batch 4;
float32 without XLA on the default strategy. The data paths come from the command line
(--config.data.tfrecord_dir=...); fields the tests vary are overridden there too.
"""

from configs import quickstart
from ssd_tf import defaults


def get_config():
  config = quickstart.get_config()
  config.name = "tiny"
  config.model.image_size = 64
  config.model.extra_layers = ((32, 64, 2, "same"),)
  config.anchors = defaults.anchor_config(dict(
      feature_map_sizes=(8, 4, 2), aspect_ratios=((2,), (2, 3), (2,)), scales=()),
      min_scale=0.2, max_scale=0.9)
  config.data.num_shards = 2
  config.data.shuffle_buffer = 16
  config.train.strategy = "default"
  config.train.batch_size = 4
  config.train.steps = 6
  config.train.warmup_steps = 2
  config.train.base_learning_rate = 0.01
  config.train.mixed_precision = ""
  config.train.jit_compile = False
  config.train.log_every = 1
  config.train.checkpoint_every = 2
  config.train.keep_checkpoints = 2
  config.eval.batch_size = 4
  config.eval.every_steps = 3
  config.eval.num_summary_images = 2
  config.postprocess.max_detections_per_class = 10
  config.postprocess.max_detections = 20
  return config
