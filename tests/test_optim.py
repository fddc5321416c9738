"""Optimization settings: schedule, SGD momentum, weight decay, clipping, mixed precision, XLA."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import optim
from ssd_tf import train
from ssd_tf.backbones import vgg
from ssd_tf.ssd import SSD
import train_helpers


@pytest.fixture(autouse=True)
def float32_policy():
  """Every test leaves the global dtype policy at float32."""
  yield
  keras.mixed_precision.set_global_policy("float32")


# --- learning rate ------------------------------------------------------------------------------

def _rates(schedule, steps):
  return [float(schedule(step)) for step in steps]


def test_warmup_then_cosine():
  schedule = optim.WarmupDecay(peak=0.1, warmup_steps=10, total_steps=110, kind="cosine")
  # Linear warmup: step s (0-based) uses peak * (s + 1) / (warmup + 1), so the first update is not 0.
  np.testing.assert_allclose(_rates(schedule, [0, 4, 9]), [0.1 / 11, 0.1 * 5 / 11, 0.1 * 10 / 11], rtol=1e-6)
  # Cosine over the remaining 100 steps: peak at 10, 1/4 at 35, half at 60, 0 at 110 and after.
  np.testing.assert_allclose(_rates(schedule, [10, 35, 60, 85, 110, 500]),
                             [0.1, 0.1 * 0.5 * (1 + math.cos(math.pi / 4)), 0.05,
                              0.1 * 0.5 * (1 - math.cos(math.pi / 4)), 0.0, 0.0], rtol=1e-6, atol=1e-9)


def test_warmup_then_step_decay():
  schedule = optim.WarmupDecay(peak=1.0, warmup_steps=5, total_steps=100, kind="step",
                               boundaries=(50, 80), factor=0.1)
  np.testing.assert_allclose(_rates(schedule, [0, 4, 5, 49, 50, 79, 80, 99]),
                             [1 / 6, 5 / 6, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
  no_warmup = optim.WarmupDecay(peak=2.0, warmup_steps=0, total_steps=10, kind="step", boundaries=(3,))
  np.testing.assert_allclose(_rates(no_warmup, [0, 2, 3]), [2.0, 2.0, 0.2], rtol=1e-6)
  assert optim.WarmupDecay(**schedule.get_config()).get_config() == schedule.get_config()
  with pytest.raises(ValueError, match="config.train.schedule='linear'"):
    optim.WarmupDecay(1.0, 0, 10, kind="linear")


def test_peak_learning_rate_scales_with_the_global_batch():
  config = train_helpers.tiny_config().train
  config.update(dict(base_learning_rate=2.6e-3, lr_reference_batch=32, batch_size=64,
                     scale_lr_with_batch=True))
  assert optim.peak_learning_rate(config) == pytest.approx(5.2e-3)
  config.scale_lr_with_batch = False
  assert optim.peak_learning_rate(config) == pytest.approx(2.6e-3)


def test_sgd_momentum_follows_the_schedule():
  """Two updates by hand: m <- 0.9 m - lr(step) g; w <- w + m, lr(0) = peak / 2, lr(1) = peak."""
  config = train_helpers.tiny_config().train
  config.update(dict(base_learning_rate=0.1, scale_lr_with_batch=False, warmup_steps=1, steps=11,
                     momentum=0.9, schedule="cosine"))
  optimizer = optim.make_optimizer(config)
  assert isinstance(optimizer, keras.optimizers.SGD)
  w = tf.Variable([1.0, -2.0])
  gradient = tf.constant([2.0, 1.0])
  optimizer.apply([gradient], [w])
  np.testing.assert_allclose(w.numpy(), [1.0 - 0.05 * 2.0, -2.0 - 0.05 * 1.0], rtol=1e-6)
  optimizer.apply([gradient], [w])
  momentum = np.array([-0.1, -0.05]) * 0.9 - 0.1 * np.array([2.0, 1.0])
  np.testing.assert_allclose(w.numpy(), np.array([0.9, -2.05]) + momentum, rtol=1e-6)


# --- weight decay -------------------------------------------------------------------------------

def _decay_gradients(variables, weight_decay, num_replicas=1):
  """(decay loss, its gradient for each variable; zeros where it does not depend on one)."""
  with tf.GradientTape() as tape:
    loss = optim.weight_decay_loss(variables, weight_decay, num_replicas)
  gradients = tape.gradient(loss, variables)
  return loss, [tf.zeros_like(v) if g is None else g for g, v in zip(gradients, variables)]


def test_weight_decay_only_on_kernels():
  variables = SSD(train_helpers.tiny_config()).network.trainable_variables
  loss, gradients = _decay_gradients(variables, 5e-4)
  kinds = {"kernel": 0, "gamma": 0, "beta": 0, "bias": 0}
  for variable, gradient in zip(variables, gradients):
    kind = variable.path.rsplit("/", 1)[-1]
    kinds[kind] += 1
    if kind == "kernel":
      np.testing.assert_allclose(gradient, 5e-4 * variable.numpy(), rtol=1e-6, err_msg=variable.path)
    else:   # BatchNorm gamma / beta, head biases
      assert np.all(gradient.numpy() == 0), variable.path
  assert min(kinds.values()) > 0, kinds
  expected = 0.5 * 5e-4 * sum(np.sum(v.numpy().astype(np.float64) ** 2) for v in variables if "kernel" in v.path)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  # Each of 2 replicas adds half; no decay at all gives exactly 0.
  np.testing.assert_allclose(optim.weight_decay_loss(variables, 5e-4, num_replicas=2), expected / 2, rtol=1e-5)
  assert float(optim.weight_decay_loss(variables, 0.0)) == 0.0


def test_no_weight_decay_on_the_vgg_l2norm_scale():
  layer = vgg.L2Normalization()
  layer(tf.ones([1, 4, 4, 8]))
  (scale,) = layer.trainable_variables
  loss, (gradient,) = _decay_gradients([scale], 5e-4)
  assert float(loss) == 0.0 and np.all(gradient.numpy() == 0)


def test_replica_weight_decay_sums_to_weight_decay_times_w():
  strategy = train_helpers.mirrored_strategy()
  with strategy.scope():
    kernel = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5)
    bias = tf.Variable([1.0, 2.0, 3.0])

  @tf.function
  def summed_gradients():
    per_replica = strategy.run(lambda: _decay_gradients([kernel, bias], 0.01, 2)[1])
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in per_replica]

  kernel_grad, bias_grad = summed_gradients()
  np.testing.assert_allclose(kernel_grad, 0.01 * kernel.numpy(), rtol=1e-6)
  assert np.all(bias_grad.numpy() == 0)


# --- gradient clipping --------------------------------------------------------------------------

def test_clipping_uses_the_norm_of_the_global_gradient():
  """Under 2 replicas the applied (summed) gradient is clip(g0 + g1), not clip(g0) + clip(g1)."""
  strategy = train_helpers.mirrored_strategy()
  replica_grads = [np.array([3.0, 0.0], np.float32), np.array([0.0, 4.0], np.float32)]   # sum norm 5
  inputs = strategy.experimental_distribute_values_from_function(
      lambda context: tf.constant(replica_grads[context.replica_id_in_sync_group]))

  @tf.function
  def applied(clip_norm, loss_scale):
    clipped = strategy.run(lambda g: optim.clip_gradients([g * loss_scale], clip_norm, loss_scale)[0][0],
                           args=(inputs,))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, clipped, axis=None)

  np.testing.assert_allclose(applied(1.0, 1.0), [0.6, 0.8], rtol=1e-6)        # (3, 4) / 5
  np.testing.assert_allclose(applied(10.0, 1.0), [3.0, 4.0], rtol=1e-6)       # norm 5 < 10: unchanged
  np.testing.assert_allclose(applied(1.0, 1024.0), [0.6 * 1024, 0.8 * 1024], rtol=1e-6)  # still scaled
  # Single device: the same function clips the one gradient.
  clipped, norm = optim.clip_gradients([tf.constant([3.0, 4.0])], 1.0)
  np.testing.assert_allclose(clipped[0], [0.6, 0.8], rtol=1e-6)
  assert float(norm) == pytest.approx(5.0)
  # No clipping: unchanged, and the norm with the loss scale removed.
  same, norm = optim.clip_gradients([tf.constant([3.0 * 8, 0.0]), tf.constant([4.0 * 8])], 0.0, loss_scale=8.0)
  np.testing.assert_array_equal(same[0], [24.0, 0.0])
  assert float(norm) == pytest.approx(5.0)


# --- mixed precision and XLA through the real training step -------------------------------------

def _trainer(tmp_path, initial=None, strategy=None, **train_fields):
  config = train_helpers.tiny_config()
  config.train.update(train_fields)
  trainer = train.Trainer(config, str(tmp_path), strategy or tf.distribute.get_strategy())
  if initial is not None:
    for variable in trainer.ssd.network.weights:
      variable.assign(initial[variable.path])
  return trainer


def _steps(trainer, count):
  iterator = train_helpers.distributed_iterator(trainer.strategy, train_helpers.fixed_batches(count))
  return [{k: float(v) for k, v in trainer.train_step(iterator).items()} for _ in range(count)]


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
  """(initial weights, weights after 2 float32 steps, their losses) of the tiny config."""
  trainer = _trainer(tmp_path_factory.mktemp("float32"))
  initial = train_helpers.model_weights(trainer.ssd.network)
  losses = _steps(trainer, 2)
  return initial, train_helpers.model_weights(trainer.ssd.network), losses


@pytest.mark.parametrize("policy, first_loss_rtol, steps", [
    pytest.param("mixed_float16", 1e-2, 3, marks=pytest.mark.slow), ("mixed_bfloat16", 5e-2, 2)])
def test_mixed_precision_step(float32_run, tmp_path, policy, first_loss_rtol, steps):
  initial, _, reference_losses = float32_run
  trainer = _trainer(tmp_path, initial, mixed_precision=policy)
  compute_dtype = policy.split("_")[1]
  assert trainer.ssd.network.get_layer("level0_loc").compute_dtype == compute_dtype
  assert all(v.dtype == "float32" for v in trainer.ssd.network.trainable_variables)
  assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
  losses = _steps(trainer, steps)
  assert all(math.isfinite(v) for step in losses for v in step.values()), losses
  # The first loss is computed from the same weights as the float32 one.
  assert losses[0]["loss"] == pytest.approx(reference_losses[0]["loss"], rel=first_loss_rtol)
  outputs = trainer.ssd.network(train_helpers.fixed_batches(1)["image"], training=False)
  assert outputs["loc"].dtype == tf.float32 and outputs["logits"].dtype == tf.float32
  moved = train_helpers.model_weights(trainer.ssd.network)
  assert np.linalg.norm(moved["level0_loc/kernel"] - initial["level0_loc/kernel"]) > 0
  applied = int(trainer.optimizer.iterations.numpy())
  if policy == "mixed_float16":
    # Dynamic loss scaling starts at 2^15, where float16 gradients overflow: those steps are
    # skipped (no update, no optimizer iteration) and the scale halves; then updates resume.
    scale = float(trainer.optimizer.dynamic_scale.numpy())
    assert 0 < applied < steps and scale == 2.0**15 / 2**(steps - applied), (applied, scale)
  else:
    assert applied == steps
  assert trainer.step == steps   # steps run (checkpoint numbers, resume), skipped ones included


@pytest.mark.slow  # about 13 s: XLA compiles the step
def test_xla_step_matches_the_graph_step(float32_run, tmp_path):
  initial, reference, reference_losses = float32_run
  trainer = _trainer(tmp_path, initial, jit_compile=True)
  losses = _steps(trainer, 2)
  np.testing.assert_allclose([s["loss"] for s in losses], [s["loss"] for s in reference_losses], rtol=1e-4)
  train_helpers.assert_same_training(train_helpers.model_weights(trainer.ssd.network), reference, initial)


def test_xla_is_left_out_under_two_replicas_with_a_warning(tmp_path, caplog):
  """XLA cannot compile the 2-replica step here (see train.use_jit_compile): it runs without."""
  trainer = _trainer(tmp_path, strategy=train_helpers.mirrored_strategy(), jit_compile=True)
  assert trainer.jit_compile is False
  assert "jit_compile=True ignored: XLA compiles the training step for one replica only and this " \
         "strategy has 2" in caplog.text
  assert _trainer(tmp_path, jit_compile=True).jit_compile is True
