"""Quickstart: SSD-ResNet18 trained from scratch on the synthetic shapes dataset, on a CPU.

`python main.py` runs it end to end (synthetic data -> prepare -> train -> eval ->
export -> drawings) in --workdir (default runs/quickstart). Sized for 2 CPU cores.
"""

from ssd_tf import defaults
from ssd_tf import hardware


def get_config():
  config = defaults.base_config()
  config.name = "quickstart"
  config.model.backbone = "resnet18"
  config.model.backbone_weights = None
  config.model.num_classes = 8
  config.model.image_size = 192
  # conv3 (24x24) and conv4 at its own stride 16 (12x12): half the backbone FLOPs of conv4 at stride 8;
  # the extra levels give 6, 3, 2, 1 (the SSD reads these sizes from the network).
  config.model.backbone_taps = ("conv3", "conv4")
  config.model.extra_layers = ((128, 256, 2, "same"), (64, 128, 2, "same"), (64, 128, 2, "same"),
                               (64, 128, 2, "same"))
  config.anchors = defaults.anchor_config(dict(
      aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
      scales=()), min_scale=0.1, max_scale=0.9)

  config.data.synthetic.num_train = 4000
  config.data.synthetic.num_val = 200
  config.data.num_shards = 4
  config.data.max_boxes = 16
  config.data.shuffle_buffer = 512
  # The synthetic shapes already span sizes 6%..70%, every position and random colours: zoom-out,
  # IoU crops and colour distortion only slow a short schedule down (README); flips stay.
  config.data.augment.photometric_prob = 0.0
  config.data.augment.expand_prob = 0.0
  config.data.augment.crop_prob = 0.0

  config.train.batch_size = 16
  config.train.steps = 1200  # 4.5 min of training on 2 cores with AMX bfloat16, 8 min on Zen 4 (README)
  config.train.base_learning_rate = 0.05
  config.train.scale_lr_with_batch = False
  # 150 warmup steps, not 50: at lr 0.05 from random weights the first steps after a short warmup set
  # a run back by hundreds of steps on some seeds (benchmarks/seeds.py; README, If training does not learn).
  config.train.warmup_steps = 150
  config.train.weight_decay = 5e-4
  # On a CPU with native bfloat16 (AVX512-BF16), oneDNN trains this model about 1.5x faster in
  # mixed_bfloat16 than in float32; elsewhere bfloat16 is emulated. XLA's CPU convolutions are
  # slower than oneDNN's here (README, Performance).
  config.train.mixed_precision = "mixed_bfloat16" if hardware.cpu_has_bfloat16() else ""
  config.train.jit_compile = False
  config.train.log_every = 50
  config.train.checkpoint_every = 500
  config.eval.batch_size = 16
  config.eval.every_steps = 100_000  # only at the end
  return config
