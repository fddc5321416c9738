"""Fine-tuning: a fresh run starts from the weights of another detector (config.model.init_from).

The source is a run directory (its config.json and its best checkpoint, else the newest) or a
checkpoint prefix ``<run>/checkpoints/ckpt-N`` (or ``<run>/best/ckpt-N``), whose run directory
gives the config. The source SSD is built from that config under the target's precision policy
and restored; every target variable whose Keras path (``conv1_conv/kernel``,
``level0_logits/bias``) and shape match one of the source's takes its value. The rest keeps its
initialization: the class heads ``level{k}_logits`` when the class count differs, and any layer
the source lacks or shapes otherwise. Both must have the same backbone.
"""

import os
from typing import NamedTuple

from absl import logging
import tensorflow as tf

from ssd_tf import run_dir
from ssd_tf.ssd import SSD


class Report(NamedTuple):
  """What apply() did. Variable lists hold Keras variable paths, in the target network's order."""
  checkpoint: str      # the source checkpoint prefix
  loaded: list         # target variables set from the source
  reinitialized: list  # target variables that kept their initialization
  unused: list         # source variables no target variable took


def backbone_weights(model_config):
  """config.model.backbone_weights to build the network with: None when init_from gives the weights."""
  if model_config.init_from and model_config.backbone_weights:
    logging.info("model.backbone_weights=%r not loaded: model.init_from=%s gives the backbone",
                 model_config.backbone_weights, model_config.init_from)
    return None
  return model_config.backbone_weights


def _locate(source):
  """(run directory, checkpoint prefix) of ``source``, a run directory or a checkpoint prefix."""
  if os.path.isdir(source):
    try:
      return source, run_dir.RunDir(source).checkpoint()
    except FileNotFoundError:
      raise FileNotFoundError(f"model.init_from={source}: a run directory without checkpoints (none in "
                              f"{os.path.join(source, 'checkpoints')} or best/)") from None
  if tf.io.gfile.exists(f"{source}.index"):
    return os.path.dirname(os.path.dirname(os.path.abspath(source))), source
  raise FileNotFoundError(f"model.init_from={source}: no such run directory or checkpoint prefix "
                          "(give <run> or <run>/checkpoints/ckpt-N)")


def apply(ssd, source):
  """Sets the variables of ``ssd`` that ``source`` has (same path and shape); returns a Report.

  ValueError when the source has another backbone; FileNotFoundError when there is no source.
  """
  workdir, checkpoint = _locate(source)
  config = run_dir.RunDir(workdir).load_config()
  if config.model.backbone != ssd.config.model.backbone:
    raise ValueError(f"model.init_from={source}: its backbone is {config.model.backbone}, this SSD's is "
                     f"{ssd.config.model.backbone}; fine-tuning needs the same backbone")
  # SSD() sets Keras' global precision policy from its config: build the source under the target's.
  config.train.mixed_precision = ssd.config.train.mixed_precision
  origin = SSD.from_run(workdir, checkpoint, config)
  report = _copy(origin.network, ssd.network, checkpoint)
  _log(report, config.model)
  return report


def _copy(origin, network, checkpoint):
  """Assigns every variable of ``network`` the value of ``origin``'s of the same path and shape."""
  sources = {v.path: v for v in origin.weights}
  loaded, reinitialized = [], []
  for variable in network.weights:
    match = sources.get(variable.path)
    if match is not None and tuple(match.shape) == tuple(variable.shape):
      variable.assign(match.value)
      loaded.append(variable.path)
    else:
      reinitialized.append(variable.path)
  taken = set(loaded)
  return Report(checkpoint, loaded, reinitialized, [path for path in sources if path not in taken])


def _log(report, source_model):
  """One line of counts and the re-initialized layers by reason; one more for unused source layers."""
  unused = set(report.unused)
  layers = {}  # reason -> re-initialized layers, in order
  for path in report.reinitialized:
    reason = "shape differs" if path in unused else "not in the source"
    layers.setdefault(reason, {})[_layer(path)] = None
  groups = "; ".join(f"{', '.join(names)} ({reason})" for reason, names in layers.items())
  logging.info("init_from: loaded %d of %d variables from %s (%s, %d classes); re-initialized %d%s",
               len(report.loaded), len(report.loaded) + len(report.reinitialized), report.checkpoint,
               source_model.backbone, source_model.num_classes, len(report.reinitialized),
               f" of {groups}" if groups else "")
  reinitialized = set(report.reinitialized)
  others = dict.fromkeys(_layer(path) for path in report.unused if path not in reinitialized)
  if others:
    logging.info("init_from: layers of the source this SSD does not have: %s", ", ".join(others))


def _layer(path):
  """The layer of a variable path: conv1_conv/kernel -> conv1_conv."""
  return path.rsplit("/", 1)[0]
