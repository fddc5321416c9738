"""Optimizer, learning-rate schedule and weight decay.

SGD with momentum. Weight decay is the classic L2 term the SSD papers use
(gradient ``weight_decay * w``, so it flows through momentum), applied only to
kernels (rank >= 2): BatchNorm parameters, biases and the L2Norm scale are left
alone.
"""

import math

import keras
import tensorflow as tf


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then cosine or step decay.

  cosine: peak * 0.5 * (1 + cos(pi * t)), t = progress after warmup in [0, 1].
  step:   peak * factor ** (number of boundaries passed).
  """

  def __init__(self, peak, warmup_steps, total_steps, kind="cosine", boundaries=(), factor=0.1):
    if kind not in ("cosine", "step"):
      raise ValueError(f"config.train.schedule={kind!r}: choose 'cosine' or 'step'")
    self.peak = float(peak)
    self.warmup_steps = int(warmup_steps)
    self.total_steps = int(total_steps)
    self.kind = kind
    self.boundaries = tuple(int(b) for b in boundaries)
    self.factor = float(factor)

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = tf.cast(self.warmup_steps, tf.float32)
    if self.kind == "cosine":
      span = max(self.total_steps - self.warmup_steps, 1)
      progress = tf.clip_by_value((step - warmup) / span, 0.0, 1.0)
      decayed = self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
    else:
      passed = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.boundaries] + [tf.constant(0.0)])
      decayed = self.peak * tf.pow(self.factor, passed)
    if self.warmup_steps <= 0:
      return decayed
    return tf.where(step < warmup, self.peak * (step + 1.0) / (warmup + 1.0), decayed)

  def get_config(self):
    return dict(peak=self.peak, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                kind=self.kind, boundaries=self.boundaries, factor=self.factor)


def peak_learning_rate(train_config):
  """base_learning_rate, scaled linearly by batch_size / lr_reference_batch when asked."""
  lr = train_config.base_learning_rate
  if train_config.scale_lr_with_batch:
    lr *= train_config.batch_size / train_config.lr_reference_batch
  return lr


def make_optimizer(train_config):
  """SGD(momentum) on the warmup schedule; wrapped for loss scaling under mixed_float16."""
  schedule = WarmupDecay(peak_learning_rate(train_config), train_config.warmup_steps,
                         train_config.steps, train_config.schedule, train_config.step_boundaries,
                         train_config.step_factor)
  optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=train_config.momentum)
  if train_config.mixed_precision == "mixed_float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def is_decayed(variable):
  """Weight decay applies to kernels only (rank >= 2)."""
  return len(variable.shape) >= 2


def weight_decay_loss(variables, weight_decay, num_replicas=1):
  """0.5 * weight_decay * sum(w^2) over decayed variables, float32 scalar.

  Its gradient is ``weight_decay * w``. Replica gradients are summed by the
  optimizer, so each replica adds 1/num_replicas of the term. Added to the loss
  (not to the gradients) so loss scaling under mixed_float16 covers it.
  """
  decayed = [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables if is_decayed(v)]
  if not weight_decay or not decayed:
    return tf.constant(0.0)
  return 0.5 * weight_decay / num_replicas * tf.add_n(decayed)


def clip_gradients(gradients, clip_norm, loss_scale=1.0):
  """(gradients clipped to global norm clip_norm, the global norm before clipping), inside strategy.run.

  The norm is that of the global-batch gradient with the loss scale removed. Keras' own
  ``global_clipnorm`` clips each replica's share before the optimizer sums them, which is not the
  norm of the global gradient. Here the replicas' gradients are summed first, clipped, and divided
  by the replica count again (the optimizer then sums the identical copies). ``loss_scale`` is the
  mixed precision loss scale the gradients are still multiplied by. clip_norm 0: the gradients are
  returned as they are (one replica only: the norm needs the summed gradient).
  """
  context = tf.distribute.get_replica_context()
  replicas = context.num_replicas_in_sync if context else 1
  if clip_norm <= 0:
    if replicas > 1:
      raise ValueError("the global gradient norm without clipping is computed for one replica only")
    return gradients, tf.linalg.global_norm(gradients) / loss_scale
  if replicas > 1:
    gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
  gradients, norm = tf.clip_by_global_norm(gradients, clip_norm * loss_scale)
  if replicas > 1:
    gradients = [g / replicas for g in gradients]
  return gradients, norm / loss_scale
