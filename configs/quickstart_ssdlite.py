"""Quickstart for SSDLite: SSDLite-MobileNetV3-Large trained from scratch on the synthetic shapes, on a CPU.

`python main.py --config=configs/quickstart_ssdlite.py --workdir=runs/quickstart_ssdlite` runs it end to
end as the quickstart does (synthetic data -> prepare -> train -> eval -> export -> drawings). The network
is torchvision's SSDLite320 (configs/ssdlite320_mobilenet_v3_large_torchvision.py: reduced-tail
MobileNetV3, depthwise-separable extra levels and heads, BatchNorm epsilon 0.001) for the 8 synthetic
classes; the data and augmentation are the quickstart's, the learning rate twice its.

Measured (Xeon, 2026-12-07, `time python main.py --config=configs/quickstart_ssdlite.py --workdir=<new>`,
alone on the 2 cores): 1800 steps: AP50 0.7997, AP 0.518 in 13 min 46 s; 1900 steps: AP50 0.797, AP 0.531 in
13 min 38 s; 1500 steps: AP50 0.777 (lr 0.1); lr 0.15 with 1700 steps: 0.705. Just short of issue 24's 0.80.
"""

import importlib.util
import pathlib

from ssd_tf import defaults

_SPEC = importlib.util.spec_from_file_location(
    "ssdlite320", pathlib.Path(__file__).with_name("ssdlite320_mobilenet_v3_large_torchvision.py"))
ssdlite320 = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ssdlite320)


def get_config():
  config = defaults.base_config()
  config.name = "quickstart_ssdlite"
  # torchvision's SSDLite320 network (its module docstring), for the 8 synthetic classes at 192 px
  config.model = ssdlite320.get_config().model
  m = config.model
  m.num_classes = 8
  # 192 px as the quickstart: 12x12 and 6x6 taps, extra levels 3, 2, 1, 1. TensorFlow's CPU depthwise
  # convolutions make 320 px train 2.4x slower (17.0 against 40.5 img/s, batch 16, float32; Xeon, cpu family 6,
  # 2026-12-07, a one-off train-step timing; benchmarks/depthwise.py times the layers).
  m.image_size = 192
  m.resize_antialias = True       # the quickstart's data pipeline, as configs/quickstart.py
  m.batchnorm_momentum = 0.99     # measured with Keras' default; torchvision's 0.97 was not tried alone
  config.anchors = defaults.anchor_config(dict(aspect_ratios=((2, 3),) * 6), clip="size", min_scale=0.1,
                                          max_scale=0.9)

  config.data.synthetic.num_train = 4000
  config.data.synthetic.num_val = 200
  config.data.num_shards = 4
  config.data.max_boxes = 16
  config.data.shuffle_buffer = 512
  config.data.augment.photometric_prob = 0.0
  config.data.augment.expand_prob = 0.0
  config.data.augment.crop_prob = 0.0

  config.train.batch_size = 16
  config.train.steps = 1800
  config.train.base_learning_rate = 0.1
  config.train.scale_lr_with_batch = False
  config.train.warmup_steps = 150
  config.train.weight_decay = 4e-5
  # float32 even with native bfloat16: TensorFlow's bfloat16 depthwise backward takes 3.75x its float32 time
  # (benchmarks/depthwise.py; Xeon, cpu family 6, 2026-12-07), and the train step is 2x slower.
  config.train.mixed_precision = ""
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  config.eval.batch_size = 16
  config.eval.every_steps = 0  # only at the end
  return config
