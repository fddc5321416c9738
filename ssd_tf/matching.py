"""Ground truth -> default box targets, batched and in graph (tf.function / XLA friendly).

Ground-truth rows fall in three kinds:
  * valid: label >= 1, not crowd, positive area. Only these make positives.
  * crowd: label >= 1, crowd, positive area. Never positives; they only mark
    default boxes as ignored.
  * everything else (padding rows with label -1, zero-area boxes): never matched.

Per image, in this order:
  1. Forced matches. Every valid ground truth takes its own best default box,
     even below ``iou_threshold``, and no two ground truths share one. This runs
     in rounds (a tf.while_loop of at most M rounds): each unplaced ground truth
     proposes its best still-free default box; a default box proposed by several
     goes to the proposer with the highest IoU (ties: lowest row), is taken out,
     and the losers propose again next round. Every round places at least one
     ground truth, usually all are placed in one or two. A ground truth that
     overlaps no free default box at all (IoU 0) gets no forced match.
  2. Threshold matches. Every default box whose IoU with its best valid ground
     truth is >= ``iou_threshold`` is positive with that ground truth's label.
     Forced matches override (a forced box keeps its forcing ground truth).
  3. Crowd. A default box that is not positive and lies at least
     ``crowd_ioa_threshold`` inside some crowd box (intersection over the
     default box's area, :func:`box_ops.ioa`) is ignored: cls_target -1.
  4. Everything else is background: cls_target 0.
"""

import tensorflow as tf

from ssd_tf import box_ops


def _row_kinds(gt_boxes, gt_labels, gt_is_crowd):
  """[B, M] masks (valid, crowd) as described in the module docstring."""
  ymin, xmin, ymax, xmax = tf.unstack(gt_boxes, axis=-1)
  usable = (gt_labels >= 1) & (ymax > ymin) & (xmax > xmin)
  return usable & ~gt_is_crowd, usable & gt_is_crowd


def _forced_matches(valid_iou, valid):
  """Conflict-free best default box per valid ground truth.

  valid_iou [B, M, N] (-1 on invalid rows), valid [B, M] ->
  int32 [B, M] default box index, -1 where none.
  """
  batch, rows, num_anchors = tf.unstack(tf.shape(valid_iou))
  image_index = tf.broadcast_to(tf.range(batch)[:, None], [batch, rows])
  row_index = tf.broadcast_to(tf.range(rows)[None, :], [batch, rows])

  def one_round(assigned, pending, free):
    free_iou = tf.where(free[:, None, :], valid_iou, -1.0)
    choice = tf.argmax(free_iou, axis=2, output_type=tf.int32)           # [B, M]
    choice_iou = tf.reduce_max(free_iou, axis=2)
    proposing = pending & (choice_iou > 0)
    # Winner per proposed box: highest IoU, then lowest row.
    target = tf.stack([image_index, choice], axis=-1)                   # [B, M, 2]
    best_iou = tf.tensor_scatter_nd_max(
        tf.fill(tf.shape(free), -1.0), target, tf.where(proposing, choice_iou, -1.0))
    contender = proposing & (choice_iou >= tf.gather(best_iou, choice, batch_dims=1))
    first_row = tf.tensor_scatter_nd_min(
        tf.fill(tf.shape(free), rows), target, tf.where(contender, row_index, rows))
    wins = contender & (tf.gather(first_row, choice, batch_dims=1) == row_index)
    assigned = tf.where(wins, choice, assigned)
    free &= first_row == rows                                            # proposed boxes are taken
    return assigned, proposing & ~wins, free

  assigned, _, _ = tf.while_loop(
      lambda assigned, pending, free: tf.reduce_any(pending),
      one_round,
      (tf.fill([batch, rows], -1), valid, tf.ones([batch, num_anchors], tf.bool)),
      maximum_iterations=rows)
  return assigned


def _gather_rows(values, index):
  """values [B, M, ...], index [B, N] -> [B, N, ...]."""
  return tf.gather(values, index, batch_dims=1)


def match(gt_boxes, gt_labels, gt_is_crowd, anchors, iou_threshold=0.5, crowd_ioa_threshold=0.5,
          variances=(0.1, 0.2)):
  """Training targets for a batch.

  Args:
    gt_boxes: float [B, M, 4] normalized yxyx.
    gt_labels: int [B, M], 1..C, -1 for padding rows.
    gt_is_crowd: bool [B, M].
    anchors: float [N, 4] default boxes, normalized yxyx.
  Returns:
    loc_targets float32 [B, N, 4]: encoded offsets (box_ops.encode) of the
      matched ground truth for positives, 0 elsewhere.
    cls_targets int32 [B, N]: 1..C positive, 0 background, -1 ignored.
  """
  gt_boxes = tf.cast(tf.convert_to_tensor(gt_boxes), tf.float32)
  gt_labels = tf.cast(tf.convert_to_tensor(gt_labels), tf.int32)
  gt_is_crowd = tf.cast(tf.convert_to_tensor(gt_is_crowd), tf.bool)
  anchors = tf.cast(tf.convert_to_tensor(anchors), tf.float32)
  if gt_boxes.shape.rank != 3 or gt_boxes.shape[-1] != 4:
    raise ValueError(f"match: gt_boxes must be [B, M, 4], got {gt_boxes.shape}")
  if not (iou_threshold > 0 and crowd_ioa_threshold > 0):
    raise ValueError(f"match: iou_threshold ({iou_threshold}) and crowd_ioa_threshold "
                     f"({crowd_ioa_threshold}) must be positive")
  if gt_boxes.shape[1] == 0:
    raise ValueError("match: gt_boxes has no rows (M = 0); pad ground truth with label -1 rows")
  batch, num_anchors = tf.shape(gt_boxes)[0], tf.shape(anchors)[0]

  valid, crowd = _row_kinds(gt_boxes, gt_labels, gt_is_crowd)
  valid_iou = tf.where(valid[:, :, None], box_ops.iou(gt_boxes, anchors), -1.0)  # [B, M, N]

  # Threshold matches.
  best_row = tf.argmax(valid_iou, axis=1, output_type=tf.int32)                  # [B, N]
  positive = tf.reduce_max(valid_iou, axis=1) >= iou_threshold

  # Forced matches override: scatter row m into its assigned box (column N
  # collects the rows without one and is dropped).
  assigned = _forced_matches(valid_iou, valid)
  image_index = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(assigned))
  row_index = tf.broadcast_to(tf.range(tf.shape(assigned)[1])[None, :], tf.shape(assigned))
  target = tf.stack([image_index, tf.where(assigned >= 0, assigned, num_anchors)], axis=-1)
  forced_row = tf.tensor_scatter_nd_update(tf.fill([batch, num_anchors + 1], -1), target, row_index)
  forced_row = forced_row[:, :-1]
  forced = forced_row >= 0
  matched_row = tf.where(forced, forced_row, best_row)
  positive |= forced

  cls_targets = tf.where(positive, _gather_rows(gt_labels, matched_row), 0)
  crowd_ioa = tf.where(crowd[:, :, None], box_ops.ioa(gt_boxes, anchors), 0.0)
  in_crowd = tf.reduce_max(crowd_ioa, axis=1) >= crowd_ioa_threshold
  cls_targets = tf.where(~positive & in_crowd, -1, cls_targets)

  offsets = box_ops.encode(_gather_rows(gt_boxes, matched_row), anchors, variances)
  loc_targets = tf.where(positive[:, :, None], offsets, 0.0)
  return loc_targets, cls_targets
