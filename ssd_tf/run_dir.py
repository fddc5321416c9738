"""A run directory: what training writes and what eval, predict, export and ssd_tf.load read.

  <run>/config.json        the config of the run's last training (or conversion) command
  <run>/label_map.json     labels 1..C <-> dataset category ids and names
  <run>/checkpoints/       newest checkpoints (ssd_tf.bookkeeping)
  <run>/best/              the checkpoint with the best COCO AP, best_ap.txt
  <run>/train/             TensorBoard summaries
  <run>/metrics.json, detections.json   the last evaluation
  <run>/eval/step-<N>/     eval mode's results while a training holds the lock
  <run>/export/            saved_model/, tflite_<float32|float16|int8>/
  <run>/predictions/       predict mode's detections.json and drawings
  <run>/synthetic/, tfrecords/   the quickstart's data (when the config names no other)
  <run>/.lock              held by the command that writes the run (ssd_tf.run_lock)
  <run>/tmp/<task>/        scratch checkpoints of the non-chief workers of a multi-worker run

Which checkpoint a run means (eval, predict, export, ssd_tf.load, init_from): the best one
(best/), else the newest (checkpoints/). Training resumes from the newest.

Paths in config.json: a path inside the run directory is stored relative to it, any other
path as an absolute one, so a run can be moved, copied and used from any folder.
"""

import contextlib
import json
import os
import shutil

from absl import logging
import ml_collections

from ssd_tf import defaults
from ssd_tf import files
from ssd_tf.label_map import LabelMap

METRICS = "metrics.json"        # in any folder evaluation writes to
DETECTIONS = "detections.json"

# Fields that change what a run's weights mean (architecture, classes, input normalization and
# resizing, default boxes, box coding). anchors.feature_map_sizes is not one: the SSD derives the
# sizes from the network and checks any stated ones against it; nor is model.init_from, which only
# says where a fresh run's first weights came from.
MEANING_FIELDS = ("model.backbone", "model.backbone_taps", "model.backbone_variant", "model.input_normalization",
                  "model.resize_antialias", "model.image_size", "model.num_classes", "model.extra_layers",
                  "model.extra_batchnorm", "model.ssdlite", "model.batchnorm_epsilon", "model.head_kernel_size",
                  "anchors.strides", "anchors.scales",
                  "anchors.min_scale", "anchors.max_scale", "anchors.aspect_ratios", "anchors.clip",
                  "box_coder.variances")


class RunDir:
  """The paths of one run directory, and reading and writing its config, label map and checkpoints."""

  def __init__(self, path):
    self.path = os.fspath(path)
    join = lambda *names: os.path.join(self.path, *names)  # pylint: disable=unnecessary-lambda-assignment
    self.config_json = join("config.json")
    self.label_map_json = join("label_map.json")
    self.checkpoints = join("checkpoints")
    self.best = join("best")
    self.best_ap = join("best", "best_ap.txt")
    self.train = join("train")
    self.metrics = join(METRICS)
    self.detections = join(DETECTIONS)
    self.predictions = join("predictions")
    self.synthetic = join("synthetic")
    self.tfrecords = join("tfrecords")
    self.lock = join(".lock")
    self.tmp = join("tmp")

  def __repr__(self):
    return f"RunDir({self.path!r})"

  def eval_dir(self, step):
    """Where eval mode writes while a training holds the run: eval/step-<N>."""
    return os.path.join(self.path, "eval", f"step-{step}")

  def export_dir(self, kind):
    """export/<kind>: saved_model, tflite_float32, tflite_float16, tflite_int8."""
    return os.path.join(self.path, "export", kind)

  def scratch(self, task):
    """tmp/<task>: a non-chief worker's own folder."""
    return os.path.join(self.tmp, task)

  # --- config and label map ---------------------------------------------------------------------

  def has_config(self):
    return os.path.isfile(self.config_json)

  def write(self, config, label_map):
    """Writes config.json (paths stored as the module docstring says) and label_map.json, each atomically."""
    os.makedirs(self.path, exist_ok=True)
    label_map.save(self.label_map_json)
    stored = config.copy_and_resolve_references()
    with stored.unlocked():
      for field, value in _path_values(stored):
        path = os.path.abspath(value)
        inside = os.path.relpath(path, os.path.abspath(self.path))
        _set(stored, field, path if inside.split(os.sep)[0] == os.pardir else inside)
    files.write_atomic(self.config_json, stored.to_json_best_effort(indent=1))

  def load_config(self):
    """The ConfigDict of config.json, renamed fields upgraded (defaults.upgrade), paths absolute.

    A relative path is the run directory's; one that is not there but exists from the current
    folder is read so (config.json of ssd_tf before 0.3 stored paths as typed).
    """
    if not self.has_config():
      raise FileNotFoundError(f"{self.config_json} not found: is {self.path} a training run directory?")
    with open(self.config_json) as f:
      try:
        config = ml_collections.ConfigDict(json.load(f))
      except ValueError as error:
        raise ValueError(f"{self.config_json}: not a valid config.json ({error})") from None
    config = defaults.upgrade(config, source=self.config_json)
    for field, value in _path_values(config):
      inside = os.path.join(self.path, value)
      _set(config, field, os.path.abspath(value if not os.path.exists(inside) and os.path.exists(value)
                                          else inside))
    return defaults.check_ranges(config, source=self.config_json)

  def load_label_map(self):
    if not os.path.isfile(self.label_map_json):
      raise FileNotFoundError(f"{self.label_map_json} not found: is {self.path} a training run directory?")
    return LabelMap.load(self.label_map_json)

  def check_config(self, config, label_map=None):
    """Compares ``config`` (and ``label_map``, the data's) with config.json (and label_map.json).

    A MEANING_FIELDS difference is a ValueError naming every such field with both values, as
    is another label map; other differences (score threshold, batch size...) are allowed and logged.
    """
    if label_map is not None and os.path.isfile(self.label_map_json):
      if self.load_label_map().entries != label_map.entries:
        raise ValueError(f"the data's label map differs from {self.label_map_json}: the run was trained "
                         "on other classes; give another --workdir")
    if not self.has_config():
      return
    saved, given = _leaves(self.load_config()), _leaves(absolute_paths(config))
    differ = [f for f in sorted(set(saved) | set(given)) if saved.get(f) != given.get(f)]
    conflicts = [f for f in differ if f in MEANING_FIELDS]
    if conflicts:
      raise ValueError(f"the config does not match the run in {self.path}: " + "; ".join(
          f"{f} is {given.get(f)!r} here but {saved.get(f)!r} in its config.json" for f in conflicts) +
                       " (these fields change what the weights mean)")
    if differ:
      logging.info("Config fields that differ from %s (allowed): %s", self.config_json,
                   "; ".join(f"{f}: {saved.get(f)!r} -> {given.get(f)!r}" for f in differ))

  # --- checkpoints ------------------------------------------------------------------------------

  def latest_checkpoint(self):
    """The newest checkpoint in checkpoints/ (None before the first)."""
    return _tf().train.latest_checkpoint(self.checkpoints)

  def checkpoint(self):
    """The checkpoint the run means: the best-AP one when one was kept, else the newest.

    FileNotFoundError naming the run when it has none.
    """
    path = _tf().train.latest_checkpoint(self.best) or self.latest_checkpoint()
    if not path:
      raise FileNotFoundError(f"no checkpoint in {self.checkpoints} or {self.best}: train first "
                              "(--mode=train) or point --workdir at a training run")
    return path

  @contextlib.contextmanager
  def undo_on_failure(self):
    """For a command that may start the run: an exception before the run's first checkpoint
    removes whatever the command created in it (the folder too, when it made it)."""
    existed = os.path.isdir(self.path)
    before = set(os.listdir(self.path)) if existed else set()
    fresh = not existed or not self.latest_checkpoint()
    try:
      yield
    except BaseException:
      if fresh and not files.is_remote(self.path) and not self.latest_checkpoint():
        if not existed:
          shutil.rmtree(self.path, ignore_errors=True)
        else:
          for name in set(os.listdir(self.path)) - before:
            path = os.path.join(self.path, name)
            if os.path.isdir(path):
              shutil.rmtree(path)
            else:
              os.remove(path)
      raise


def _tf():
  """TensorFlow, imported at the first checkpoint look-up: the command line reads a run's config
  before it imports TensorFlow, so that a mistake costs no TensorFlow start."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def checkpoint_step(path):
  """The step a checkpoint path ends with (ckpt-1200 -> 1200), or None."""
  suffix = path.rsplit("-", 1)[-1]
  return int(suffix) if suffix.isdigit() else None


def absolute_paths(config):
  """A copy of ``config`` whose path fields (defaults.PATH_FIELDS) are absolute (from the current folder)."""
  config = config.copy_and_resolve_references()
  for field, value in _path_values(config):
    _set(config, field, os.path.abspath(value))
  return config


def _path_values(config):
  """(field, value) of every defaults.PATH_FIELDS field of config that holds a local path."""
  for field in defaults.PATH_FIELDS:
    node = config
    for name in field.split("."):
      node = node.get(name) if isinstance(node, ml_collections.ConfigDict) else None
    if isinstance(node, str) and node and node != "imagenet" and not files.is_remote(node):
      yield field, node


def _set(config, field, value):
  *parents, leaf = field.split(".")
  for name in parents:
    config = config[name]
  config[leaf] = value


def _leaves(config, prefix=""):
  """{dotted field: JSON-normalized value} of every leaf of a ConfigDict."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_leaves(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = json.loads(json.dumps(value))
  return out
