"""A run directory: what training writes and what eval, predict, export and ssd_tf.load read.

  <workdir>/config.json        the config the run was started with (read by ssd_tf.load)
  <workdir>/label_map.json     labels 1..C <-> dataset category ids and names
  <workdir>/checkpoints/       newest checkpoints (ssd_tf.bookkeeping)
  <workdir>/best/              the checkpoint with the best COCO AP, best_ap.txt
  <workdir>/train/             TensorBoard summaries
  <workdir>/metrics.json, detections.json, export/, predictions/
  <workdir>/.lock              held by the training that runs in it (ssd_tf.run_lock)
  <workdir>/eval/step-<N>/     eval mode's results while a training holds the lock
"""

import json
import os

from absl import logging
import ml_collections
import tensorflow as tf

from ssd_tf import defaults
from ssd_tf import files
from ssd_tf.label_map import LabelMap


def config_path(workdir):
  return os.path.join(workdir, "config.json")


def label_map_path(workdir):
  return os.path.join(workdir, "label_map.json")


def init(workdir, config, label_map):
  """Writes the run's config.json and label_map.json (each atomically)."""
  os.makedirs(workdir, exist_ok=True)
  label_map.save(label_map_path(workdir))
  files.write_atomic(config_path(workdir), config.to_json_best_effort(indent=1))


def load_config(workdir):
  """The ConfigDict saved in <workdir>/config.json (renamed fields upgraded: defaults.upgrade)."""
  path = config_path(workdir)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a training run directory?")
  with open(path) as f:
    try:
      config = ml_collections.ConfigDict(json.load(f))
    except ValueError as error:
      raise ValueError(f"{path}: not a valid config.json ({error})") from None
  return defaults.check_ranges(defaults.upgrade(config, source=path), source=path)


def load_label_map(workdir):
  path = label_map_path(workdir)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a training run directory?")
  return LabelMap.load(path)


def latest_checkpoint(workdir):
  """Newest checkpoint path in workdir/checkpoints, or a FileNotFoundError naming workdir."""
  path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  if not path:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: train first "
                            "(--mode=train) or point --workdir at a training run")
  return path


def best_or_latest_checkpoint(workdir):
  """The best-AP checkpoint of workdir when one was kept, else the newest."""
  return tf.train.latest_checkpoint(os.path.join(workdir, "best")) or latest_checkpoint(workdir)


def checkpoint_step(path):
  """The step a checkpoint path ends with (ckpt-1200 -> 1200), or None."""
  suffix = path.rsplit("-", 1)[-1]
  return int(suffix) if suffix.isdigit() else None


# Fields that change what a run's weights mean (architecture, classes, input normalization and
# resizing, default boxes, box coding). anchors.feature_map_sizes is not one: the SSD derives the
# sizes from the network and checks any stated ones against it; nor is model.init_from, which only
# says where a fresh run's first weights came from.
MEANING_FIELDS = ("model.backbone", "model.backbone_taps", "model.backbone_variant", "model.input_normalization",
                  "model.resize_antialias", "model.image_size", "model.num_classes", "model.extra_layers",
                  "model.extra_batchnorm", "model.head_kernel_size", "anchors.strides", "anchors.scales",
                  "anchors.min_scale", "anchors.max_scale", "anchors.aspect_ratios", "anchors.clip",
                  "box_coder.variances")


def _leaves(config, prefix=""):
  """{dotted field: JSON-normalized value} of every leaf of a ConfigDict."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_leaves(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = json.loads(json.dumps(value))
  return out


def check_config(config, workdir, label_map=None):
  """Compares ``config`` (and ``label_map``, the data's) with the run's config.json (and label_map.json).

  A MEANING_FIELDS difference is a ValueError naming every such field with both values, as
  is another label map; other differences (score threshold, batch size...) are allowed and logged.
  """
  if label_map is not None and os.path.isfile(label_map_path(workdir)):
    if load_label_map(workdir).entries != label_map.entries:
      raise ValueError(f"the data's label map differs from {label_map_path(workdir)}: the run was trained "
                       "on other classes; give another --workdir")
  if not os.path.isfile(config_path(workdir)):
    return
  saved, given = _leaves(load_config(workdir)), _leaves(config)
  differ = [f for f in sorted(set(saved) | set(given)) if saved.get(f) != given.get(f)]
  conflicts = [f for f in differ if f in MEANING_FIELDS]
  if conflicts:
    raise ValueError(f"the config does not match the run in {workdir}: " + "; ".join(
        f"{f} is {given.get(f)!r} here but {saved.get(f)!r} in its config.json" for f in conflicts) +
                     " (these fields change what the weights mean)")
  if differ:
    logging.info("Config fields that differ from %s (allowed): %s", config_path(workdir),
                 "; ".join(f"{f}: {saved.get(f)!r} -> {given.get(f)!r}" for f in differ))
