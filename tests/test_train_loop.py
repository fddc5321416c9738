"""Trainer.fit: when it evaluates; a non-finite loss or weights stop it with an error naming the step, no bad checkpoint."""

import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import train
import train_helpers


def _trainer(workdir, batches, strategy=None, **train_fields):
  """A Trainer whose fit() reads ``batches`` (global-batch rows) instead of the data pipeline."""
  config = train_helpers.tiny_config()
  config.train.update(dict(checkpoint_every=1, keep_checkpoints=10), **train_fields)
  trainer = train.Trainer(config, str(workdir), strategy or tf.distribute.get_strategy())
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


@pytest.mark.parametrize("mirrored", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["one_device", "mirrored_2_cpus"])
def test_steps_per_loop_trains_the_same_weights_and_keeps_every_boundary(tmp_path, mirrored):
  """12 steps, logs every 5, checkpoints every 6: 8 steps per loop run as loops of 5, 1, 4 and 2
  steps (each ends at a log or checkpoint step) and end with the weights one step per call gives."""
  batches = train_helpers.fixed_batches(12)
  weights, loops, logged = {}, {}, {}
  for steps_per_loop in (1, 8):
    strategy = train_helpers.mirrored_strategy() if mirrored else None
    trainer = _trainer(tmp_path / str(steps_per_loop), batches, strategy, steps=12, steps_per_loop=steps_per_loop,
                       log_every=5, checkpoint_every=6)
    loop, loops[steps_per_loop] = trainer.train_loop, []
    trainer.train_loop = lambda iterator, n, loop=loop, sizes=loops[steps_per_loop]: (
        sizes.append(int(n)), loop(iterator, n))[1]
    log_step, logged[steps_per_loop] = trainer._log_step, []
    trainer._log_step = lambda step, *args, log_step=log_step, steps=logged[steps_per_loop]: (
        steps.append(step), log_step(step, *args))
    trainer.fit()
    weights[steps_per_loop] = train_helpers.model_weights(trainer.ssd.network)
    assert _checkpoint_steps(tmp_path / str(steps_per_loop)) == [6, 12]
  assert loops == {1: [1] * 12, 8: [5, 1, 4, 2]}
  assert logged == {1: [5, 10, 12], 8: [5, 10, 12]}
  for path, value in weights[1].items():
    np.testing.assert_array_equal(weights[8][path], value, err_msg=path)


def test_a_nan_loss_inside_a_loop_stops_that_loop_at_its_step(tmp_path):
  """A learning rate of 1e30 gives huge but finite weights after step 1 and a NaN loss at step 2."""
  trainer = _trainer(tmp_path, train_helpers.fixed_batches(8), steps=8, steps_per_loop=8, checkpoint_every=8,
                     log_every=8, base_learning_rate=1e30)
  with pytest.raises(FloatingPointError, match=r"loss is nan at step 2 .*steps 1-2 ran in one loop"):
    trainer.fit()
  assert int(trainer.steps_run.numpy()) == 2  # the loop stopped after the step whose loss is NaN
  assert _checkpoint_steps(tmp_path) == []


@pytest.mark.slow
def test_resuming_with_steps_per_loop_is_exact(tmp_path):
  """Trained to step 6 (a checkpoint), then resumed by a new Trainer to step 12 in loops of 8: the
  weights equal an uninterrupted run's (a step schedule: the cosine one depends on train.steps)."""
  batches = train_helpers.fixed_batches(12)

  def run(workdir, steps):
    trainer = _trainer(workdir, batches, steps=steps, steps_per_loop=8, log_every=12, checkpoint_every=6,
                       schedule="step", step_boundaries=(100, 200))
    trainer.dataset_iterator = lambda start: train_helpers.distributed_iterator(
        trainer.strategy, {k: v[start * train_helpers.GLOBAL_BATCH:] for k, v in batches.items()})
    trainer.fit()
    return train_helpers.model_weights(trainer.ssd.network)

  uninterrupted = run(tmp_path / "whole", 12)
  run(tmp_path / "resumed", 6)
  resumed = run(tmp_path / "resumed", 12)
  assert _checkpoint_steps(tmp_path / "resumed") == [6, 12]
  for path, value in uninterrupted.items():
    np.testing.assert_array_equal(resumed[path], value, err_msg=path)


def test_logs_are_means_since_the_last_log_and_the_gradient_norm_is_the_global_one(tmp_path):
  """log_every=2 over 4 steps, an evaluation after step 3 (between logs): each logged term is the mean of
  its two steps, and grad_norm is the global norm of the gradient that step computes (checked on step 1
  from the same initial weights)."""
  batches = train_helpers.fixed_batches(4)
  trainer = _trainer(tmp_path / "run", batches, steps=4, log_every=2)
  trainer.config.eval.every_steps = 3
  initial = train_helpers.model_weights(trainer.ssd.network)
  steps, logged = [], []
  loop = trainer.train_loop
  trainer.train_loop = lambda iterator, n: (lambda out: steps.append({k: float(v) for k, v in out[1].items()})
                                            or out)(loop(iterator, n))
  trainer._log_step = lambda step, means, images_per_second: logged.append((step, means))
  trainer.fit(lambda ssd, step: {"AP": 0.0})
  assert [step for step, _ in logged] == [2, 4]
  assert set(logged[0][1]) == set(train.LOSS_KEYS) | {train.GRAD_NORM}
  for (step, means), pair in zip(logged, (steps[0:2], steps[2:4])):
    for key, mean in means.items():
      assert mean == pytest.approx((pair[0][key] + pair[1][key]) / 2, rel=1e-6), (step, key)

  fresh = _trainer(tmp_path / "fresh", batches, steps=4)
  for variable in fresh.ssd.network.weights:
    variable.assign(initial[variable.path])
  batch = {k: tf.constant(v[:train_helpers.GLOBAL_BATCH]) for k, v in batches.items()}
  _, gradients = fresh.gradients(batch, fresh.ssd.targets(batch["boxes"], batch["labels"], batch["is_crowd"]))
  expected = np.sqrt(sum(np.sum(np.square(g.numpy().astype(np.float64))) for g in gradients))
  assert steps[0][train.GRAD_NORM] == pytest.approx(expected, rel=1e-4)
  assert expected > 0


def test_several_replicas_log_the_gradient_norm_only_when_clipping(tmp_path):
  strategy = train_helpers.mirrored_strategy()
  plain = _trainer(tmp_path / "plain", train_helpers.fixed_batches(1), strategy, steps=1)
  clipped = _trainer(tmp_path / "clipped", train_helpers.fixed_batches(1), strategy, steps=1, grad_clip_norm=1e9)
  assert train.GRAD_NORM not in plain.logged and train.GRAD_NORM in clipped.logged
