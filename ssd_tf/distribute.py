"""Choosing the tf.distribute strategy and the chief's role.

* TF_CONFIG naming several workers -> MultiWorkerMirroredStrategy (RING collectives on CPU,
  NCCL on GPUs); only the chief writes checkpoints, summaries and exports.
* GPUs visible -> MirroredStrategy over them.
* otherwise the default (single device) strategy.

``config.train.strategy`` can force one ("default", "mirrored", "multi_worker");
``config.train.devices`` lists devices for "mirrored" (e.g. two logical CPUs in tests).
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


def _num_tf_config_workers():
  cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def make_strategy(kind="auto", devices=()):
  """A tf.distribute.Strategy of the given kind ("auto" picks as the module docstring says)."""
  if kind not in STRATEGIES:
    raise ValueError(f"config.train.strategy={kind!r}: choose one of {', '.join(STRATEGIES)}")
  if kind == "auto":
    if _num_tf_config_workers() > 1:
      kind = "multi_worker"
    elif tf.config.list_physical_devices("GPU"):
      kind = "mirrored"
    else:
      kind = "default"
  if kind == "multi_worker":
    implementation = (tf.distribute.experimental.CommunicationImplementation.NCCL
                      if tf.config.list_physical_devices("GPU")
                      else tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=implementation))
  if kind == "mirrored":
    return tf.distribute.MirroredStrategy(devices=list(devices) or None)
  return tf.distribute.get_strategy()


def is_chief(strategy):
  """True on the one process that writes files (always true off a multi-worker cluster)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def task_name(strategy):
  """'worker_1' style name of this process in a cluster, '' on a single machine."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return ""
  return f"{resolver.task_type}_{resolver.task_id}"
