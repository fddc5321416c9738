"""Writing files so that a reader never sees half of one (a temp file beside it, then a rename), and
finding an unwritable or full output folder before the work that would fill it."""

import ctypes
import ctypes.util
import json
import os
import shutil
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


def is_remote(path):
  """Whether path is on remote storage (gs://, s3://...): no local locks, probes or atomic swaps there."""
  return "://" in os.fspath(path)


def check_writable(directory):
  """Creates ``directory`` if needed and writes (then removes) a 1 MiB probe file in it, so an
  unwritable or full folder is an OSError naming it now, not after minutes of work. Remote
  paths (``gs://``...) are not probed."""
  directory = os.fspath(directory)
  if is_remote(directory):
    return
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory, prefix=".write-probe") as f:
      f.write(b"\0" * PROBE_BYTES)
      f.flush()
      os.fsync(f.fileno())
  except OSError as error:
    raise OSError(error.errno, f"cannot write to {directory}: {error.strerror}") from None


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a, b):
  """Swaps two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
  libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
  if not hasattr(libc, "renameat2"):
    return False
  if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  error = ctypes.get_errno()
  if error in (38, 22, 95):  # ENOSYS, EINVAL, EOPNOTSUPP: not on this kernel or file system
    return False
  raise OSError(error, f"cannot swap {a} and {b}: {os.strerror(error)}")


def replace_dir(new, target):
  """Puts the complete folder ``new`` at ``target``, replacing any folder there.

  On Linux the two are swapped atomically, so a process killed at any moment leaves the old
  or the new folder at ``target``, never none; elsewhere the old one is first moved aside
  (to ``target``.old, removed at the end).
  """
  if not os.path.exists(target):
    os.rename(new, target)
  elif _exchange(new, target):
    shutil.rmtree(new)  # now the old folder
  else:
    aside = target + ".old"
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(target, aside)
    os.rename(new, target)
    shutil.rmtree(aside)


def write_dir(target, fill):
  """Makes the folder ``target`` with ``fill(folder)``, which writes its files into a sibling folder
  (<target>.partial) that then replaces ``target`` (replace_dir; on remote storage, which has no
  atomic swap, the old folder is removed first). A failure or kill meanwhile leaves the old ``target``."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  (gs:// and other remote paths)
  partial = os.fspath(target).rstrip("/") + ".partial"
  if tf.io.gfile.exists(partial):
    tf.io.gfile.rmtree(partial)
  tf.io.gfile.makedirs(partial)
  fill(partial)
  if is_remote(target):
    if tf.io.gfile.exists(target):
      tf.io.gfile.rmtree(target)
    tf.io.gfile.rename(partial, target)
  else:
    replace_dir(partial, target)
  return target
