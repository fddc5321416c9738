"""Default configuration fields and the released SSD anchor specs.

Every experiment in ``configs/`` starts from :func:`base_config` and changes
what differs. All values are the released COCO ones unless stated.
"""

import os
import pathlib

from absl import logging
import ml_collections

# Released COCO anchor specs (SSD paper / Caffe release, torchvision, NVIDIA).
# `scales` has one more entry than levels: the last one only sizes the extra
# sqrt(s_k * s_{k+1}) box of the last level. `strides` (cell pitch in pixels) are
# the released ones, which hold for exactly these feature-map sizes; stating the
# sizes makes the SSD check that its network produces them.
SSD300_ANCHORS = dict(
    feature_map_sizes=(38, 19, 10, 5, 3, 1),
    strides=(8, 16, 32, 64, 100, 300),
    scales=(0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
)
SSD512_ANCHORS = dict(
    feature_map_sizes=(64, 32, 16, 8, 4, 2, 1),
    strides=(8, 16, 32, 64, 128, 256, 512),
    scales=(0.04, 0.1, 0.26, 0.42, 0.58, 0.74, 0.9, 1.06),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
)

# Extra feature layers after the backbone taps: (1x1 channels, 3x3 channels,
# stride, padding) per level. SSD300 ends 5 -> 3 -> 1 with valid 3x3 convs,
# SSD512 halves every level ("same" padding).
SSD300_EXTRAS = ((256, 512, 2, "same"), (256, 512, 2, "same"), (128, 256, 2, "same"),
                 (128, 256, 1, "valid"), (128, 256, 1, "valid"))
SSD512_EXTRAS = ((256, 512, 2, "same"), (256, 512, 2, "same"), (128, 256, 2, "same"),
                 (128, 256, 2, "same"), (128, 256, 2, "same"), (128, 256, 2, "same"))


def coco_sample_dir():
  """The folder of the real COCO 2017 sample (80 train2017 + 80 val2017 images, COCO layout).

  $COCO_TINY_DIR when set (read at each call), else ../shared/data/coco_tiny beside the repository.
  """
  repo = pathlib.Path(__file__).resolve().parent.parent
  return os.environ.get("COCO_TINY_DIR", str(repo.parent / "shared" / "data" / "coco_tiny"))


def anchor_config(spec, clip="corners", min_scale=0.2, max_scale=0.9):
  """An anchor ConfigDict from a spec dict like SSD300_ANCHORS.

  Set ``scales=()`` to use the paper's formula between min_scale and max_scale.
  ``feature_map_sizes`` may be left out: the SSD reads them from its network (and
  checks them against the spec when they are given); ``strides`` left out are
  image_size / feature-map size.
  """
  return ml_collections.ConfigDict(dict(
      feature_map_sizes=tuple(spec.get("feature_map_sizes", ())),
      strides=tuple(spec.get("strides", ())),
      scales=tuple(spec.get("scales", ())),
      min_scale=min_scale,
      max_scale=max_scale,
      aspect_ratios=tuple(tuple(a) for a in spec["aspect_ratios"]),
      clip=clip,
  ))


def base_config():
  """SSD300-ResNet50 on COCO 2017 with the released training recipe."""
  c = ml_collections.ConfigDict()
  c.name = "ssd300_resnet50_coco"
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      backbone="resnet50",         # resnet18 | resnet34 | resnet50 | resnet101 | vgg16 | mobilenet_v3_large
      backbone_weights="imagenet", # None | "imagenet" | a torchvision ResNet .pth | a .weights.h5 file
      init_from="",                # fine-tuning: a run directory or checkpoint prefix whose weights of the
                                   # same name and shape start a fresh run (ssd_tf/init_from.py)
      backbone_taps=(),            # stages feeding the heads; (): the backbone's default (backbones/)
      backbone_variant="",         # "" (the backbone's default) | keras | torchvision | reduced_tail (backbones/)
      input_normalization="",      # "" (the backbone's) | caffe | torch | rgb_mean | tf (backbones/layers.py)
      resize_antialias=True,       # inference resize to image_size (eval, predict, SavedModel); False:
                                   # plain bilinear, as torchvision's detection transform
      image_size=300,
      num_classes=80,              # foreground classes C; logits have C + 1 columns
      extra_layers=SSD300_EXTRAS,  # (mid, out, stride, "same" | "valid" | "symmetric") per level
      extra_batchnorm=True,        # extra levels conv-BN-ReLU; False: conv with bias, ReLU (torchvision)
      ssdlite=False,               # SSDLite: depthwise-separable extra levels and heads, BN, ReLU6 (model.py)
      batchnorm_epsilon=1e-5,      # of the extra levels' and SSDLite heads' BatchNorm
      batchnorm_synchronized=False,  # cross-replica BatchNorm statistics
      batchnorm_momentum=0.99,
      head_kernel_size=3,
  ))
  c.anchors = anchor_config(SSD300_ANCHORS)

  c.box_coder = ml_collections.ConfigDict(dict(variances=(0.1, 0.2)))
  c.matching = ml_collections.ConfigDict(dict(
      iou_threshold=0.5,        # default box -> best ground truth when IoU >= this
      crowd_ioa_threshold=0.5,  # unmatched default boxes this much inside a crowd box are ignored
  ))
  c.loss = ml_collections.ConfigDict(dict(
      neg_pos_ratio=3,
      loc_weight=1.0,
  ))
  c.postprocess = ml_collections.ConfigDict(dict(
      score_threshold=0.01,
      iou_threshold=0.45,
      max_detections_per_class=200,
      max_detections=200,
      pre_nms_top_k=0,             # per class, only the k best boxes enter NMS (0: all)
      clip_boxes="after_nms",      # after_nms | before_nms | none: when boxes are clipped to the image
  ))

  c.data = ml_collections.ConfigDict(dict(
      source="tfrecord",          # tfrecord | tfds
      coco_dir="",                # COCO 2017 layout: annotations/instances_{split}.json, {split}/
      tfrecord_dir="",            # prepared shards + label_map.json
      tfds_data_dir="",
      tfds_manual_dir="",
      train_split="train2017",
      eval_split="val2017",
      num_shards=16,
      keep_empty_images=True,
      max_boxes=100,              # ground truth rows per image after padding
      max_image_pixels=100_000_000,  # larger images (header's width x height) are refused: prepare,
                                     # predict, the SavedModel (checked before decoding)
      shuffle_buffer=1024,
      deterministic=False,        # repeatable order and augmentation from `seed` (slower)
      mean_rgb=(123.7, 116.3, 103.5),  # dataset mean RGB pixel: expand fill (ImageNet/COCO mean)
      num_parallel_calls=-1,      # tf.data parallel decode + augment calls (-1: AUTOTUNE)
      service_address="",         # host:port of a tf.data service dispatcher: training batches come from
                                  # its data workers (ssd_tf/data/service.py); "": the in-process pipeline
      augment=ml_collections.ConfigDict(dict(
          photometric_prob=0.5,
          brightness_delta=32.0,
          contrast_range=(0.5, 1.5),
          saturation_range=(0.5, 1.5),
          hue_delta=18.0 / 360.0,
          expand_prob=0.5,
          expand_max_ratio=4.0,
          crop_prob=1.0,          # the paper samples a crop for every image ("none" is one choice)
          crop_min_ious=(0.0, 0.1, 0.3, 0.5, 0.7, 0.9),  # 0.0: a crop without IoU constraint
          crop_keep_whole=True,   # one more equally likely choice: keep the whole image (paper)
          crop_scale_range=(0.3, 1.0),
          crop_aspect_range=(0.5, 2.0),
          crop_max_trials=50,
          flip_prob=0.5,
          min_box_px=1.0,         # boxes under this many output pixels on a side are dropped
      )),
      synthetic=ml_collections.ConfigDict(dict(  # --mode=synthetic (ssd_tf/data/synthetic.py)
          num_train=2000,
          num_val=200,
          side_range=(256, 320),  # (min, max) side of the generated images, in pixels
          seed=0,
          max_objects=6,          # 1..max_objects shapes per image (at most 8)
      )),
  ))

  c.train = ml_collections.ConfigDict(dict(
      strategy="auto",            # auto | default | mirrored | multi_worker (see ssd_tf/distribute.py)
      devices=(),                 # devices for "mirrored" (empty: all GPUs)
      batch_size=32,              # global batch; per replica = batch_size / replicas
      steps=240_000,
      base_learning_rate=2.6e-3,  # for batch 32 (NVIDIA SSD300 recipe, scaled linearly)
      lr_reference_batch=32,
      scale_lr_with_batch=True,
      warmup_steps=1000,
      schedule="cosine",          # cosine | step
      step_boundaries=(160_000, 200_000),
      step_factor=0.1,
      momentum=0.9,
      weight_decay=5e-4,          # not applied to BatchNorm parameters or biases
      grad_clip_norm=0.0,         # 0 disables
      mixed_precision="",         # "" | mixed_float16 | mixed_bfloat16
      jit_compile=False,
      steps_per_loop=1,           # training steps per call into the graph (one host round trip per
                                  # loop); logs, checkpoints and evals stay at their exact steps
      checkpoint_every=2000,
      keep_checkpoints=3,
      log_every=100,
  ))
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=8,
      every_steps=20_000,         # 0: only at the end of training
      num_images=0,               # 0: the whole split
      num_summary_images=4,
  ))
  return c


# Fields that hold a file or folder path (besides "" and "imagenet"): a run's config.json stores them
# relative to the run directory when inside it (ssd_tf/run_dir.py).
PATH_FIELDS = ("model.backbone_weights", "model.init_from", "data.coco_dir", "data.tfrecord_dir",
               "data.tfds_data_dir", "data.tfds_manual_dir")


# Fields renamed since configs were first saved: old dotted name -> new dotted name.
RENAMED_FIELDS = {
    "anchors.steps": "anchors.strides",
    "data.synthetic.image_size": "data.synthetic.side_range",
}


def upgrade(config, source="config"):
  """Brings a config from an older ssd_tf up to date, in place; returns ``config``.

  Renamed fields (RENAMED_FIELDS) move to their new names, with one deprecation line per
  field naming ``source``; fields added since it was saved get their defaults (a run's
  config.json from before data.max_image_pixels existed loads with its default).
  """
  _add_missing(config, base_config())
  for old, new in RENAMED_FIELDS.items():
    *parents, old_leaf = old.split(".")
    node = config
    for name in parents:
      node = node.get(name) if node is not None else None
    if node is None or old_leaf not in node:
      continue
    value = node[old_leaf]
    with node.unlocked():
      del node[old_leaf]
      node[new.rsplit(".", 1)[1]] = value
    logging.warning("%s: %s is deprecated, renamed %s; read as %s=%s", source, old, new, new, value)
  clip = config.anchors.clip
  if isinstance(clip, bool):  # before the clip modes: True clipped corners, False nothing
    with config.anchors.unlocked():
      del config.anchors["clip"]
      config.anchors.clip = "corners" if clip else "none"
  return config


def _add_missing(config, reference):
  """Sets every field of ``reference`` that ``config`` lacks (recursively) to its value there."""
  for key, value in reference.items():
    if key not in config:
      with config.unlocked():
        config[key] = value
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(config[key], ml_collections.ConfigDict):
      _add_missing(config[key], value)


# Numeric fields and their allowed range (low, high; None: unbounded), checked by check_ranges.
RANGES = {
    "model.image_size": (32, None),
    "model.num_classes": (1, None),
    "model.batchnorm_epsilon": (0, None),
    "data.max_boxes": (1, None),
    "data.max_image_pixels": (0, None),
    "train.batch_size": (1, None),
    "train.steps": (0, None),
    "train.warmup_steps": (0, None),
    "train.base_learning_rate": (0, None),
    "train.steps_per_loop": (1, None),
    "train.checkpoint_every": (1, None),
    "train.keep_checkpoints": (1, None),
    "train.log_every": (1, None),
    "eval.batch_size": (1, None),
    "eval.every_steps": (0, None),
    "eval.num_images": (0, None),
    "postprocess.score_threshold": (0, 1),
    "postprocess.iou_threshold": (0, 1),
    "postprocess.max_detections": (1, None),
    "postprocess.max_detections_per_class": (1, None),
    "postprocess.pre_nms_top_k": (0, None),
}


# Fields that take one of a few names, checked by check_ranges.
CHOICES = {
    "model.backbone_variant": ("", "keras", "torchvision", "reduced_tail"),
    "model.input_normalization": ("", "caffe", "torch", "rgb_mean", "tf"),
    "anchors.clip": ("corners", "size", "centre_size", "none"),
    "postprocess.clip_boxes": ("after_nms", "before_nms", "none"),
}


def check_ranges(config, source="config"):
  """ValueError naming ``source``, the field and its value when a RANGES field is out of range
  or a CHOICES field is not one of its names."""
  for field, names in CHOICES.items():
    node = config
    for name in field.split("."):
      node = node[name]
    if node not in names:
      raise ValueError(f"{source}: {field}={node!r} must be one of {', '.join(map(repr, names))}")
  for field, (low, high) in RANGES.items():
    node = config
    for name in field.split("."):
      node = node[name]
    if not isinstance(node, (int, float)) or isinstance(node, bool):
      raise ValueError(f"{source}: {field}={node!r} must be a number")
    if node < low or (high is not None and node > high):
      bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
      raise ValueError(f"{source}: {field}={node} must be {bound}")
  return config
