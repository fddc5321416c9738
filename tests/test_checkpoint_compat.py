"""A run trained by the code before the SSD object (commit 34cf7f7) evaluates to the same detections today.

The old code is taken from this repository's history (git archive), trains the tiny config
and evaluates its checkpoint; today's eval mode evaluates the same checkpoint; the
detections.json files must agree. The images are PNGs: JPEGs decode differently since, on
purpose (libjpeg's accurate DCT, PIL's pixels, instead of TensorFlow's fast default).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import cli_helpers
from ssd_tf.data import prepare
from ssd_tf.data import synthetic

pytestmark = pytest.mark.slow  # about 20 s: the old code trains and evaluates

BEFORE_SSD_OBJECT = "34cf7f7361b4f6bb9ef86dc1864a91aa95989a88"  # the last commit whose model, train and runner predate ssd_tf.SSD


def _old_checkout(tmp_path):
  """The repository as of BEFORE_SSD_OBJECT, unpacked in tmp_path/old (skips outside a git clone)."""
  git = shutil.which("git")
  inside = git and subprocess.run([git, "-C", str(cli_helpers.REPO), "rev-parse", "--git-dir"],
                                  capture_output=True).returncode == 0
  if not inside:
    pytest.skip("not a git checkout: the old code comes from the repository's history")
  old = tmp_path / "old"
  old.mkdir()
  archive = subprocess.run([git, "-C", str(cli_helpers.REPO), "archive", BEFORE_SSD_OBJECT],
                           capture_output=True, check=True).stdout
  subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
  return old


def _png_data(root):
  """The tiny synthetic dataset with every image stored as PNG, prepared into root/tfrecords."""
  synthetic.write_dataset(str(root / "coco"), num_train=24, num_val=8, side_range=(96, 128), num_workers=1,
                          verbose=False)
  for split in ("train2017", "val2017"):
    path = root / "coco" / "annotations" / f"instances_{split}.json"
    annotations = json.loads(path.read_text())
    for image in annotations["images"]:
      jpeg = root / "coco" / split / image["file_name"]
      image["file_name"] = jpeg.with_suffix(".png").name
      Image.open(jpeg).save(jpeg.with_suffix(".png"))
      jpeg.unlink()
    path.write_text(json.dumps(annotations))
    prepare.prepare_split(str(root / "coco"), split, str(root / "tfrecords"), num_shards=2, num_workers=1,
                          verbose=False)
  return root / "tfrecords"


def _run(repo, *args):
  result = subprocess.run([sys.executable, str(repo / "main.py"), *map(str, args)], cwd=repo,
                          capture_output=True, text=True, timeout=cli_helpers.TIMEOUT)
  assert result.returncode == 0, result.stderr[-3000:]


def test_checkpoint_from_before_the_ssd_object_gives_the_same_detections(tmp_path_factory, tmp_path):
  old = _old_checkout(tmp_path)
  records = _png_data(tmp_path_factory.mktemp("png_data"))
  workdir = tmp_path / "run"
  flags = [f"--config.data.tfrecord_dir={records}", f"--workdir={workdir}",
           "--config.postprocess.score_threshold=0.001"]
  _run(old, "--mode=train", f"--config={old / 'tests' / 'tiny_config.py'}", *flags)
  _run(old, "--mode=eval", f"--config={old / 'tests' / 'tiny_config.py'}", *flags)
  before = json.loads((workdir / "detections.json").read_text())
  os.remove(workdir / "detections.json")
  _run(cli_helpers.REPO, "--mode=eval", f"--config={cli_helpers.TINY_CONFIG}", *flags)
  after = json.loads((workdir / "detections.json").read_text())

  assert len(before) == len(after) > 50
  key = lambda d: (d["image_id"], -d["score"], d["category_id"])  # noqa: E731
  for a, b in zip(sorted(before, key=key), sorted(after, key=key)):
    assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
    assert a["score"] == pytest.approx(b["score"], abs=1e-6)
    np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1e-3)
