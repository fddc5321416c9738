"""Quickstart for SSDLite: SSDLite-MobileNetV3-Large trained from scratch on the synthetic shapes, on a CPU.

`python main.py --config=configs/quickstart_ssdlite.py --workdir=runs/quickstart_ssdlite` runs it end to
end as the quickstart does (synthetic data -> prepare -> train -> eval -> export -> drawings). The network
is torchvision's SSDLite320 (configs/ssdlite320_mobilenet_v3_large_torchvision.py: reduced-tail
MobileNetV3, depthwise-separable extra levels and heads, BatchNorm epsilon 0.001) for the 8 synthetic
classes; the data and augmentation are the quickstart's, the learning rate twice its.

Measured (Xeon, 2026-12-07, `time python main.py --config=configs/quickstart_ssdlite.py --workdir=<new>`):
AP50 0.777, AP 0.503 in 11 min 47 s end to end, short of the 0.80 asked (issue 24); 1200 steps at lr 0.05
gave AP50 0.654 in 9 min 29 s.
"""

from ssd_tf import defaults


def get_config():
  config = defaults.base_config()
  config.name = "quickstart_ssdlite"
  m = config.model
  m.backbone = "mobilenet_v3_large"
  m.backbone_variant = "reduced_tail"
  m.backbone_weights = None
  m.input_normalization = "tf"
  m.num_classes = 8
  # 192 px as the quickstart: 12x12 and 6x6 taps, extra levels 3, 2, 1, 1. TensorFlow's CPU depthwise
  # convolutions train 2.5x slower at 320 px (benchmarks/ssdlite_speed.py).
  m.image_size = 192
  m.ssdlite = True
  m.extra_layers = ((256, 512, 2, "symmetric"), (128, 256, 2, "symmetric"), (128, 256, 2, "symmetric"),
                    (64, 128, 2, "symmetric"))
  m.batchnorm_epsilon = 1e-3
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
  config.train.steps = 1500
  config.train.base_learning_rate = 0.1
  config.train.scale_lr_with_batch = False
  config.train.warmup_steps = 150
  config.train.weight_decay = 4e-5
  # float32 even with native bfloat16: TensorFlow's bfloat16 depthwise convolutions train this model 2x
  # slower than float32 on an AMX Xeon (benchmarks/ssdlite_speed.py).
  config.train.mixed_precision = ""
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  config.eval.batch_size = 16
  config.eval.every_steps = 0  # only at the end
  return config
