"""ssd_tf.batch_norm.BatchNormalization against NumPy and keras.layers.BatchNormalization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import batch_norm

CHANNELS = 5
MOMENTUM = 0.9
EPSILON = 1e-5


def _layers(seed=0, **kwargs):
  """(ours, Keras's), built on [., ., ., CHANNELS] with the same random gamma, beta and moving statistics."""
  rng = np.random.default_rng(seed)
  weights = [rng.uniform(0.5, 2.0, CHANNELS), rng.normal(size=CHANNELS), rng.normal(size=CHANNELS),
             rng.uniform(0.5, 2.0, CHANNELS)]  # gamma, beta, moving mean, moving variance
  pair = []
  for cls in (batch_norm.BatchNormalization, keras.layers.BatchNormalization):
    layer = cls(momentum=MOMENTUM, epsilon=EPSILON, **kwargs)
    layer.build((None, None, None, CHANNELS))
    layer.set_weights([w.astype(np.float32) for w in weights])
    pair.append(layer)
  return pair


def _images(shape=(3, 4, 6, CHANNELS), seed=1):
  rng = np.random.default_rng(seed)
  return tf.constant((rng.normal(size=shape) * 3.0 + 1.5).astype(np.float32))


def test_training_step_matches_numpy():
  ours, _ = _layers()
  gamma, beta, moving_mean, moving_variance = [w.copy() for w in ours.get_weights()]
  x = _images()
  outputs = ours(x, training=True).numpy()
  mean = x.numpy().mean(axis=(0, 1, 2))
  variance = x.numpy().var(axis=(0, 1, 2))  # biased, as Keras keeps it
  expected = (x.numpy() - mean) / np.sqrt(variance + EPSILON) * gamma + beta
  np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ours.moving_mean.numpy(), MOMENTUM * moving_mean + (1 - MOMENTUM) * mean, rtol=1e-5)
  np.testing.assert_allclose(ours.moving_variance.numpy(), MOMENTUM * moving_variance + (1 - MOMENTUM) * variance,
                             rtol=1e-5)


def test_inference_uses_moving_statistics():
  ours, _ = _layers()
  gamma, beta, moving_mean, moving_variance = ours.get_weights()
  x = _images()
  expected = (x.numpy() - moving_mean) / np.sqrt(moving_variance + EPSILON) * gamma + beta
  np.testing.assert_allclose(ours(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(ours.moving_mean.numpy(), moving_mean)


@pytest.mark.parametrize("training", [True, False])
def test_gradients_match_keras(training):
  x = _images()
  gradients = []
  for layer in _layers():
    with tf.GradientTape() as tape:
      tape.watch(x)
      # A weighted sum, so the gradient is not the trivial one of a plain sum through the normalization.
      loss = tf.reduce_sum(layer(x, training=training) * tf.sin(tf.range(CHANNELS, dtype=tf.float32) + x))
    gradients.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
  for ours, theirs in zip(*gradients):
    assert float(tf.reduce_max(tf.abs(theirs))) > 1e-2  # gradients that move
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-4)


def test_single_value_per_channel_matches_keras():
  """One value per channel: zero batch variance, not the kernel's unbiased 0/0."""
  ours, theirs = _layers()
  x = _images(shape=(1, 1, 1, CHANNELS))
  # x - mean is 0: the output is beta (Keras's is off by its rounding of x - mean, times 1/sqrt(epsilon))
  np.testing.assert_allclose(ours(x, training=True).numpy()[0, 0, 0], ours.beta.numpy(), atol=1e-6)
  np.testing.assert_allclose(theirs(x, training=True).numpy()[0, 0, 0], ours.beta.numpy(), atol=1e-3)
  np.testing.assert_allclose(ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-6)


def test_mixed_bfloat16_matches_keras():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    ours, theirs = _layers()
    x = tf.cast(_images(), tf.bfloat16)
    ours_out, theirs_out = ours(x, training=True), theirs(x, training=True)
  finally:
    keras.mixed_precision.set_global_policy("float32")
  assert ours_out.dtype == tf.bfloat16
  np.testing.assert_allclose(tf.cast(ours_out, tf.float32).numpy(), tf.cast(theirs_out, tf.float32).numpy(),
                             atol=0.05)  # bfloat16 keeps ~3 significant digits of values up to ~4
  np.testing.assert_allclose(ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-5)


def test_falls_back_to_keras_where_the_kernel_does_not_apply():
  ours, theirs = _layers(synchronized=True)
  x = _images()
  np.testing.assert_allclose(ours(x, training=True).numpy(), theirs(x, training=True).numpy(), atol=1e-5)
  flat_ours, flat_theirs = (batch_norm.BatchNormalization(), keras.layers.BatchNormalization())
  vectors = tf.reshape(_images(), (-1, CHANNELS))
  np.testing.assert_allclose(flat_ours(vectors, training=True).numpy(), flat_theirs(vectors, training=True).numpy(),
                             atol=1e-5)


def test_serializes_as_its_own_class():
  layer = batch_norm.BatchNormalization(momentum=MOMENTUM, epsilon=EPSILON, name="bn")
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert type(restored) is batch_norm.BatchNormalization
  assert (restored.momentum, restored.epsilon) == (MOMENTUM, EPSILON)
