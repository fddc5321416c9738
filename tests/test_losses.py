"""MultiBox loss: hard negatives, value against NumPy, gradients, distributed scaling."""

import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import losses


def _random_batch(rng, batch=4, num_anchors=60, num_classes=5, positive_counts=(6, 2, 0, 9)):
  """Model outputs and targets; image i has positive_counts[i] positives and a few ignored boxes."""
  loc_pred = rng.normal(0, 1.5, size=(batch, num_anchors, 4)).astype(np.float32)
  logits = rng.normal(0, 2, size=(batch, num_anchors, 1 + num_classes)).astype(np.float32)
  loc_targets = rng.normal(0, 1.5, size=(batch, num_anchors, 4)).astype(np.float32)
  cls_targets = np.zeros((batch, num_anchors), np.int32)
  for i, count in enumerate(positive_counts):
    boxes = rng.permutation(num_anchors)
    cls_targets[i, boxes[:count]] = rng.integers(1, num_classes + 1, size=count)
    cls_targets[i, boxes[count:count + 5]] = -1
  return loc_pred, logits, loc_targets, cls_targets


def _np_log_softmax(logits):
  logits = logits.astype(np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _np_hard_negatives(logits, cls_targets, neg_pos_ratio=3):
  background_ce = -_np_log_softmax(logits)[..., 0]
  selected = np.zeros(cls_targets.shape, bool)
  for i in range(len(cls_targets)):
    negatives = np.flatnonzero(cls_targets[i] == 0)
    count = min(neg_pos_ratio * np.count_nonzero(cls_targets[i] > 0), len(negatives))
    selected[i, negatives[np.argsort(-background_ce[i, negatives])[:count]]] = True
  return selected


def _np_multibox_loss(loc_pred, logits, loc_targets, cls_targets, neg_pos_ratio=3, loc_weight=1.0):
  log_probs = _np_log_softmax(logits)
  positive = cls_targets > 0
  diff = np.abs(loc_pred.astype(np.float64) - loc_targets)
  smooth_l1 = np.where(diff < 1, 0.5 * diff ** 2, diff - 0.5).sum(axis=-1)
  loc_sum = smooth_l1[positive].sum()
  target_log_probs = np.take_along_axis(log_probs, np.maximum(cls_targets, 0)[..., None], axis=-1)[..., 0]
  cls_sum = -target_log_probs[positive].sum()
  cls_sum += -log_probs[..., 0][_np_hard_negatives(logits, cls_targets, neg_pos_ratio)].sum()
  normalizer = max(1, positive.sum())
  return loc_weight * loc_sum / normalizer + cls_sum / normalizer, loc_sum / normalizer, cls_sum / normalizer


def test_hard_negatives_are_the_top_background_cross_entropies():
  rng = np.random.default_rng(0)
  _, logits, _, cls_targets = _random_batch(rng)
  background_ce = -tf.nn.log_softmax(logits)[..., 0]
  for ratio in [3, 1, 50]:
    selected = losses.hard_negatives(background_ce, cls_targets, ratio).numpy()
    np.testing.assert_array_equal(selected, _np_hard_negatives(logits, cls_targets, ratio))
  counts = losses.hard_negatives(background_ce, cls_targets).numpy().sum(axis=1)
  np.testing.assert_array_equal(counts, [18, 6, 0, 27])
  # A ratio asking for more than there are: every background box of the image, no ignored one.
  everything = losses.hard_negatives(background_ce, cls_targets, 50).numpy()
  np.testing.assert_array_equal(everything[[0, 1, 3]], cls_targets[[0, 1, 3]] == 0)
  # Hand case: 1 positive -> 2 negatives; equal cross-entropies go to the lower index.
  selected = losses.hard_negatives([[1.0, 2.0, 2.0, 5.0, 2.0]], [[1, 0, 0, -1, 0]], 2)
  np.testing.assert_array_equal(selected, [[False, True, True, False, False]])


@pytest.mark.parametrize("neg_pos_ratio, loc_weight", [(3, 1.0), (2, 0.5)])
def test_loss_matches_numpy_reference(neg_pos_ratio, loc_weight):
  rng = np.random.default_rng(1)
  batch = _random_batch(rng)
  result = losses.multibox_loss(*batch, neg_pos_ratio=neg_pos_ratio, loc_weight=loc_weight)
  loss, loc_loss, cls_loss = _np_multibox_loss(*batch, neg_pos_ratio=neg_pos_ratio, loc_weight=loc_weight)
  np.testing.assert_allclose(result["loss"], loss, rtol=1e-5)
  np.testing.assert_allclose(result["loc_loss"], loc_loss, rtol=1e-5)
  np.testing.assert_allclose(result["cls_loss"], cls_loss, rtol=1e-5)
  assert result["num_positives"].numpy() == 17


def test_smooth_l1_hand_values():
  # One positive, offsets off by (0.5, -2, 0, 1): 0.125 + 1.5 + 0 + 0.5 = 2.125.
  loc_pred = np.array([[[0.5, -2.0, 0.0, 1.0], [9.0, 9.0, 9.0, 9.0]]], np.float32)
  logits = np.zeros((1, 2, 3), np.float32)
  result = losses.multibox_loss(loc_pred, logits, np.zeros_like(loc_pred), np.array([[2, 0]]))
  assert result["loc_loss"].numpy() == pytest.approx(2.125)
  assert result["cls_loss"].numpy() == pytest.approx(2 * np.log(3), rel=1e-6)  # positive + 1 negative


def test_float16_inputs_give_float32_outputs():
  rng = np.random.default_rng(2)
  loc_pred, logits, loc_targets, cls_targets = _random_batch(rng)
  result = losses.multibox_loss(loc_pred.astype(np.float16), logits.astype(np.float16),
                                loc_targets, cls_targets)
  assert all(value.dtype == tf.float32 for value in result.values())
  reference = _np_multibox_loss(loc_pred.astype(np.float16), logits.astype(np.float16),
                                loc_targets, cls_targets)
  np.testing.assert_allclose(result["loss"], reference[0], rtol=1e-4)


def _loss_and_gradients(loc_pred, logits, loc_targets, cls_targets):
  loc_pred, logits = tf.Variable(loc_pred), tf.Variable(logits)
  with tf.GradientTape() as tape:
    result = losses.multibox_loss(loc_pred, logits, loc_targets, cls_targets)
  loc_grad, logits_grad = tape.gradient(result["loss"], [loc_pred, logits])
  return result, loc_grad.numpy(), logits_grad.numpy()


def test_gradients_with_an_image_without_ground_truth():
  rng = np.random.default_rng(3)
  batch = _random_batch(rng, batch=2, positive_counts=(4, 0))
  result, loc_grad, logits_grad = _loss_and_gradients(*batch)
  assert np.isfinite(result["loss"].numpy()) and result["loss"].numpy() > 0
  assert np.all(np.isfinite(loc_grad)) and np.all(np.isfinite(logits_grad))
  assert np.count_nonzero(logits_grad[0]) > 0 and np.count_nonzero(loc_grad[0]) > 0
  # The image without positives selects no hard negatives: it contributes nothing.
  np.testing.assert_array_equal(logits_grad[1], 0.0)
  np.testing.assert_array_equal(loc_grad[1], 0.0)
  # Ignored boxes never get a gradient.
  assert np.all(logits_grad[0][batch[3][0] == -1] == 0)


def test_batch_without_ground_truth_gives_zero_loss_and_finite_gradients():
  rng = np.random.default_rng(4)
  batch = _random_batch(rng, batch=2, positive_counts=(0, 0))
  result, loc_grad, logits_grad = _loss_and_gradients(*batch)
  assert result["loss"].numpy() == 0.0 and result["num_positives"].numpy() == 0.0
  assert np.all(np.isfinite(loc_grad)) and np.all(np.isfinite(logits_grad))


def test_replica_losses_and_gradients_sum_to_the_global_batch():
  devices = [d.name for d in tf.config.list_logical_devices("CPU")]
  assert len(devices) >= 2, "conftest should split the CPU into two logical devices"
  strategy = tf.distribute.MirroredStrategy(devices[:2])
  rng = np.random.default_rng(5)
  batch = _random_batch(rng, batch=4, positive_counts=(7, 1, 0, 3))   # replicas: 8 and 3 positives
  num_classes = batch[1].shape[-1] - 1

  with strategy.scope():
    bias = tf.Variable(tf.zeros([1 + num_classes]))
    scale = tf.Variable(1.0)

  def loss_and_gradients(loc_pred, logits, loc_targets, cls_targets):
    with tf.GradientTape() as tape:
      result = losses.multibox_loss(loc_pred * scale, logits + bias, loc_targets, cls_targets)
    return result, tape.gradient(result["loss"], [bias, scale])

  def replica_batch(context):
    half = len(batch[0]) // 2
    start = context.replica_id_in_sync_group * half
    return tuple(tf.constant(x[start:start + half]) for x in batch)

  @tf.function
  def distributed_step(inputs):
    result, grads = strategy.run(lambda replica_inputs: loss_and_gradients(*replica_inputs), args=(inputs,))
    reduce = lambda value: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
    return tf.nest.map_structure(reduce, result), [reduce(g) for g in grads]

  result, grads = distributed_step(strategy.experimental_distribute_values_from_function(replica_batch))
  reference, reference_grads = loss_and_gradients(*batch)
  for key in ["loss", "loc_loss", "cls_loss", "num_positives"]:
    np.testing.assert_allclose(result[key], reference[key], rtol=1e-5, err_msg=key)
  for grad, reference_grad in zip(grads, reference_grads):
    assert np.any(reference_grad.numpy() != 0)
    np.testing.assert_allclose(grad, reference_grad, rtol=1e-5, atol=1e-7)
  # In the cross-replica context the local count is used: same as the default context.
  with strategy.scope():
    cross_replica = losses.multibox_loss(*batch)
  np.testing.assert_allclose(cross_replica["loss"], reference["loss"], rtol=1e-6)
