"""A tf.data service on 127.0.0.1: a dispatcher and data workers as `main.py --mode=data_service`
processes, for benchmarks/data_service.py and tests/test_data_service.py."""

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
START_TIMEOUT = 120  # seconds for a server to print its serving line


def free_ports(count):
  """``count`` different TCP ports free on 127.0.0.1 (at the time of the call)."""
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def start(args, log_path):
  """Starts `main.py --mode=data_service args` in its own session (output to log_path) and waits for
  its serving line; RuntimeError naming the log when it ends or stays silent."""
  with open(log_path, "w") as log:
    process = subprocess.Popen([sys.executable, str(REPO / "main.py"), "--mode=data_service", *args],
                               cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  deadline = time.monotonic() + START_TIMEOUT
  while "serving" not in pathlib.Path(log_path).read_text():
    if process.poll() is not None or time.monotonic() > deadline:
      raise RuntimeError(f"main.py --mode=data_service {' '.join(args)} did not start: see {log_path}")
    time.sleep(0.1)
  return process


def dispatcher_args(address, work_dir=""):
  """The flags of a dispatcher serving ``address`` (host:port), journal in ``work_dir`` if given."""
  return ["--data_service_role=dispatcher", f"--data_service_port={address.rsplit(':', 1)[1]}",
          *([f"--data_service_work_dir={work_dir}"] if work_dir else [])]


@contextlib.contextmanager
def cluster(log_dir, num_workers=2, work_dir=""):
  """A dispatcher (journal in work_dir, if given) and num_workers data workers on 127.0.0.1; yields
  (dispatcher address, [dispatcher, *workers]); every process in that list at the end, including ones
  the caller appended, is killed (its process group)."""
  dispatcher_port, *worker_ports = free_ports(1 + num_workers)
  address = f"127.0.0.1:{dispatcher_port}"
  processes = []
  try:
    processes.append(start(dispatcher_args(address, work_dir), os.path.join(log_dir, "dispatcher.log")))
    for index, port in enumerate(worker_ports):
      processes.append(start(["--data_service_role=worker", f"--data_service_port={port}",
                              f"--data_service_dispatcher={address}", "--data_service_worker_address=127.0.0.1"],
                             os.path.join(log_dir, f"worker_{index}.log")))
    yield address, processes
  finally:
    for process in processes:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
