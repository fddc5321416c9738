"""A tiny SSD config and fixed batches for the training tests, fed like the real pipeline.

Run as a script it is one worker of the multi-worker test (tests/test_distribute.py):
  TF_CONFIG=... PYTHONPATH=<repo> python tests/train_helpers.py WORKDIR WEIGHTS.npz STEPS CLIP_NORM
trains the tiny config (synchronized BatchNorm, train.grad_clip_norm=CLIP_NORM) with
``Trainer.fit`` on ``fixed_batches`` and saves the initial
and final weights (trainable and BatchNorm statistics; keys "initial/<path>" and
"final/<path>") to WEIGHTS.npz.
"""

import sys

import numpy as np

import test_learning

IMAGE_SIZE = 64
GLOBAL_BATCH = 4


def tiny_config():
  """SSD with a random ResNet-18 at 64 px: feature maps 8, 4, 2; global batch 4; no warmup."""
  from ssd_tf import defaults  # pylint: disable=g-import-not-at-top
  config = test_learning.small_config()
  config.model.image_size = IMAGE_SIZE
  config.model.extra_layers = ((32, 64, 2, "same"),) * 2
  config.anchors = defaults.anchor_config(dict(
      feature_map_sizes=(8, 4, 2), aspect_ratios=((2,), (2, 3), (2,)), scales=()),
      min_scale=0.2, max_scale=0.9)
  config.train.batch_size = GLOBAL_BATCH
  config.train.warmup_steps = 0
  config.train.base_learning_rate = 1e-4
  config.train.weight_decay = 5e-4
  config.train.log_every = 1
  config.train.checkpoint_every = 2
  return config


def fixed_batches(num_steps, seed=0, max_boxes=4, image_size=IMAGE_SIZE):
  """num_steps global batches as one dict of arrays with num_steps * GLOBAL_BATCH rows.

  Within each global batch the first half of the images has 3 boxes each and the
  second half 1, so two replicas see different numbers of positives. Row i depends
  only on (seed, i): the first batches are the same whatever num_steps is.
  """
  count = num_steps * GLOBAL_BATCH
  images = np.zeros((count, image_size, image_size, 3), np.float32)
  boxes = np.zeros((count, max_boxes, 4), np.float32)
  labels = -np.ones((count, max_boxes), np.int32)
  for i in range(count):
    rng = np.random.default_rng([seed, i])
    images[i] = rng.uniform(0, 255, size=images.shape[1:])
    for j in range(3 if i % GLOBAL_BATCH < GLOBAL_BATCH // 2 else 1):
      y0, x0 = rng.uniform(0.0, 0.5, size=2)
      height, width = rng.uniform(0.2, 0.5, size=2)
      boxes[i, j] = [y0, x0, y0 + height, x0 + width]
      labels[i, j] = rng.integers(1, 4)
      y0, x0, y1, x1 = (boxes[i, j] * image_size).astype(int)
      images[i, y0:y1, x0:x1] = 60 * labels[i, j]
  return dict(image=images, boxes=boxes, labels=labels, is_crowd=np.zeros_like(labels, bool))


def distributed_iterator(strategy, batches, global_batch=GLOBAL_BATCH):
  """Iterator over ``batches`` (rows in global-batch order) as the training pipeline feeds a strategy.

  Every replica gets a consecutive slice of each global batch: replica r of the
  global batch holds its rows [r * per_replica, (r + 1) * per_replica).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def dataset_fn(input_context):
    per_replica = input_context.get_per_replica_batch_size(global_batch)
    dataset = tf.data.Dataset.from_tensor_slices(batches).batch(per_replica, drop_remainder=True)
    return dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id).repeat()

  return iter(strategy.distribute_datasets_from_function(dataset_fn))


def mirrored_strategy():
  """MirroredStrategy over the two logical CPUs (conftest), with collective keys of its own.

  Every MirroredStrategy numbers its collectives from the same keys unless
  ``_collective_key_base`` differs (TF: "only set this in tests"); a second strategy in
  the process whose all-reduces differ from an earlier one's then aborts with "Shape
  mismatch in the collective instance 100". The base is moved before (not to reuse an
  earlier strategy's keys) and after (so the next strategy does not reuse these).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  devices = [d.name for d in tf.config.list_logical_devices("CPU")]
  assert len(devices) >= 2, "conftest should split the CPU into two logical devices"
  tf.distribute.MirroredStrategy._collective_key_base += 10_000
  strategy = tf.distribute.MirroredStrategy(devices[:2])
  tf.distribute.MirroredStrategy._collective_key_base += 10_000
  return strategy


def model_weights(model):
  """{variable path: value} of every model variable (BatchNorm statistics included)."""
  return {v.path: np.array(v.numpy()) for v in model.weights}


def training_difference(weights, reference, initial):
  """How far ``weights`` are from ``reference``, relative to how far training moved ``reference``.

  All dicts map variable paths to arrays (model_weights). Returns
  {"trainable": r, "statistics": r} with r = |weights - reference| / |reference - initial|
  over all trainable variables resp. all BatchNorm moving statistics (norms over the
  concatenated values). Single variables are not compared one by one: the gradients of
  some BatchNorm gammas and betas nearly cancel at a random initialization, and rounding
  alone moves them by percents within 3 steps (measured, also between two single-device
  runs that only compute the BatchNorm variance differently).
  """
  assert weights.keys() == reference.keys() == initial.keys()
  groups = {"trainable": [p for p in reference if "moving_" not in p],
            "statistics": [p for p in reference if "moving_" in p]}
  difference = {}
  for group, paths in groups.items():
    error = np.sqrt(sum(np.sum(np.square(weights[p] - reference[p], dtype=np.float64)) for p in paths))
    moved = np.sqrt(sum(np.sum(np.square(reference[p] - initial[p], dtype=np.float64)) for p in paths))
    assert moved > 0, f"training did not move the {group} variables"
    difference[group] = error / moved
  return difference


def assert_same_training(weights, reference, initial, trainable_rtol=5e-2, statistics_rtol=2e-3):
  """training_difference within the tolerances.

  Measured over random initializations of tiny_config, 3 steps, mirrored (synchronized
  BatchNorm) vs one device: up to 9e-3 (trainable) and 7e-5 (statistics); most
  initializations give 1e-5 and 1e-6, the few larger ones come from a hard negative or
  ReLU that flips under rounding, and grow with the learning rate (up to 7e-2 at 1e-3,
  whose first step drops the loss by a third). Per-replica BatchNorm statistics give
  ~0.9 (trainable) and ~0.08 (statistics), a per-replica loss normalization ~2.
  """
  difference = training_difference(weights, reference, initial)
  assert difference["trainable"] <= trainable_rtol and difference["statistics"] <= statistics_rtol, (
      f"weights differ from the reference by {difference} of how far training moved them")


def _run_worker(workdir, weights_path, steps, grad_clip_norm):
  """One multi-worker task: the strategy first (before any TF op), then Trainer.fit."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from ssd_tf import distribute  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.INFO)
  strategy = distribute.make_strategy("auto")
  from ssd_tf import train  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.model.batchnorm_synchronized = True
  config.train.steps = steps
  config.train.grad_clip_norm = grad_clip_norm
  trainer = train.Trainer(config, workdir, strategy)
  initial = model_weights(trainer.ssd.network)
  trainer.dataset_iterator = lambda start: distributed_iterator(strategy, fixed_batches(steps))
  losses = trainer.fit()
  final = model_weights(trainer.ssd.network)
  np.savez(weights_path, **{f"initial/{k}": v for k, v in initial.items()},
           **{f"final/{k}": v for k, v in final.items()})
  print(f"{distribute.task_name(strategy)} done: step {trainer.step}, loss {losses['loss']:.6f}",
        flush=True)


if __name__ == "__main__":
  _run_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
