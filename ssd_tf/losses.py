"""MultiBox loss with hard negative mining, normalized by the global batch's positives.

Terms (all computed in float32, whatever the input dtype):
  * loc_loss: smooth L1 (beta 1) on the positives' offsets, summed over the 4
    coordinates and over the boxes.
  * cls_loss: softmax cross-entropy summed over the positives and the hard
    negatives. Per image, the hard negatives are the background boxes
    (cls_target 0) with the largest background cross-entropy -log softmax[0],
    min(neg_pos_ratio * positives in the image, background boxes in the image)
    of them, so an image without positives contributes nothing. Ignored boxes
    (cls_target -1) never contribute.
  * loss = loc_weight * loc_loss + cls_loss.

Scaling: both sums run over this call's whole batch and are divided by
max(1, P), where P is the number of positives in the GLOBAL batch. Inside
``strategy.run`` with more than one replica, P is all-reduced (SUM) across
replicas; in the default or a cross-replica context P is this call's count.
So every returned value is this replica's share of the global-batch value:
  * a custom training loop applies the replicas' gradients as they are (the
    optimizer sums them across replicas): do NOT divide by the number of
    replicas or the batch size, and do not use tf.nn.compute_average_loss;
  * for logging, ``strategy.reduce(SUM, value)`` gives the global-batch value
    of every entry, num_positives included (it is this replica's count).
"""

import tensorflow as tf


def _smooth_l1(diff):
  """Elementwise smooth L1 with beta 1: 0.5 x^2 if |x| < 1 else |x| - 0.5."""
  abs_diff = tf.abs(diff)
  return tf.where(abs_diff < 1.0, 0.5 * tf.square(diff), abs_diff - 0.5)


def _global_count(local_count):
  """Sum of local_count over the replicas when called inside strategy.run."""
  context = tf.distribute.get_replica_context()
  if context is not None and context.num_replicas_in_sync > 1:
    return context.all_reduce(tf.distribute.ReduceOp.SUM, local_count)
  return local_count


def hard_negatives(background_ce, cls_targets, neg_pos_ratio=3):
  """Per image, the min(neg_pos_ratio * positives, negatives) background boxes with the largest CE.

  background_ce float [B, N] (-log softmax[0]), cls_targets int [B, N] ->
  bool [B, N]. Ties go to the lower box index.
  """
  background_ce = tf.cast(background_ce, tf.float32)
  cls_targets = tf.cast(cls_targets, tf.int32)
  negative = cls_targets == 0
  num_pos = tf.reduce_sum(tf.cast(cls_targets > 0, tf.int32), axis=1)
  num_neg = tf.minimum(neg_pos_ratio * num_pos, tf.reduce_sum(tf.cast(negative, tf.int32), axis=1))
  score = tf.where(negative, tf.stop_gradient(background_ce), -float("inf"))
  order = tf.argsort(score, axis=1, direction="DESCENDING", stable=True)
  rank = tf.argsort(order, axis=1, stable=True)                   # position of each box in order
  return negative & (rank < num_neg[:, None])


def multibox_loss(loc_pred, logits, loc_targets, cls_targets, neg_pos_ratio=3, loc_weight=1.0):
  """MultiBox loss of a (per-replica) batch.

  Args:
    loc_pred: float [B, N, 4] predicted offsets (dy, dx, dh, dw).
    logits: float [B, N, 1 + C], column 0 = background.
    loc_targets: float [B, N, 4] from matching.match.
    cls_targets: int [B, N] from matching.match (-1 ignored, 0 background, 1..C).
  Returns:
    dict of float32 scalars: loss, loc_loss, cls_loss, num_positives (this
    call's positives); see the module docstring for the scaling.
  """
  loc_pred = tf.cast(loc_pred, tf.float32)
  logits = tf.cast(logits, tf.float32)
  loc_targets = tf.cast(loc_targets, tf.float32)
  cls_targets = tf.cast(cls_targets, tf.int32)

  positive = cls_targets > 0
  num_positives = tf.reduce_sum(tf.cast(positive, tf.float32))
  normalizer = tf.maximum(_global_count(num_positives), 1.0)

  loc_per_box = tf.reduce_sum(_smooth_l1(loc_pred - loc_targets), axis=-1)
  loc_loss = tf.reduce_sum(tf.where(positive, loc_per_box, 0.0)) / normalizer

  log_probs = tf.nn.log_softmax(logits, axis=-1)
  target_ce = -tf.gather(log_probs, tf.maximum(cls_targets, 0), batch_dims=2)   # [B, N]
  selected = positive | hard_negatives(-log_probs[..., 0], cls_targets, neg_pos_ratio)
  cls_loss = tf.reduce_sum(tf.where(selected, target_ce, 0.0)) / normalizer

  return dict(loss=loc_weight * loc_loss + cls_loss, loc_loss=loc_loss, cls_loss=cls_loss,
              num_positives=num_positives)
