"""One writer per run directory: an exclusive lock that training holds while it runs.

The lock is ``<workdir>/.lock``, locked with flock(2): the operating system releases it
when the holding process ends, however it ends (a SIGKILL too), so a lock left by a
killed run is simply taken over. The file holds who took it (pid, host, since) for the
message a second writer gets. Local file systems only: on a remote path (``gs://``...)
no lock is taken.
"""

import datetime
import fcntl
import json
import os
import socket

from ssd_tf import files
from ssd_tf import run_dir


class RunDirectoryBusy(BlockingIOError):
  """Another process holds the run directory's lock."""


def _path(workdir):
  return run_dir.RunDir(workdir).lock


def _holder_text(f):
  f.seek(0)
  try:
    info = json.loads(f.read() or "{}")
  except ValueError:
    info = {}
  return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}")


def acquire(workdir):
  """Takes the lock of workdir (created if needed) for the rest of this process's life.

  Returns the open lock file (keep it: closing it releases the lock), or None for a
  remote path. RunDirectoryBusy names the holder when another process has it.
  """
  if files.is_remote(workdir):
    return None
  os.makedirs(workdir, exist_ok=True)
  f = open(_path(workdir), "a+")  # pylint: disable=consider-using-with  (held until exit)
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _holder_text(f)
    f.close()
    raise RunDirectoryBusy(f"{workdir} is in use by another training ({holder}; lock {_path(workdir)}): "
                           "wait for it to end or give another --workdir") from None
  f.seek(0)
  f.truncate()
  json.dump(dict(pid=os.getpid(), host=socket.gethostname(),
                 since=datetime.datetime.now().isoformat(timespec="seconds")), f)
  f.flush()
  return f


def holder(workdir):
  """"pid N on HOST since T" of the process holding workdir's lock, or None when it is free."""
  path = _path(workdir)
  if files.is_remote(workdir) or not os.path.exists(path):
    return None
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return _holder_text(f)
    fcntl.flock(f, fcntl.LOCK_UN)
  return None
