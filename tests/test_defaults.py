"""ssd_tf.defaults.coco_sample_dir: $COCO_TINY_DIR at call time, else the sample beside the repository."""

import pathlib

from ssd_tf import defaults

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_coco_sample_dir_defaults_to_shared_data_beside_the_repo(monkeypatch):
  monkeypatch.delenv("COCO_TINY_DIR", raising=False)
  path = pathlib.Path(defaults.coco_sample_dir())
  assert path.parts[-3:] == ("shared", "data", "coco_tiny")
  assert path == REPO.parent / "shared" / "data" / "coco_tiny"


def test_coco_tiny_dir_overrides_the_coco_sample_dir_at_each_call(monkeypatch, tmp_path):
  monkeypatch.setenv("COCO_TINY_DIR", str(tmp_path / "a"))
  assert defaults.coco_sample_dir() == str(tmp_path / "a")
  monkeypatch.setenv("COCO_TINY_DIR", str(tmp_path / "b"))
  assert defaults.coco_sample_dir() == str(tmp_path / "b")
