"""Writing files so that a reader never sees half of one: a temp file beside it, then a rename."""

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
