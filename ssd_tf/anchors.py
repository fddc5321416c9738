"""Default boxes (anchors) from an anchor spec.

Layout, which the model's heads follow: levels in order; within a level, cells
row-major (y, then x); within a cell ``boxes_per_cell`` boxes in this order:
  1. square box of scale s_k,
  2. square box of scale sqrt(s_k * s_{k+1}),
  3. for each aspect ratio a: (w = s_k sqrt(a), h = s_k / sqrt(a)), then its reciprocal.
"""

import math

import numpy as np


def num_levels(anchor_config):
  """Number of feature levels m: one per ``aspect_ratios`` entry."""
  return len(anchor_config.aspect_ratios)


def level_scales(anchor_config):
  """Scales s_1..s_{m+1} (fractions of the input size), m = number of levels.

  Explicit ``scales`` win; otherwise the paper's formula
  ``s_k = s_min + (s_max - s_min)(k - 1)/(m - 1)`` with s_{m+1} = 1.0
  (as the TF Object Detection API and torchvision do).
  """
  levels = num_levels(anchor_config)
  if anchor_config.scales:
    scales = [float(s) for s in anchor_config.scales]
    if len(scales) != levels + 1:
      raise ValueError(f"anchors.scales needs {levels + 1} values (one per level plus one), "
                       f"got {len(scales)}")
    return scales
  s_min, s_max = anchor_config.min_scale, anchor_config.max_scale
  if levels == 1:
    return [s_min, 1.0]
  return [s_min + (s_max - s_min) * k / (levels - 1) for k in range(levels)] + [1.0]


def _check_lengths(anchor_config, feature_map_sizes):
  """ValueError naming the field when a per-level field does not have one entry per feature map."""
  levels = len(feature_map_sizes)
  if len(anchor_config.aspect_ratios) != levels:
    raise ValueError(f"anchors.aspect_ratios has {len(anchor_config.aspect_ratios)} entries for "
                     f"{levels} feature maps")
  if anchor_config.strides and len(anchor_config.strides) != levels:
    raise ValueError(f"anchors.strides has {len(anchor_config.strides)} entries for {levels} feature maps")


def boxes_per_cell(anchor_config):
  """Number of default boxes per feature-map cell, one int per level."""
  return [2 + 2 * len(ratios) for ratios in anchor_config.aspect_ratios]


def num_default_boxes(anchor_config, feature_map_sizes):
  """Total N = sum over levels of size^2 * boxes_per_cell."""
  _check_lengths(anchor_config, feature_map_sizes)
  return sum(f * f * a for f, a in zip(feature_map_sizes, boxes_per_cell(anchor_config)))


def _cell_shapes(scale, next_scale, ratios):
  """[(height, width)] of the boxes of one cell, in layout order."""
  extra = math.sqrt(scale * next_scale)
  shapes = [(scale, scale), (extra, extra)]
  for ratio in ratios:
    root = math.sqrt(ratio)
    shapes += [(scale / root, scale * root), (scale * root, scale / root)]
  return shapes


def default_boxes(anchor_config, image_size, feature_map_sizes):
  """All default boxes of an input of ``image_size`` pixels (square).

  ``feature_map_sizes``: the side of each level's (square) feature map, finest first.
  Cell centres are ``(i + 0.5) * stride`` pixels, with ``anchor_config.strides`` when
  given (the released specs) and ``image_size / size`` otherwise.
  Returns float32 [N, 4] ``[ymin, xmin, ymax, xmax]``, normalized (1 = the image side),
  clipped as ``anchor_config.clip`` says: "corners" clips the corners to [0, 1] (ssd_tf);
  "size" clamps height and width to [0, 1] and leaves corners outside the image
  (torchvision); "centre_size" clamps centre, height and width (NVIDIA); "none".
  """
  _check_lengths(anchor_config, feature_map_sizes)
  strides = anchor_config.strides or [image_size / f for f in feature_map_sizes]
  scales = level_scales(anchor_config)
  levels = []
  for k, (size, stride, ratios) in enumerate(zip(feature_map_sizes, strides, anchor_config.aspect_ratios)):
    centres = (np.arange(size, dtype=np.float64) + 0.5) * stride / image_size
    cy, cx = np.meshgrid(centres, centres, indexing="ij")           # [size, size]
    shapes = np.array(_cell_shapes(scales[k], scales[k + 1], ratios))  # [A, 2] (h, w)
    cy, cx = np.broadcast_to(cy[..., None], (size, size, len(shapes))), np.broadcast_to(
        cx[..., None], (size, size, len(shapes)))                    # [size, size, A]
    h, w = np.broadcast_to(shapes[:, 0], cy.shape), np.broadcast_to(shapes[:, 1], cy.shape)
    levels.append(np.stack([cy, cx, h, w], axis=-1).reshape(-1, 4))
  cy, cx, h, w = np.concatenate(levels, axis=0).T
  clip = anchor_config.clip
  if clip not in ("corners", "size", "centre_size", "none"):
    raise ValueError(f"anchors.clip={clip!r} must be 'corners', 'size', 'centre_size' or 'none'")
  if clip in ("size", "centre_size"):
    h, w = np.clip(h, 0.0, 1.0), np.clip(w, 0.0, 1.0)
  if clip == "centre_size":
    cy, cx = np.clip(cy, 0.0, 1.0), np.clip(cx, 0.0, 1.0)
  boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)
  if clip == "corners":
    boxes = np.clip(boxes, 0.0, 1.0)
  return boxes.astype(np.float32)
