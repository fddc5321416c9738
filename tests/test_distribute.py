"""Training under distribution strategies gives the single-device result.

MirroredStrategy runs on the two logical CPUs conftest makes; the multi-worker tests
start two worker processes (TF_CONFIG on 127.0.0.1), and one kills a worker mid-run and
restarts both. Weights (BatchNorm moving statistics included) are compared with
train_helpers.assert_same_training: within 5% (trainable) and 0.2% (statistics) of how
far the 3 training steps moved them; its docstring has the measured differences, and the
ones of per-replica BatchNorm statistics or a per-replica loss normalization, which are
15 to 40 times larger than the tolerance.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import local_service
from ssd_tf import distribute
from ssd_tf.ssd import SSD
from ssd_tf import train
import cli_helpers
import train_helpers

STEPS = 3
CLIP_NORM = 1.0   # the tiny config's gradient norm at initialization is ~200 (measured): clipped
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_helpers.py")
REPO = os.path.dirname(os.path.dirname(HELPER))


def _config(**train_fields):
  config = train_helpers.tiny_config()
  config.model.batchnorm_synchronized = True
  config.train.update(train_fields)
  return config


def _train(config, strategy, initial, workdir, steps=STEPS):
  """Runs `steps` fixed global batches from `initial` weights -> (weights, per-step losses)."""
  trainer = train.Trainer(config, str(workdir), strategy)
  for variable in trainer.ssd.network.weights:
    variable.assign(initial[variable.path])
  iterator = train_helpers.distributed_iterator(strategy, train_helpers.fixed_batches(steps))
  losses = [float(trainer.train_step(iterator)["loss"]) for _ in range(steps)]
  return train_helpers.model_weights(trainer.ssd.network), losses


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
  """(initial weights, weights and losses after STEPS single-device steps) of the tiny config."""
  config = _config()
  initial = train_helpers.model_weights(train.Trainer(config, str(tmp_path_factory.mktemp("init")),
                                                      tf.distribute.get_strategy()).ssd.network)
  weights, losses = _train(config, tf.distribute.get_strategy(), initial, tmp_path_factory.mktemp("single"))
  return initial, weights, losses


# --- choosing the strategy ----------------------------------------------------------------------

def test_choose_strategy_kind():
  assert distribute.choose_strategy_kind("auto", num_tasks=0, num_gpus=0) == "default"
  assert distribute.choose_strategy_kind("auto", num_tasks=1, num_gpus=0) == "default"
  assert distribute.choose_strategy_kind("auto", num_tasks=0, num_gpus=2) == "mirrored"
  assert distribute.choose_strategy_kind("auto", num_tasks=2, num_gpus=0) == "multi_worker"
  assert distribute.choose_strategy_kind("auto", num_tasks=2, num_gpus=8) == "multi_worker"
  assert distribute.choose_strategy_kind("mirrored", num_tasks=2, num_gpus=0) == "mirrored"
  with pytest.raises(ValueError, match=r"config.train.strategy='tpu': choose one of auto, default"):
    distribute.choose_strategy_kind("tpu", num_tasks=0, num_gpus=0)


def test_tf_config_tasks(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert distribute.tf_config_num_tasks() == 0
  cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
  assert distribute.tf_config_num_tasks() == 2
  cluster["chief"] = ["127.0.0.1:3"]
  monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}}))
  assert distribute.tf_config_num_tasks() == 3
  monkeypatch.setenv("TF_CONFIG", "{worker: 2}")
  with pytest.raises(ValueError, match="TF_CONFIG must be a JSON object"):
    distribute.tf_config_num_tasks()


def test_the_chief_is_the_chief_task_or_else_worker_0():
  def role(cluster, task_type, task_id):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    strategy = types.SimpleNamespace(cluster_resolver=resolver)
    return distribute.is_chief(strategy), distribute.task_name(strategy)

  workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
  assert role(workers, "worker", 0) == (True, "worker_0")
  assert role(workers, "worker", 1) == (False, "worker_1")
  with_chief = dict(workers, chief=["127.0.0.1:3"])
  assert role(with_chief, "chief", 0) == (True, "chief_0")
  assert role(with_chief, "worker", 0) == (False, "worker_0")


def test_a_lost_peer_is_named_in_one_line():
  """On the two errors measured when one of two local workers was SIGKILLed (trimmed)."""
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec({"worker": ["127.0.0.1:1", "127.0.0.1:2"]}), task_type="worker", task_id=0)
  task = types.SimpleNamespace(cluster_resolver=resolver)
  heartbeats = tf.errors.UnavailableError(None, None, (
      "Graph execution error:\n\nDetected at node CollectiveReduceV2 defined at (most recent call last):\n"
      "  File \"/repo/ssd_tf/train.py\", line 136, in train_step\nCollective ops is aborted by: Error "
      "reported from /job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):\n"
      "/job:worker/replica:0/task:1\nThe tasks have crashed.\n\t [[{{node CollectiveReduceV2}}]] "
      "[Op:__inference_train_step_6892]"))
  error = distribute.worker_lost(task, heartbeats, "/run/checkpoints/ckpt-10")
  assert isinstance(error, ConnectionError)   # the command line reports it in one line (cli.user_errors)
  assert str(error) == (
      "worker_1 of the multi-worker cluster died or became unreachable (TensorFlow: UnavailableError), "
      "so worker_0 stops too; restart every worker with its command: all resume from the chief's last "
      "checkpoint /run/checkpoints/ckpt-10")
  resolver.task_id = 1   # worker_1, when worker_0 died
  refused = tf.errors.UnavailableError(None, None, (
      "Collective ops is aborted by: failed to connect to all addresses; last error: UNKNOWN: "
      "ipv4:127.0.0.1:35211: Failed to connect to remote host: Connection refused\nAdditional GRPC error "
      "information from remote target /job:worker/replica:0/task:0 while calling "
      "/tensorflow.WorkerService/CompleteInstance"))
  assert distribute.lost_tasks(task, refused.message) == ["worker_0"]
  assert str(distribute.worker_lost(task, refused, None)).startswith("worker_0 of the multi-worker")
  assert str(distribute.worker_lost(task, refused, None)).endswith("resume from step 0 (no checkpoint yet)")
  unnamed = tf.errors.CancelledError(None, None, "Cancelled")
  assert str(distribute.worker_lost(task, unnamed, None)).startswith("another task of the multi-worker")


def test_make_strategy_on_plain_cpu(monkeypatch):
  assert not tf.config.list_physical_devices("GPU"), "this test expects a machine without GPUs"
  monkeypatch.delenv("TF_CONFIG", raising=False)
  strategy = distribute.make_strategy("auto")
  assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1
  assert distribute.is_chief(strategy) and distribute.task_name(strategy) == ""
  assert distribute.strategy_kind(strategy) == "default"
  devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
  mirrored = distribute.make_strategy("mirrored", devices)
  assert isinstance(mirrored, tf.distribute.MirroredStrategy) and mirrored.num_replicas_in_sync == 2
  assert distribute.strategy_kind(mirrored) == "mirrored"
  with pytest.raises(ValueError, match="config.train.strategy='gpu'"):
    distribute.make_strategy("gpu")


def test_global_batch_must_split_evenly_over_replicas(tmp_path):
  config = _config(batch_size=3)
  with pytest.raises(ValueError, match=r"batch_size=3 is not divisible by the 2 replicas"):
    train.Trainer(config, str(tmp_path), train_helpers.mirrored_strategy())
  assert train.per_replica_batch_size(8, 2) == 4


# --- MirroredStrategy on two logical CPUs -------------------------------------------------------

def test_replicas_see_different_numbers_of_positives():
  """Precondition of the comparisons below: a per-replica loss normalization would show."""
  config = _config()
  batch = train_helpers.fixed_batches(STEPS)
  _, cls_targets = SSD(config).targets(batch["boxes"], batch["labels"], batch["is_crowd"])
  per_replica = np.sum(cls_targets.numpy() > 0, axis=1).reshape(STEPS, 2, 2).sum(axis=2)
  assert np.all(per_replica[:, 0] >= per_replica[:, 1] + 4), per_replica


def test_mirrored_training_matches_one_device(single_device, tmp_path):
  initial, reference, reference_losses = single_device
  weights, losses = _train(_config(), train_helpers.mirrored_strategy(), initial, tmp_path)
  np.testing.assert_allclose(losses, reference_losses, rtol=1e-4)
  train_helpers.assert_same_training(weights, reference, initial)
  # BatchNorm moving statistics are compared too, and did move.
  assert np.linalg.norm(reference["conv1_bn/moving_mean"] - initial["conv1_bn/moving_mean"]) > 1e-2


@pytest.mark.slow
def test_unsynchronized_batchnorm_differs_under_mirrored(single_device, tmp_path):
  """Control: with per-replica BatchNorm statistics the same comparison fails."""
  initial, reference, _ = single_device
  config = _config()
  config.model.batchnorm_synchronized = False
  weights, _ = _train(config, train_helpers.mirrored_strategy(), initial, tmp_path)
  assert train_helpers.training_difference(weights, reference, initial)["trainable"] > 0.3


@pytest.mark.slow
def test_mirrored_gradient_clipping_matches_one_device(single_device, tmp_path):
  """(The multi-worker test below clips too; this one also shows the clip is active.)"""
  initial, unclipped, _ = single_device
  config = _config(grad_clip_norm=CLIP_NORM)
  reference, _ = _train(config, tf.distribute.get_strategy(), initial, tmp_path / "single")
  weights, _ = _train(config, train_helpers.mirrored_strategy(), initial, tmp_path / "mirrored")
  train_helpers.assert_same_training(weights, reference, initial)
  # The clip was active: clipped and unclipped training differ by much more than the tolerance.
  assert train_helpers.training_difference(unclipped, reference, initial)["trainable"] > 0.3


# --- MultiWorkerMirroredStrategy: two processes on 127.0.0.1 ------------------------------------

@contextlib.contextmanager
def _workers(worker_args, logs):
  """Starts `python *worker_args[i]` as worker i of a 2-worker TF_CONFIG cluster on 127.0.0.1 (one
  core each; output to logs[i]); yields the processes and kills (process group) any still running."""
  cluster = {"worker": [f"127.0.0.1:{port}" for port in local_service.free_ports(2)]}
  processes = []
  try:
    for index, (args, log) in enumerate(zip(worker_args, logs)):
      env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTRAOP_THREADS="1",
                 TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
                 PYTHONPATH=os.pathsep.join([REPO] + os.environ.get("PYTHONPATH", "").split(os.pathsep)),
                 TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
      with open(log, "w") as log_file:
        processes.append(subprocess.Popen(
            [sys.executable, *map(str, args)], env=env,
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True))
    yield processes
  finally:
    for p in processes:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _run_workers(worker_args, logs, timeout):
  """Runs the workers (_workers) to their end; returns the exit codes.

  Kills both when one fails (the other would wait for it, a TensorFlow worker until the
  coordination service's heartbeat timeout) or at the timeout.
  """
  with _workers(worker_args, logs) as processes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      codes = [p.poll() for p in processes]   # polls every process (any() would stop early)
      if None not in codes or any(code not in (None, 0) for code in codes):
        break
      time.sleep(0.2)
  return [p.returncode for p in processes]


def _load_weights(path):
  """A worker's .npz -> {"initial": weights, "final": weights}."""
  arrays = np.load(path)
  return {part: {k[len(part) + 1:]: arrays[k] for k in arrays.files if k.startswith(part + "/")}
          for part in ("initial", "final")}


@pytest.mark.slow  # about 20 s: two worker processes
def test_two_workers_train_like_one_device_and_only_the_chief_writes(tmp_path):
  workdir = tmp_path / "run"
  outputs = [tmp_path / f"worker_{i}.npz" for i in range(2)]
  logs = [tmp_path / f"worker_{i}.log" for i in range(2)]
  codes = _run_workers([(HELPER, workdir, output, STEPS, CLIP_NORM) for output in outputs], logs,
                       timeout=240)
  report = "\n".join(f"--- worker {i} (exit {code}):\n{log.read_text()[-3000:]}"
                     for i, (code, log) in enumerate(zip(codes, logs)))
  assert codes == [0, 0], report

  chief, other = (_load_weights(path) for path in outputs)
  for part in ("initial", "final"):
    for path, value in chief[part].items():
      np.testing.assert_array_equal(value, other[part][path], err_msg=f"{part} {path}")
  # ... the same weights as one device trained from the same start on the same global batches,
  # clipping the global gradient to the same norm.
  reference, _ = _train(_config(steps=STEPS, grad_clip_norm=CLIP_NORM), tf.distribute.get_strategy(),
                        chief["initial"], tmp_path / "single")
  train_helpers.assert_same_training(chief["final"], reference, chief["initial"])

  assert sorted(p.name for p in workdir.iterdir()) == ["checkpoints", "train"], report
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.endswith(".index")) == [
      "ckpt-2.index", "ckpt-3.index"]
  assert len(list((workdir / "train").iterdir())) == 1   # one event file: the chief's
  for index, log in enumerate(logs):
    text = log.read_text()
    assert f"worker_{index} done: step 3" in text, report
    # The derived per-replica batch and the learning rate are logged.
    assert ("Strategy multi_worker: 2 replica(s); global batch 4, per replica 2; peak learning rate "
            "0.0001 (base 0.0001)") in text, report


# A worker killed mid-run: main.py on the tiny data, 16 steps, a checkpoint every 4.
FAULT_STEPS = 16
# Seconds from the SIGKILL of worker 1 to the end of worker 0: the coordination service's heartbeat
# timeout (10 s in TF 2.21) plus the step in flight and the exit; measured 9-11 s.
LOST_WORKER_BOUND = 30


def _train_args(data, workdir):
  return [os.path.join(REPO, "main.py"), "--mode=train", *cli_helpers.config_flags(data),
          "--config.train.strategy=multi_worker", f"--config.train.steps={FAULT_STEPS}",
          "--config.train.checkpoint_every=4", f"--workdir={workdir}"]


@pytest.mark.slow  # about 50 s: two workers, a kill, a restart
def test_a_killed_worker_ends_the_other_and_both_resume_from_the_chiefs_checkpoint(tmp_path,
                                                                                    tmp_path_factory):
  """SIGKILL of worker 1 once the chief saved ckpt-4: the chief ends with one error line within
  LOST_WORKER_BOUND, writing nothing more; restarted, both resume from the chief's last checkpoint.

  Worker 1 is the one killed: only the coordination service's heartbeats reveal its death (the
  chief's is seen at once, the other's next collective cannot connect: ~1 s measured), and its
  scratch checkpoints are the ones a restarted worker must not resume from.
  """
  workdir = tmp_path / "run"
  args = _train_args(cli_helpers.tiny_data(tmp_path_factory), workdir)
  logs = [tmp_path / "worker_0.log", tmp_path / "worker_1.log"]
  with _workers([args] * 2, logs) as (chief, other):
    deadline = time.monotonic() + 240
    while f"Saved checkpoint {workdir}/checkpoints/ckpt-4" not in logs[0].read_text():
      assert chief.poll() is None and other.poll() is None, logs[0].read_text()[-3000:]
      assert time.monotonic() < deadline, "no checkpoint 4 within 240 s"
      time.sleep(0.02)
    os.killpg(other.pid, signal.SIGKILL)
    try:
      chief.wait(timeout=LOST_WORKER_BOUND)
    except subprocess.TimeoutExpired:
      pytest.fail(f"worker 0 still runs {LOST_WORKER_BOUND} s after worker 1 was killed")
  text = logs[0].read_text()
  checkpoint = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
  assert chief.returncode == 1, text[-3000:]
  assert [line for line in text.splitlines() if line.startswith("error:")] == [
      "error: worker_1 of the multi-worker cluster died or became unreachable (TensorFlow: "
      "UnavailableError), so worker_0 stops too; restart every worker with its command: all resume "
      f"from the chief's last checkpoint {checkpoint}"], text[-3000:]
  assert "Traceback" not in text
  # The newest checkpoint is the last one the chief saved before, whole and finite.
  assert text.split("Saved checkpoint ")[-1].split()[0] == checkpoint
  step = int(checkpoint.rsplit("-", 1)[1])
  assert 4 <= step < FAULT_STEPS
  reader = tf.train.load_checkpoint(checkpoint)
  assert all(np.all(np.isfinite(reader.get_tensor(name)))
             for name, dtype in reader.get_variable_to_dtype_map().items() if dtype.is_floating)

  # A worker that cannot see the chief's checkpoints (here: another --workdir) would start at step 0:
  # both refuse, in one line, before training.
  elsewhere = tmp_path / "elsewhere"
  with _workers([args, _train_args(cli_helpers.tiny_data(tmp_path_factory), elsewhere)], logs) as processes:
    codes = [p.wait(timeout=240) for p in processes]
  for index, (code, log, seen) in enumerate(zip(codes, logs, (workdir, elsewhere))):
    text = log.read_text()
    assert code == 1 and [line for line in text.splitlines() if line.startswith("error:")] == [
        f"error: the workers would resume at different steps ({step}, 0; worker_{index} at "
        f"{(step, 0)[index]}): every worker restores from the chief's checkpoints (here {seen}/checkpoints), "
        "so all need the same --workdir on a filesystem they share"], text[-3000:]
  assert tf.train.latest_checkpoint(str(workdir / "checkpoints")) == checkpoint

  codes = _run_workers([args] * 2, logs, timeout=240)
  report = "\n".join(f"--- worker {i} (exit {code}):\n{log.read_text()[-3000:]}"
                     for i, (code, log) in enumerate(zip(codes, logs)))
  assert codes == [0, 0], report
  for log in logs:
    text = log.read_text()
    assert f"Resumed from {checkpoint} at step {step}" in text, report
    assert f"Training done at step {FAULT_STEPS}" in text, report
  assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith(f"ckpt-{FAULT_STEPS}")
  assert not (workdir / "tmp").exists()   # worker 1's scratch folder went at its end


@pytest.mark.e2e
def test_a_failing_or_hanging_worker_ends_the_run(tmp_path):
  """Worker 1 fails at once while worker 0 waits (as for a collective): both end, no stray process."""
  script = ("import json, os, sys, time\n"
            "index = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
            "sys.exit(3) if index == 1 and sys.argv[1] == 'fail' else time.sleep(600)")
  logs = [tmp_path / "worker_0.log", tmp_path / "worker_1.log"]
  for mode, timeout, expected in (("fail", 60, [-signal.SIGKILL, 3]), ("hang", 1, [-signal.SIGKILL] * 2)):
    start = time.monotonic()
    assert _run_workers([("-c", script, mode)] * 2, logs, timeout) == expected
    assert time.monotonic() - start < 10   # "fail" does not wait for its 60 s timeout
