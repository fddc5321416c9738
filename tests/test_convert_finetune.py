"""Fine-tuning a converted published detector (NVIDIA's SSD300-ResNet50, seeded weights) on other classes:
training starts from the converted values and learns."""

import random

import numpy as np
import pytest
import tensorflow as tf

import golden_sources
import train_helpers
from ssd_tf import train
from ssd_tf.convert import detectors
from ssd_tf.ssd import SSD

STEPS = 8


@pytest.mark.slow
def test_fine_tune_from_a_converted_detector_starts_from_it_and_learns(tmp_path):
  nvidia = golden_sources.Source("nvidia")
  detectors.write_run(str(tmp_path / "nvidia"), nvidia.config, nvidia.ssd, nvidia.label_map)
  converted = {v.path: v.numpy() for v in nvidia.ssd.network.variables}

  config = golden_sources.config("ssd300_resnet50_nvidia")
  config.model.num_classes = 3  # train_helpers.fixed_batches' labels 1..3, where COCO had 80
  config.model.init_from = str(tmp_path / "nvidia")
  config.model.backbone_weights = "imagenet"  # not loaded (init_from supplies the backbone): no download
  config.train.update(batch_size=train_helpers.GLOBAL_BATCH, warmup_steps=0, scale_lr_with_batch=False,
                      base_learning_rate=1e-3, steps=STEPS)
  random.seed(0)
  trainer = train.Trainer(config, str(tmp_path / "fine_tune"), tf.distribute.get_strategy())

  heads = [v for v in trainer.ssd.network.variables if v.path.split("/")[0].endswith("_logits")]
  assert len(heads) == 12 and all(v.shape != converted[v.path].shape for v in heads)  # 4 columns, not 81
  rest = [v for v in trainer.ssd.network.variables if v.path.split("/")[0].endswith("_logits") is False]
  assert len(rest) == len(converted) - 12
  for v in rest:
    np.testing.assert_array_equal(v.numpy(), converted[v.path], err_msg=v.path)

  batches = train_helpers.fixed_batches(2, image_size=config.model.image_size)
  iterator = train_helpers.distributed_iterator(trainer.strategy, batches)
  losses = [float(trainer.train_step(iterator)["loss"]) for _ in range(STEPS)]
  assert np.all(np.isfinite(losses)) and np.mean(losses[-2:]) < 0.5 * losses[0], losses
