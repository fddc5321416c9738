"""Resuming training after kill -9: `main.py --mode=train`, killed mid-epoch, then the same command again.

The tiny config trains 16 steps of 4 images (an epoch is 24 images = 6 steps) with
deterministic data and a checkpoint every 8 steps, so the kill after step 10 lands
mid-epoch, 2 steps past checkpoint 8 and 6 steps before the next one.
"""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import cli_helpers

pytestmark = pytest.mark.e2e  # main.py / export_savedmodel.py in subprocesses

STEPS, CHECKPOINT_EVERY, KILL_AFTER_STEP = 16, 8, 10
# "step 9/16  loss 20.3701 (loc 5.4412, cls 13.7757)  lr ..." (train.Trainer._log_step)
_STEP_LOG = re.compile(r"\] step (\d+)/\d+  (loss \S+ \(loc \S+ cls \S+\))")


def _train_flags(data, workdir):
  return ["--mode=train", *cli_helpers.config_flags(data), "--config.data.deterministic=True",
          f"--config.train.steps={STEPS}", f"--config.train.checkpoint_every={CHECKPOINT_EVERY}",
          "--config.train.keep_checkpoints=3", "--config.train.log_every=1", f"--workdir={workdir}"]


def _logged_losses(stderr):
  """{step: "loss x (loc y, cls z)"} as the run logged them (4 decimals)."""
  return {int(step): losses for step, losses in _STEP_LOG.findall(stderr)}


def _kill_after_step(args, log_path, step, timeout=cli_helpers.TIMEOUT):
  """Starts main.py, SIGKILLs its process group once it has logged `step`; returns its exit code."""
  with open(log_path, "w") as log:
    process = subprocess.Popen([sys.executable, str(cli_helpers.REPO / "main.py"), *args],
                               cwd=cli_helpers.REPO, stdout=log, stderr=log, start_new_session=True)
  try:
    deadline = time.monotonic() + timeout
    while f"] step {step}/" not in log_path.read_text():
      assert process.poll() is None, f"training ended before step {step}:\n{log_path.read_text()[-3000:]}"
      assert time.monotonic() < deadline, f"no step {step} within {timeout} s"
      time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    return process.wait(timeout=60)
  finally:
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGKILL)
      process.wait(timeout=60)


def _checkpoint_weights(path):
  reader = tf.train.load_checkpoint(str(path))
  return {name: reader.get_tensor(name) for name, dtype in reader.get_variable_to_dtype_map().items()
          if dtype.is_floating}


@pytest.fixture(scope="session")
def data(tmp_path_factory):
  return cli_helpers.tiny_data(tmp_path_factory)


@pytest.fixture(scope="module")
def killed_and_resumed(data, tmp_path_factory):
  """(workdir, log of the killed run, CompletedProcess of the rerun)."""
  workdir = tmp_path_factory.mktemp("resume") / "run"
  log_path = workdir.parent / "killed.log"
  exit_code = _kill_after_step(_train_flags(data, workdir), log_path, KILL_AFTER_STEP)
  assert exit_code == -signal.SIGKILL
  assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith(f"ckpt-{CHECKPOINT_EVERY}")
  rerun = cli_helpers.run_cli("main.py", *_train_flags(data, workdir))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  return workdir, log_path.read_text(), rerun


def test_rerun_resumes_from_the_last_checkpoint(killed_and_resumed):
  workdir, killed_log, rerun = killed_and_resumed
  killed, resumed = _logged_losses(killed_log), _logged_losses(rerun.stderr)
  assert min(killed) == 1 and max(killed) >= KILL_AFTER_STEP
  assert f"Resumed from {workdir / 'checkpoints' / f'ckpt-{CHECKPOINT_EVERY}'} at step {CHECKPOINT_EVERY}" \
      in rerun.stderr
  assert sorted(resumed) == list(range(CHECKPOINT_EVERY + 1, STEPS + 1))  # no step run twice, none skipped
  assert f"Training done at step {STEPS}" in rerun.stdout
  # Steps the killed run did past its checkpoint, done again from the checkpoint: the same
  # weights and data batch (step 9), and the same momentum (step 10), give the same losses.
  repeated = [step for step in killed if step > CHECKPOINT_EVERY]
  assert repeated and all(killed[step] == resumed[step] for step in repeated), (killed, resumed)


def test_tensorboard_steps_continue_without_duplicates(killed_and_resumed):
  workdir, _, rerun = killed_and_resumed
  assert len(list((workdir / "train").glob("events.out.tfevents.*"))) == 2  # one per process
  events = cli_helpers.scalar_events(workdir / "train")
  for tag in ("loss/loss", "learning_rate", "images_per_second"):
    assert [step for step, _ in events[tag]] == list(range(1, STEPS + 1)), tag
  resumed = _logged_losses(rerun.stderr)
  for step, loss in events["loss/loss"][CHECKPOINT_EVERY:]:
    assert f"loss {loss:.4f} " in resumed[step] + " "


def test_resumed_run_ends_where_an_uninterrupted_run_ends(data, killed_and_resumed, tmp_path):
  """Deterministic data, float32, no XLA on a CPU: the two runs agree bit for bit."""
  workdir, _, _ = killed_and_resumed
  uninterrupted = cli_helpers.run_cli("main.py", *_train_flags(data, tmp_path))
  assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
  final = f"ckpt-{STEPS}"
  weights = _checkpoint_weights(workdir / "checkpoints" / final)
  reference = _checkpoint_weights(tmp_path / "checkpoints" / final)
  assert weights.keys() == reference.keys()
  for name, value in weights.items():
    np.testing.assert_array_equal(value, reference[name], err_msg=name)
