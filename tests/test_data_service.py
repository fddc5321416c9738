"""Training input from tf.data service (ssd_tf/data/service.py): a dispatcher and two data worker
processes (main.py --mode=data_service) on 127.0.0.1 feed the tiny config's training pipeline."""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import local_service
from ssd_tf.data import service
import cli_helpers
import tiny_config

UNREACHABLE_BOUND = 60   # seconds; measured 2.9 s (connection refused at once; TensorFlow alone: > 100 s)


def test_addresses_are_normalized_and_bad_ones_named():
  assert service.parse_address("grpc://data-host:5050") == ("data-host", 5050)
  assert service.parse_address("127.0.0.1:5050") == ("127.0.0.1", 5050)
  for bad in ("data-host", "grpc://data-host", "http://data-host:5050", "data-host:0", "data-host:port"):
    with pytest.raises(ValueError, match=f"config.data.service_address='{bad}' is not a tf.data service"):
      service.parse_address(bad)


def test_one_job_per_run_directory_and_start_step(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  job = service.job_name("run", 0)
  assert job == service.job_name(str(tmp_path / "run"), 0)   # every trainer names it alike
  assert len({job, service.job_name("run", 4), service.job_name("other", 0)}) == 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
  with local_service.cluster(tmp_path_factory.mktemp("data_service")) as (address, _):
    yield address


def _train(data, workdir, address, *overrides):
  return [str(cli_helpers.REPO / "main.py"), "--mode=train", *cli_helpers.config_flags(data),
          f"--workdir={workdir}", f"--config.data.service_address={address}", *overrides]


@pytest.mark.e2e
def test_every_complete_epoch_holds_each_training_image_once(cluster, tmp_path_factory):
  """The dataset the trainer reads (service.train_dataset), 40 batches of 4 (~6.7 epochs of 24)."""
  data = cli_helpers.tiny_data(tmp_path_factory)
  with open(data["coco_dir"] / "annotations" / "instances_train2017.json") as f:
    split = sorted(image["id"] for image in json.load(f)["images"])
  config = tiny_config.get_config()
  config.data.tfrecord_dir = str(data["tfrecord_dir"])
  config.data.service_address = cluster
  epochs = collections.defaultdict(list)
  for batch in service.train_dataset(config, None, "test-epochs").take(40):
    assert batch["image"].shape == (4, 64, 64, 3)
    for epoch, image_id in zip(batch["epoch"].numpy(), batch["image_id"].numpy()):
      epochs[int(epoch)].append(int(image_id))
  complete = [epoch for epoch, ids in epochs.items() if len(ids) == len(split)]
  assert len(complete) >= 4, {epoch: len(ids) for epoch, ids in epochs.items()}
  for epoch, ids in epochs.items():
    assert len(set(ids)) == len(ids) and set(ids) <= set(split), (epoch, ids)
  assert all(sorted(epochs[epoch]) == split for epoch in complete)


@pytest.mark.e2e
def test_two_data_workers_feed_a_training(cluster, tmp_path, tmp_path_factory):
  result = subprocess.run([sys.executable, *_train(cli_helpers.tiny_data(tmp_path_factory), tmp_path / "run",
                                                   cluster)],
                          cwd=cli_helpers.REPO, capture_output=True, text=True, timeout=cli_helpers.TIMEOUT)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Training input from the tf.data service at {cluster}" in result.stderr
  assert "Training done at step 6" in result.stdout


def _train_past_step_10(tmp_path, data, address, at_step_10):
  """Trains 60 steps on the data of the dispatcher at ``address``, calling at_step_10() once step 10 is
  logged; asserts the training finishes."""
  log = tmp_path / "train.log"
  with open(log, "w") as log_file:
    trainer = subprocess.Popen([sys.executable, *_train(data, tmp_path / "run", address,
                                                        "--config.train.steps=60",
                                                        "--config.train.checkpoint_every=30")],
                               cwd=cli_helpers.REPO, stdout=log_file, stderr=subprocess.STDOUT)
  try:
    deadline = time.monotonic() + 240
    while "step 10/60" not in log.read_text():
      assert trainer.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
      time.sleep(0.05)
    at_step_10()
    assert trainer.wait(timeout=240) == 0, log.read_text()[-3000:]
  finally:
    if trainer.poll() is None:
      trainer.kill()
  assert "Training done at step 60" in log.read_text()


@pytest.mark.e2e
@pytest.mark.slow  # about 20 s: its own dispatcher and workers, 60 training steps
def test_a_killed_data_worker_does_not_stop_training(tmp_path, tmp_path_factory):
  """SIGKILL of data worker 0 once step 10 is logged: training runs its 60 steps on worker 1."""
  with local_service.cluster(tmp_path) as (address, processes):
    _train_past_step_10(tmp_path, cli_helpers.tiny_data(tmp_path_factory), address,
                        lambda: os.killpg(processes[1].pid, signal.SIGKILL))
    assert processes[1].wait() == -signal.SIGKILL


@pytest.mark.e2e
@pytest.mark.slow  # about 25 s
def test_a_dispatcher_restarted_with_its_journal_takes_over(tmp_path, tmp_path_factory):
  """SIGKILL of the dispatcher once step 10 is logged, then the same command again (same port and
  --data_service_work_dir): the training goes on to its 60 steps (without a journal it would wait)."""
  journal = tmp_path / "journal"
  with local_service.cluster(tmp_path, num_workers=1, work_dir=journal) as (address, processes):
    def restart():
      os.killpg(processes[0].pid, signal.SIGKILL)
      processes[0].wait()
      processes.append(local_service.start(local_service.dispatcher_args(address, journal), tmp_path / "dispatcher_restarted.log"))

    _train_past_step_10(tmp_path, cli_helpers.tiny_data(tmp_path_factory), address, restart)


@pytest.mark.e2e
@pytest.mark.parametrize("args, message", [
    (["--mode=train", "--workdir={tmp}/run", "--config.data.service_address=127.0.0.1:{port}"],
     "error: config.data.service_address=127.0.0.1:{port}: no tf.data service dispatcher reachable at "
     "127.0.0.1:{port} ([Errno 111] Connection refused)"),
    (["--mode=data_service", "--data_service_role=worker", "--data_service_dispatcher=grpc://127.0.0.1"],
     "error: --data_service_dispatcher='grpc://127.0.0.1' is not a tf.data service address: give host:port "
     "or grpc://host:port"),
], ids=["unreachable_dispatcher", "malformed_address"])
def test_a_bad_dispatcher_address_is_one_line(args, message, tmp_path, tmp_path_factory):
  port, = local_service.free_ports(1)
  start = time.monotonic()
  result = cli_helpers.run_cli("main.py", *cli_helpers.config_flags(cli_helpers.tiny_data(tmp_path_factory)),
                               *(a.format(tmp=tmp_path, port=port) for a in args), timeout=UNREACHABLE_BOUND)
  assert time.monotonic() - start < UNREACHABLE_BOUND
  assert result.returncode == 1
  assert cli_helpers.message_lines(result.stderr) == [message.format(port=port)], result.stderr[-3000:]
