"""Choosing the tf.distribute strategy and the chief's role.

* TF_CONFIG naming several workers -> MultiWorkerMirroredStrategy (RING collectives on CPU,
  NCCL on GPUs); only the chief writes checkpoints, summaries and exports.
* GPUs visible -> MirroredStrategy over them.
* otherwise the default (single device) strategy.

``config.train.strategy`` can force one ("default", "mirrored", "multi_worker");
``config.train.devices`` lists devices for "mirrored" (e.g. two logical CPUs in tests).

A multi-worker task whose peer dies does not wait for it: TensorFlow's coordination
service (which MultiWorkerMirroredStrategy starts) notices the missing heartbeats (its
heartbeat timeout: 10 s by default in TF 2.21) and aborts the collectives of the other
tasks, or a collective fails at once when it cannot reach the peer. The trainer turns
that error into one WorkerLostError line.
"""

import json
import os
import re

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
# What a multi-worker task's collectives raise once a peer is gone (aborted by the coordination
# service, or the peer unreachable or timing out).
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
               tf.errors.AbortedError)
_TASK = re.compile(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)")


class WorkerLostError(ConnectionError):
  """Another task of a multi-worker cluster died or became unreachable: this one cannot go on."""


def tf_config_num_tasks():
  """Number of chief + worker tasks TF_CONFIG names (0 when TF_CONFIG is unset)."""
  raw = os.environ.get("TF_CONFIG", "")
  if not raw:
    return 0
  try:
    cluster = json.loads(raw)["cluster"]
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))
  except (ValueError, KeyError, TypeError, AttributeError) as error:
    raise ValueError(f"TF_CONFIG must be a JSON object with a 'cluster' of 'worker' (and 'chief') "
                     f"address lists; got {raw!r} ({type(error).__name__}: {error})") from None


def choose_strategy_kind(kind, num_tasks, num_gpus):
  """The strategy kind to build: ``kind`` itself unless "auto", which picks (in this order)
  "multi_worker" for several cluster tasks, "mirrored" when GPUs are visible, else "default"."""
  if kind not in STRATEGIES:
    raise ValueError(f"config.train.strategy={kind!r}: choose one of {', '.join(STRATEGIES)}")
  if kind != "auto":
    return kind
  if num_tasks > 1:
    return "multi_worker"
  return "mirrored" if num_gpus else "default"


def make_strategy(kind="auto", devices=()):
  """A tf.distribute.Strategy of the given kind ("auto" picks as the module docstring says).

  A multi-worker strategy must be created before any other TensorFlow op runs in the process.
  """
  kind = choose_strategy_kind(kind, tf_config_num_tasks(), len(tf.config.list_physical_devices("GPU")))
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


def strategy_kind(strategy):
  """The config.train.strategy name of a strategy ("multi_worker", "mirrored", "default"), for logs."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return "multi_worker"
  if isinstance(strategy, tf.distribute.MirroredStrategy):
    return "mirrored"
  return "default" if strategy is tf.distribute.get_strategy() else type(strategy).__name__


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


def per_worker(strategy, value):
  """The int ``value`` of every replica of a multi-worker strategy, in task order (one per worker on
  CPUs), gathered by a collective; [value] under other strategies."""
  if strategy_kind(strategy) != "multi_worker":
    return [value]

  @tf.function  # (run eagerly, MultiWorkerMirroredStrategy warns of the overhead)
  def gather():
    return strategy.gather(strategy.run(lambda: tf.constant([value], tf.int64)), axis=0)

  return gather().numpy().tolist()


def lost_tasks(strategy, message):
  """'worker_1' style names of the tasks other than this one that a TensorFlow error names."""
  names = dict.fromkeys(f"{job}_{task}" for job, task in _TASK.findall(message))
  return [name for name in names if name != task_name(strategy)]


def worker_lost(strategy, error, checkpoint):
  """The one-line WorkerLostError for ``error`` (one of PEER_ERRORS) on a multi-worker task;
  ``checkpoint``: the chief's newest checkpoint (None if there is none), where a restart resumes."""
  lost = " and ".join(lost_tasks(strategy, error.message)) or "another task"
  resume = f"the chief's last checkpoint {checkpoint}" if checkpoint else "step 0 (no checkpoint yet)"
  return WorkerLostError(
      f"{lost} of the multi-worker cluster died or became unreachable (TensorFlow: "
      f"{type(error).__name__}), so {task_name(strategy)} stops too; restart every worker with its "
      f"command: all resume from {resume}")
