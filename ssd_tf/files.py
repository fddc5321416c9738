"""Writing files so that a reader never sees half of one (a temp file beside it, then a rename), and
finding an unwritable or full output folder before the work that would fill it."""

import json
import os
import tempfile


def write_atomic(path, text):
  """Writes ``text`` to ``path``: complete or, after a crash at any moment, the old file (or none)."""
  path = os.fspath(path)
  fd, temp_path = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=os.path.basename(path) + ".",
                                   suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp_path, path)
  except BaseException:
    os.unlink(temp_path)
    raise


def write_json(path, value, indent=None):
  """Writes ``value`` as JSON to ``path`` atomically (write_atomic)."""
  write_atomic(path, json.dumps(value, indent=indent))


PROBE_BYTES = 1 << 20


def check_writable(directory):
  """Creates ``directory`` if needed and writes (then removes) a 1 MiB probe file in it, so an
  unwritable or full folder is an OSError naming it now, not after minutes of work. Remote
  paths (``gs://``...) are not probed."""
  directory = os.fspath(directory)
  if "://" in directory:
    return
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory, prefix=".write-probe") as f:
      f.write(b"\0" * PROBE_BYTES)
      f.flush()
      os.fsync(f.fileno())
  except OSError as error:
    raise OSError(error.errno, f"cannot write to {directory}: {error.strerror}") from None
