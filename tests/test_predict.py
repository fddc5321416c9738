"""predict and export_savedmodel.py from the command line, on the tiny trained run of cli_helpers."""

import json
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from ssd_tf import export
from ssd_tf.label_map import LabelMap

import cli_helpers
from cli_helpers import run_cli

pytestmark = pytest.mark.e2e  # main.py / export_savedmodel.py in subprocesses


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  return cli_helpers.trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def inputs(trained, tmp_path_factory):
  """A folder (2 val images, a .png holding text), a glob (2 more), a missing file, a glob matching nothing.

  Returns (the --images value, the readable image paths, the unreadable paths).
  """
  root = tmp_path_factory.mktemp("predict_inputs")
  val_images = sorted((trained["data"]["coco_dir"] / "val2017").glob("*.jpg"))
  (root / "folder").mkdir()
  for path in val_images[:2]:
    shutil.copy(path, root / "folder")
  for path in val_images[2:4]:
    shutil.copy(path, root)
  (root / "folder" / "broken.png").write_text("not an image")
  (root / "folder" / "notes.txt").write_text("not an image extension: not listed")
  readable = sorted((root / "folder").glob("*.jpg")) + sorted(root.glob("*.jpg"))
  unreadable = [root / "folder" / "broken.png", root / "missing.jpg", root / "none_*.png"]
  patterns = [root / "folder", root / "*.jpg", root / "missing.jpg", root / "none_*.png"]
  return ",".join(map(str, patterns)), readable, unreadable


def _predict(trained, images, output_dir, *source):
  result = run_cli("main.py", "--mode=predict", *cli_helpers.config_flags(trained["data"]),
                   f"--images={images}", f"--output_dir={output_dir}", *source)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads((output_dir / "detections.json").read_text()), result


@pytest.fixture(scope="module")
def from_checkpoint(trained, inputs, tmp_path_factory):
  return _predict(trained, inputs[0], tmp_path_factory.mktemp("predict_checkpoint"),
                  f"--workdir={trained['workdir']}")


@pytest.fixture(scope="module")
def saved_model(trained, tmp_path_factory):
  export_dir = tmp_path_factory.mktemp("export") / "saved_model"
  result = run_cli("export_savedmodel.py", *cli_helpers.config_flags(trained["data"]),
                   f"--workdir={trained['workdir']}", f"--export_dir={export_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"SavedModel written to {export_dir}" in result.stdout
  return export_dir


def test_predict_reports_bad_files_by_name_and_keeps_going(from_checkpoint, inputs):
  output, result = from_checkpoint
  _, readable, unreadable = inputs
  messages = cli_helpers.message_lines(result.stderr)
  for path in unreadable:
    assert any(line.startswith(f"predict: skipping {path}: ") for line in messages), (path, messages)
  assert "Traceback" not in result.stderr
  assert [f["file"] for f in output["failed"]] == [str(p) for p in unreadable]
  failure = {f["file"]: f["error"] for f in output["failed"]}
  assert failure[str(unreadable[0])] == "not a JPEG, PNG, GIF or BMP image"
  assert failure[str(unreadable[1])] == "No such file or directory"
  assert [r["file"] for r in output["images"]] == [str(p) for p in readable]
  assert f"predict: {len(readable)} images" in result.stdout
  notes = inputs[0].split(",")[0] + "/notes.txt"
  assert output["not_images"] == [notes]
  assert any(line.startswith(f"predict: skipping {notes}: not an image extension") for line in messages)


def test_predict_of_no_readable_image_exits_non_zero_and_keeps_the_record(trained, inputs, tmp_path):
  _, _, unreadable = inputs
  result = run_cli("main.py", "--mode=predict", *cli_helpers.config_flags(trained["data"]),
                   f"--workdir={trained['workdir']}", f"--images={unreadable[0]},{unreadable[1]}",
                   f"--output_dir={tmp_path}")
  assert result.returncode != 0
  assert cli_helpers.message_lines(result.stderr)[-1] == (
      f"error: predict: none of the 2 images could be read (listed in {tmp_path / 'detections.json'})")
  record = json.loads((tmp_path / "detections.json").read_text())
  assert record["images"] == [] and [f["file"] for f in record["failed"]] == list(map(str, unreadable[:2]))


def test_predict_writes_pixel_boxes_and_annotated_images(trained, from_checkpoint):
  output, _ = from_checkpoint
  label_map = LabelMap.load(trained["workdir"] / "label_map.json")
  names = {e["category_id"]: e["name"] for e in label_map.entries}
  assert sum(len(r["detections"]) for r in output["images"]) > 0
  for record in output["images"]:
    with Image.open(record["file"]) as original:
      assert (record["width"], record["height"]) == original.size
    with Image.open(record["annotated"]) as annotated:
      assert annotated.format == "PNG" and annotated.size == (record["width"], record["height"])
      drawn = np.asarray(annotated.convert("RGB"), np.int16)
    with Image.open(record["file"]) as original:
      plain = np.asarray(original.convert("RGB"), np.int16)
    if record["detections"]:
      assert np.abs(drawn - plain).max() > 100  # boxes and captions are drawn
    for d in record["detections"]:
      x, y, w, h = d["bbox"]
      assert 0 <= x and 0 <= y and w >= 0 and h >= 0, d
      assert x + w <= record["width"] + 0.01 and y + h <= record["height"] + 0.01, d
      assert names[d["category_id"]] == d["name"]
      assert output["score_threshold"] <= d["score"] <= 1


def test_export_writes_a_loadable_saved_model(trained, saved_model):
  loaded = tf.saved_model.load(str(saved_model))
  assert set(loaded.signatures) == {"serving_default", "serving_images"}
  assert (LabelMap.load(export.asset_label_map_path(str(saved_model))).entries
          == LabelMap.load(trained["workdir"] / "label_map.json").entries)


def test_saved_model_and_checkpoint_predict_the_same(trained, inputs, from_checkpoint, saved_model,
                                                     tmp_path):
  from_export, result = _predict(trained, inputs[0], tmp_path, f"--saved_model={saved_model}")
  reference, _ = from_checkpoint
  assert from_export["failed"] == reference["failed"]
  assert len(from_export["images"]) == len(reference["images"])
  for got, want in zip(from_export["images"], reference["images"]):
    assert got["file"] == want["file"]
    assert len(got["detections"]) == len(want["detections"]), got["file"]
    for a, b in zip(got["detections"], want["detections"]):
      assert (a["category_id"], a["name"]) == (b["category_id"], b["name"])
      np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.02)  # rounded to 0.01 px in the json
      assert a["score"] == pytest.approx(b["score"], abs=2e-4)  # rounded to 1e-4
  assert "Traceback" not in result.stderr


def test_predict_from_a_saved_model_writes_beside_it_not_inside(trained, inputs, saved_model, tmp_path):
  copy = tmp_path / "export" / "saved_model"
  shutil.copytree(saved_model, copy)
  before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
  result = run_cli("main.py", "--mode=predict", *cli_helpers.config_flags(trained["data"]),
                   f"--images={inputs[1][0]}", f"--saved_model={copy}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before
  assert json.loads((tmp_path / "export" / "predictions" / "detections.json").read_text())["images"]
