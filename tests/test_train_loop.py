"""Trainer.fit: when it evaluates; a non-finite loss or weights stop it with an error naming the step, no bad checkpoint."""

import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import train
import train_helpers


def _trainer(workdir, batches, **train_fields):
  """A Trainer whose fit() reads ``batches`` (global-batch rows) instead of the data pipeline."""
  config = train_helpers.tiny_config()
  config.train.update(dict(checkpoint_every=1, keep_checkpoints=10), **train_fields)
  trainer = train.Trainer(config, str(workdir), tf.distribute.get_strategy())
  trainer.dataset_iterator = lambda start: train_helpers.distributed_iterator(trainer.strategy, batches)
  return trainer


def _checkpoint_steps(workdir):
  return sorted(int(p.name[len("ckpt-"):-len(".index")]) for p in (workdir / "checkpoints").glob("ckpt-*.index"))


def test_nan_loss_stops_at_its_step_without_a_checkpoint(tmp_path):
  batches = train_helpers.fixed_batches(4)
  batches["image"][2 * train_helpers.GLOBAL_BATCH] = np.nan    # first image of step 3
  trainer = _trainer(tmp_path, batches, steps=4)
  # oneDNN's fused BatchNorm+ReLU can flush the NaN activations to 0, leaving the loss finite; the NaN
  # batch statistics then reach the moving averages, and the weight check stops the same step.
  with pytest.raises(FloatingPointError,
                     match=r"(loss is nan at step 3 |non-finite weights after step 3;).*Last good checkpoint: .*ckpt-2"):
    trainer.fit()
  assert _checkpoint_steps(tmp_path) == [1, 2]
  assert trainer.books.latest.latest_checkpoint.endswith("ckpt-2")


@pytest.mark.parametrize("learning_rate, message, failed_step", [
    (1e30, "loss is nan at step 2", 2),                  # huge but finite weights, then a NaN loss
    (1e38, "non-finite weights after step 1", 1),        # the first update overflows the weights
])
def test_diverging_training_never_checkpoints_non_finite_weights(tmp_path, learning_rate, message,
                                                                 failed_step):
  trainer = _trainer(tmp_path, train_helpers.fixed_batches(4), steps=4, base_learning_rate=learning_rate)
  with pytest.raises(FloatingPointError, match=message):
    trainer.fit()
  assert _checkpoint_steps(tmp_path) == list(range(1, failed_step))
  for step in _checkpoint_steps(tmp_path):
    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints" / f"ckpt-{step}"))
    for name in reader.get_variable_to_dtype_map():
      value = np.asarray(reader.get_tensor(name))
      if np.issubdtype(value.dtype, np.floating):
        assert np.all(np.isfinite(value)), f"ckpt-{step}: {name}"


def test_save_refuses_non_finite_weights(tmp_path):
  trainer = _trainer(tmp_path, train_helpers.fixed_batches(1), steps=1)
  kernel = trainer.ssd.network.get_layer("level0_logits").kernel
  values = kernel.numpy()
  values.flat[0] = np.inf
  kernel.assign(values)
  with pytest.raises(FloatingPointError, match="non-finite weights after step 7; checkpoint not written"):
    trainer.save(7)
  assert not (tmp_path / "checkpoints").exists() or _checkpoint_steps(tmp_path) == []


@pytest.mark.parametrize("every_steps, evaluated_at", [(0, [4]), (2, [2, 4]), (3, [3, 4])])
def test_eval_every_steps_and_always_at_the_end(tmp_path, every_steps, evaluated_at):
  trainer = _trainer(tmp_path, train_helpers.fixed_batches(4), steps=4)
  trainer.config.eval.every_steps = every_steps
  steps = []
  trainer.fit(lambda ssd, step: steps.append(step) or {"AP": 0.1 * step})
  assert steps == evaluated_at
  assert (tmp_path / "best" / "best_ap.txt").read_text().split() == [str(0.1 * 4), "4"]  # the best AP: step 4's
  assert (tmp_path / "best" / "ckpt-4.index").exists()
