"""Batch normalization on TensorFlow's fused kernel.

Keras 3 builds batch normalization from separate ops (moments, then scale and shift, plus
float32 casts under mixed precision), about ten passes over each activation forward and as many
backward. On the CPU that was about 15% of an SSD300-ResNet-18 training step (README,
Performance). FusedBatchNormV3 (oneDNN on x86) makes one pass each way, and in inference
Grappler folds it into the convolution before it (no BatchNorm op is left in the profile).
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ssd_tf")
class BatchNormalization(keras.layers.BatchNormalization):
  """keras.layers.BatchNormalization (same weights, config, outputs and moving statistics) computed
  by FusedBatchNormV3 for [B, H, W, C] inputs normalized over C.

  Cases the fused kernel does not cover fall back to Keras: cross-replica (synchronized)
  statistics, masks, batch renormalization, other ranks or axes.
  """

  def _fusable(self, inputs, mask):
    return (mask is None and not self.synchronized and not self.renorm and len(inputs.shape) == 4
            and self.axis in (-1, 3))

  def call(self, inputs, training=None, mask=None):
    if not self._fusable(inputs, mask):
      return super().call(inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    scale = self.gamma if self.scale else tf.ones([channels], tf.float32)
    offset = self.beta if self.center else tf.zeros([channels], tf.float32)
    if training and self.trainable:
      outputs, mean, variance = tf.raw_ops.FusedBatchNormV3(
          x=inputs, scale=scale, offset=offset, mean=tf.constant([], tf.float32),
          variance=tf.constant([], tf.float32), epsilon=self.epsilon, is_training=True)[:3]
      # The kernel returns the unbiased batch variance; Keras averages the biased one.
      count = tf.cast(tf.size(inputs, out_type=tf.int64) // channels, tf.float32)
      variance *= (count - 1.0) / tf.maximum(count, 1.0)
      self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
      self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
    else:
      outputs = tf.raw_ops.FusedBatchNormV3(
          x=inputs, scale=scale, offset=offset, mean=self.moving_mean, variance=self.moving_variance,
          epsilon=self.epsilon, is_training=False)[0]
    return tf.cast(outputs, self.compute_dtype)
