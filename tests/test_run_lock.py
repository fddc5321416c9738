"""One writer per run directory: a second training is refused naming the holder; a killed holder's lock is taken over."""

import os
import signal
import subprocess
import sys
import time

import pytest

from ssd_tf import run_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = "import sys, time; from ssd_tf import run_lock; lock = run_lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(600)"


def hold_in_subprocess(workdir):
  """A process that holds workdir's lock until killed (started once it holds it)."""
  process = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=REPO))
  assert process.stdout.readline().strip() == "held"
  return process


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
  lock = run_lock.acquire(tmp_path / "run")
  try:
    # flock locks belong to open files: a second open in this same process conflicts as another process would.
    with pytest.raises(run_lock.RunDirectoryBusy,
                       match=rf"run is in use by another training \(pid {os.getpid()} on \S+ since \d{{4}}-"):
      run_lock.acquire(tmp_path / "run")
    assert run_lock.holder(tmp_path / "run").startswith(f"pid {os.getpid()} on ")
  finally:
    lock.close()
  assert run_lock.holder(tmp_path / "run") is None
  run_lock.acquire(tmp_path / "run").close()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
  process = hold_in_subprocess(tmp_path)
  try:
    assert run_lock.holder(tmp_path) == run_lock.holder(tmp_path)  # stable
    assert run_lock.holder(tmp_path).startswith(f"pid {process.pid} on ")
    with pytest.raises(run_lock.RunDirectoryBusy, match=f"pid {process.pid}"):
      run_lock.acquire(tmp_path)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  deadline = time.monotonic() + 10
  while run_lock.holder(tmp_path) and time.monotonic() < deadline:
    time.sleep(0.05)
  lock = run_lock.acquire(tmp_path)
  assert run_lock.holder(tmp_path) is not None  # ours now (seen from another open file)
  lock.close()


def test_remote_paths_take_no_lock():
  assert run_lock.acquire("gs://bucket/run") is None and run_lock.holder("gs://bucket/run") is None
