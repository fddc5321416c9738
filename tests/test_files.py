"""files: atomic writes, and unwritable or full output folders found before the work."""

import contextlib
import errno
import os
import shutil
import subprocess

import pytest

from ssd_tf import files


@contextlib.contextmanager
def small_disk(path, size_kb):
  """A tmpfs of size_kb mounted at path (skips where mounting is not permitted)."""
  path.mkdir(parents=True, exist_ok=True)
  mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                         capture_output=True, text=True) if shutil.which("mount") else None
  if mount is None or mount.returncode:
    pytest.skip(f"cannot mount a small tmpfs here to fill: {mount.stderr.strip() if mount else 'no mount'}")
  try:
    yield path
  finally:
    subprocess.run(["umount", str(path)], check=True)


def fill(disk):
  """Writes disk/filler until the disk is full."""
  with open(disk / "filler", "wb", buffering=0) as f:
    with contextlib.suppress(OSError):
      while True:
        f.write(b"\0" * 4096)


def test_write_atomic_replaces_whole_and_leaves_no_temp_file(tmp_path):
  path = tmp_path / "metrics.json"
  files.write_json(path, {"AP": 0.5})
  files.write_json(path, {"AP": 0.6})
  assert path.read_text() == '{"AP": 0.6}' and os.listdir(tmp_path) == ["metrics.json"]


def test_check_writable_creates_the_folder_and_leaves_nothing(tmp_path):
  files.check_writable(tmp_path / "a" / "b")
  assert os.listdir(tmp_path / "a" / "b") == []


def test_an_unwritable_folder_is_named():
  with pytest.raises(OSError, match="^.*cannot write to /proc/self/ssd_tf_run: "):
    files.check_writable("/proc/self/ssd_tf_run")


def test_a_full_folder_is_named(tmp_path):
  with small_disk(tmp_path / "full", 512) as folder:
    fill(folder)
    with pytest.raises(OSError, match=f"cannot write to {folder}: No space left on device") as error:
      files.check_writable(folder)
    assert error.value.errno == errno.ENOSPC
    assert sorted(os.listdir(folder)) == ["filler"]
