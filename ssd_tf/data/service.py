"""Training input from tf.data service: the augmenting pipeline runs in data worker processes.

One dispatcher (``main.py --mode=data_service --data_service_role=dispatcher``) hands out work;
data workers (``--data_service_role=worker``, any number, on any machine that reads the
TFRecords at the same paths as the trainer) run pipeline.train_dataset; trainers read its
batches over gRPC when config.data.service_address names the dispatcher.

Processing mode: ShardingPolicy.DYNAMIC. The pipeline's source is
``Dataset.range(epoch, 2**62)`` flat-mapped to one shuffled pass over the split, so the
dispatcher hands out epoch numbers, one at a time, to whichever worker asks. What follows:
  * an epoch is run by one worker, whole: each training image once (image records that
    do not decode are skipped, as in-process); every epoch number is handed out once;
  * workers run different epochs at the same time: the trainer sees batches of several
    epochs interleaved, and one worker's batch may end one epoch and start the next
    (each batch row carries its ``epoch`` and ``image_id``);
  * at most once: a data worker that dies loses what it had not delivered of the epoch(s)
    it was running (its buffered batches too); training goes on with the other workers.
    With none left the trainer waits; a worker that joins (registers with the
    dispatcher) takes the next epochs within about a second.
  * a dispatcher that dies stops the flow of epochs: trainers wait. Started with a journal
    folder (--data_service_work_dir) and restarted with the same folder and port, it takes
    over its jobs and training goes on (measured: batches again 4 s after the restart).
  * the order of the batches is not deterministic, whatever config.data.deterministic,
    and a resumed run is not re-positioned (pipeline.train_dataset's skip_batches does
    not apply): it starts a new job at the first epoch.

One job per run: every trainer of a multi-worker run reads the job named after the run
directory and the step it starts from (job_name), so the trainers share the job's batches
(each batch goes to one of them) and a resumed run starts a fresh job. Each trainer
builds the pipeline without per-pipeline sharding, with per-replica batches; the job runs
the pipeline of the trainer that registered it first.
"""

import hashlib
import os
import re
import socket

from absl import logging
import tensorflow as tf

from ssd_tf.data import pipeline

_PROTOCOL = "grpc"
CONNECT_TIMEOUT = 20.0  # seconds for the dispatcher to accept a TCP connection
# Data workers heartbeat every HEARTBEAT_MS (and learn of a new job then); the dispatcher drops a worker
# silent for WORKER_TIMEOUT_MS (TensorFlow's defaults: 30 s and 10 min).
HEARTBEAT_MS = 1000
WORKER_TIMEOUT_MS = 10_000


def parse_address(address, name="config.data.service_address"):
  """"host:port" or "grpc://host:port" -> (host, port); anything else -> ValueError naming ``name``."""
  rest = address[len(_PROTOCOL) + 3:] if address.startswith(f"{_PROTOCOL}://") else address
  host, _, port = rest.rpartition(":")
  if not host or "/" in rest or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"{name}={address!r} is not a tf.data service address: give host:port or "
                     f"grpc://host:port")
  return host, int(port)


def check_reachable(address, name="config.data.service_address", timeout=CONNECT_TIMEOUT):
  """Raises ConnectionError naming the dispatcher at ``address`` (the value of ``name``) unless it
  accepts a TCP connection within ``timeout`` seconds (TensorFlow itself retries without a word)."""
  host, port = parse_address(address, name)
  try:
    socket.create_connection((host.strip("[]"), port), timeout=timeout).close()
  except OSError as error:
    raise ConnectionError(f"{name}={address}: no tf.data service dispatcher reachable at {host}:{port} "
                          f"({error})") from None


def job_name(workdir, start_step):
  """The tf.data service job of a run resuming at ``start_step`` (the same on every trainer)."""
  run = hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:16]
  return f"ssd_tf-{run}-step{start_step}"


def train_dataset(config, input_context, job):
  """pipeline.train_dataset's batches (per-replica size), run by the data workers of job ``job`` at
  the dispatcher config.data.service_address."""
  address = config.data.service_address
  check_reachable(address)
  host, port = parse_address(address)
  config = config.copy_and_resolve_references()
  for field in ("tfrecord_dir", "tfds_data_dir"):  # the workers' working directory is not the trainer's
    if config.data[field]:
      config.data[field] = os.path.abspath(config.data[field])
  replicas = input_context.num_replicas_in_sync if input_context else 1
  whole = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                     num_replicas_in_sync=replicas)
  logging.info("Training input from the tf.data service at %s:%d, job %s: order not deterministic, "
               "a resumed run is not re-positioned", host, port, job)
  try:  # registers the pipeline with the dispatcher
    return pipeline.train_dataset(config, whole).apply(tf.data.experimental.service.distribute(
        tf.data.experimental.service.ShardingPolicy.DYNAMIC, f"{_PROTOCOL}://{host}:{port}", job_name=job))
  except tf.errors.OpError as error:  # e.g. a server that is not a dispatcher answers
    message = re.sub(r"\{\{.*?\}\}", "", error.message).strip()
    raise ConnectionError(f"config.data.service_address={address}: {message}") from None


def _check_port_free(port):
  """gRPC servers share a port (SO_REUSEPORT): a second server on a taken port would start silently.
  (SO_REUSEADDR: the connections a killed server left in TIME_WAIT do not count.)"""
  with socket.socket() as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      probe.bind(("", port))
    except OSError as error:
      raise OSError(f"--data_service_port={port}: {error.strerror}") from None


def dispatcher(port, work_dir=""):
  """A started tf.data service dispatcher on ``port``. With ``work_dir`` it journals its state
  there, and a dispatcher restarted with the same work_dir and port takes over its jobs; without,
  trainers wait for ever when it dies."""
  _check_port_free(port)
  return tf.data.experimental.service.DispatchServer(tf.data.experimental.service.DispatcherConfig(
      port=port, protocol=_PROTOCOL, work_dir=work_dir or None, fault_tolerant_mode=bool(work_dir),
      worker_timeout_ms=WORKER_TIMEOUT_MS))


def worker(dispatcher_address, port, worker_address):
  """A started data worker registered with the dispatcher at ``dispatcher_address``, serving on
  ``port``; trainers reach it at ``worker_address`` (host, or host:port)."""
  check_reachable(dispatcher_address, name="--data_service_dispatcher")
  _check_port_free(port)
  host, dispatcher_port = parse_address(dispatcher_address, name="--data_service_dispatcher")
  if ":" not in worker_address:
    worker_address = f"{worker_address}:%port%"   # TensorFlow puts the port it serves on there
  return tf.data.experimental.service.WorkerServer(tf.data.experimental.service.WorkerConfig(
      dispatcher_address=f"{host}:{dispatcher_port}", worker_address=worker_address, port=port,
      protocol=_PROTOCOL, heartbeat_interval_ms=HEARTBEAT_MS))
