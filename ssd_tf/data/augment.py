"""SSD training augmentations in TensorFlow ops, so they run inside tf.data in parallel.

The paper's chain is photometric distortion -> expand (zoom out onto a canvas of
the mean colour) -> IoU-constrained random crop -> horizontal flip -> resize. Here
the geometric steps are first worked out on coordinates only: together they pick
a *window* of the image in normalized image coordinates, which reaches outside
[0, 1] where the window covers expand canvas. The image is then resampled once,
window -> size x size (antialiased bilinear), and output pixels whose centre falls
outside the image take the fill colour. The result equals expanding, cropping and
resizing in turn, without building a canvas of up to 16x the image.

Photometric distortion runs on that output-size image: brightness, contrast,
saturation and hue act per pixel, so they commute with the resampling up to
rounding, and they touch far fewer pixels. Fill pixels are set after it, so the
canvas keeps the exact fill colour as in the paper's order.

Randomness is stateless: every random function takes a ``seed`` int tensor [2],
so results depend only on the seed, however tf.data schedules the work.
Boxes are normalized ``[ymin, xmin, ymax, xmax]``; images RGB in [0, 255].
"""

import functools

import tensorflow as tf

from ssd_tf import box_ops

_LUMA = (0.299, 0.587, 0.114)


def _uniform(seed, shape=(), low=0.0, high=1.0):
  return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def _grayscale(image):
  return tf.tensordot(image, tf.constant(_LUMA), axes=[[-1], [0]])[..., None]


def photometric_distort(image, seed, cfg, mask=None):
  """Brightness, contrast, saturation and hue, each with probability cfg.photometric_prob, in random order.

  image: float32 [H, W, 3] in [0, 255]; mask: optional bool [H, W] of the pixels
  that belong to the photo (contrast uses their mean grey). Returns float32 in [0, 255].
  Brightness adds U(-brightness_delta, brightness_delta); contrast and saturation
  scale the distance from the mean grey / the pixel's grey by U(range); hue
  rotates by U(-hue_delta, hue_delta) of the colour circle.
  """
  seeds = tf.random.experimental.stateless_split(seed, 6)
  applied = _uniform(seeds[0], [4]) < cfg.photometric_prob
  order = tf.argsort(_uniform(seeds[1], [4]))
  delta = _uniform(seeds[2], (), -cfg.brightness_delta, cfg.brightness_delta)
  contrast = _uniform(seeds[3], (), *cfg.contrast_range)
  saturation = _uniform(seeds[4], (), *cfg.saturation_range)
  hue = _uniform(seeds[5], (), -cfg.hue_delta, cfg.hue_delta)
  weights = tf.ones(tf.shape(image)[:2]) if mask is None else tf.cast(mask, tf.float32)

  def adjust_contrast(x):
    mean = tf.reduce_sum(_grayscale(x)[..., 0] * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
    return (x - mean) * contrast + mean

  def adjust_saturation(x):
    grey = _grayscale(x)
    return (x - grey) * saturation + grey

  ops = (lambda x: x + delta, adjust_contrast, adjust_saturation, lambda x: tf.image.adjust_hue(x, hue))

  def maybe_apply(i, x):
    return tf.cond(applied[i], lambda: tf.clip_by_value(ops[i](x), 0.0, 255.0), lambda: x)

  for step in range(4):  # step s runs op order[s]
    image = tf.switch_case(order[step], [functools.partial(maybe_apply, i, image) for i in range(4)])
  return image


def sample_expand(seed, cfg):
  """Expand canvas in normalized image coordinates [4] (the image is [0, 0, 1, 1] on it).

  With probability cfg.expand_prob the canvas is r x the image, r ~ U(1, expand_max_ratio),
  with the image at a uniform position; otherwise it is the image itself.
  """
  seeds = tf.random.experimental.stateless_split(seed, 3)
  ratio = tf.where(_uniform(seeds[0]) < cfg.expand_prob,
                   _uniform(seeds[1], (), 1.0, cfg.expand_max_ratio), 1.0)
  offset = -_uniform(seeds[2], [2]) * (ratio - 1.0)
  return tf.concat([offset, offset + ratio], axis=0)


def sample_crop(seed, canvas, boxes, is_crowd, height, width, cfg):
  """The paper's IoU-constrained random crop of the canvas -> window [4] (same coordinates).

  One choice among cfg.crop_min_ious (0.0: no IoU constraint) and, if
  cfg.crop_keep_whole, the whole canvas; a crop happens with probability
  cfg.crop_prob. Up to cfg.crop_max_trials candidates, each side U(crop_scale_range)
  of the canvas side, pixel aspect w/h in crop_aspect_range; the first one that
  has a non-crowd box with IoU >= the chosen minimum and a non-crowd box centre
  inside wins. Images without non-crowd boxes take any candidate of valid
  aspect. No winner: the whole canvas (as Caffe's SSD does).
  height, width: image size in pixels (for the aspect ratio).
  """
  min_ious = tf.constant(cfg.crop_min_ious, tf.float32)
  num_ious = len(cfg.crop_min_ious)
  trials = cfg.crop_max_trials
  seeds = tf.random.experimental.stateless_split(seed, 5)
  choice = tf.random.stateless_uniform((), seeds[0], 0, num_ious + int(cfg.crop_keep_whole), tf.int32)
  wanted = (choice < num_ious) & (_uniform(seeds[1]) < cfg.crop_prob)
  min_iou = tf.gather(min_ious, tf.minimum(choice, num_ious - 1))

  side = canvas[2] - canvas[0]
  hw = _uniform(seeds[2], [trials, 2], *cfg.crop_scale_range) * side
  corner = canvas[:2] + _uniform(seeds[3], [trials, 2]) * (side - hw)
  candidates = tf.concat([corner, corner + hw], axis=-1)                  # [T, 4]
  aspect = hw[:, 1] * tf.cast(width, tf.float32) / (hw[:, 0] * tf.cast(height, tf.float32))
  aspect_ok = (aspect >= cfg.crop_aspect_range[0]) & (aspect <= cfg.crop_aspect_range[1])

  objects = tf.logical_not(is_crowd)[None, :]                             # [1, K]
  overlaps = box_ops.iou(candidates, boxes)                               # [T, K]
  best_iou = tf.reduce_max(tf.where(objects, overlaps, -1.0), axis=1)
  centres = (boxes[:, :2] + boxes[:, 2:]) / 2
  inside = tf.reduce_all((centres[None] > candidates[:, None, :2]) &
                         (centres[None] < candidates[:, None, 2:]), axis=-1)  # [T, K]
  no_objects = tf.logical_not(tf.reduce_any(objects))
  valid = aspect_ok & (((best_iou >= min_iou) & tf.reduce_any(inside & objects, axis=1)) | no_objects)
  found = wanted & tf.reduce_any(valid)
  return tf.where(found, candidates[tf.argmax(tf.cast(valid, tf.int32))], canvas)


def transform_boxes(boxes, window, flip, size, min_box_px):
  """Boxes in image coordinates -> boxes in the output image of the window.

  Keeps boxes whose centre lies strictly inside the window, clipped to it, and at
  least min_box_px output pixels on each side. Returns (boxes [K', 4], keep bool [K]).
  """
  origin, extent = window[:2], window[2:] - window[:2]
  mins = (boxes[:, :2] - origin) / extent
  maxs = (boxes[:, 2:] - origin) / extent
  centres = (mins + maxs) / 2
  keep = tf.reduce_all((centres > 0.0) & (centres < 1.0), axis=-1)
  mins, maxs = tf.clip_by_value(mins, 0.0, 1.0), tf.clip_by_value(maxs, 0.0, 1.0)
  keep &= tf.reduce_all((maxs - mins) * size >= min_box_px, axis=-1)
  ymin, xmin = tf.unstack(mins, axis=-1)
  ymax, xmax = tf.unstack(maxs, axis=-1)
  xmin, xmax = tf.where(flip, 1.0 - xmax, xmin), tf.where(flip, 1.0 - xmin, xmax)
  out = tf.stack([ymin, xmin, ymax, xmax], axis=-1)
  return tf.boolean_mask(out, keep), keep


def render(image, window, flip, size):
  """Resamples the image's window to [size, size, 3] float32 (antialiased bilinear).

  window: normalized image coordinates, may reach outside [0, 1]; flip mirrors
  the output left-right. Returns (image, inside bool [size, size]: output pixels
  whose centre falls on the image; the others are 0 and take the fill later).
  """
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  origin, extent = window[:2], window[2:] - window[:2]
  scale = size / (extent * shape)
  out = tf.raw_ops.ScaleAndTranslate(images=image[None], size=[size, size], scale=scale,
                                     translation=-origin * shape * scale, kernel_type="triangle",
                                     antialias=True)[0]
  centres = (tf.range(size, dtype=tf.float32) + 0.5) / size
  rows = origin[0] + centres * extent[0]
  cols = origin[1] + centres * extent[1]
  inside = (((rows >= 0.0) & (rows <= 1.0))[:, None] & ((cols >= 0.0) & (cols <= 1.0))[None, :])
  out = tf.cond(flip, lambda: tf.reverse(out, axis=[1]), lambda: out)
  inside = tf.cond(flip, lambda: tf.reverse(inside, axis=[1]), lambda: inside)
  return out, inside


def train_transform(element, seed, cfg, size, mean_rgb):
  """One decoded element -> augmented element; the full SSD chain.

  element: image uint8 [H, W, 3], boxes [K, 4], labels int32 [K], is_crowd bool [K]
  (other keys pass through). Returns image float32 [size, size, 3] in [0, 255] and
  the boxes that survive (with their labels and crowd flags).
  cfg: config.data.augment; mean_rgb: fill colour of the expand canvas.
  """
  image, boxes = element["image"], element["boxes"]
  seeds = tf.random.experimental.stateless_split(seed, 4)
  shape = tf.shape(image)
  canvas = sample_expand(seeds[0], cfg)
  window = sample_crop(seeds[1], canvas, boxes, element["is_crowd"], shape[0], shape[1], cfg)
  flip = _uniform(seeds[2]) < cfg.flip_prob
  new_boxes, keep = transform_boxes(boxes, window, flip, size, cfg.min_box_px)
  pixels, inside = render(image, window, flip, size)
  pixels = photometric_distort(pixels, seeds[3], cfg, mask=inside)
  pixels = tf.where(inside[..., None], pixels, tf.constant(mean_rgb, tf.float32))
  out = dict(element, image=pixels, boxes=new_boxes)
  out["labels"] = tf.boolean_mask(element["labels"], keep)
  out["is_crowd"] = tf.boolean_mask(element["is_crowd"], keep)
  return out
