"""The Python API: ssd_tf.load on a run directory and on its SavedModel, every input kind, the README snippet."""

import contextlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import ssd_tf
from ssd_tf import export
from ssd_tf import run_dir
from ssd_tf.label_map import LabelMap
from ssd_tf.ssd import SSD

import test_images
import tiny_config

REPO = pathlib.Path(__file__).resolve().parent.parent
CATEGORY_IDS = (2, 5, 7, 11, 13, 17, 19, 23)  # non-contiguous: the API must map labels back


def _image(seed, height, width):
  return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "PNG")
  return buffer.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A run directory as training leaves it (config.json, label_map.json, checkpoints/, best/), whose
  network has biased class logits so that confident detections exist; and its exported SavedModel."""
  workdir = tmp_path_factory.mktemp("api") / "run"
  config = tiny_config.get_config()
  config.postprocess.score_threshold = 0.05
  label_map = LabelMap([dict(label=i + 1, category_id=c, name=f"thing{c}") for i, c in enumerate(CATEGORY_IDS)])
  run_dir.RunDir(str(workdir)).write(config, label_map)
  tf.keras.utils.set_random_seed(3)
  ssd = SSD(config)
  for layer in ssd.network.layers:
    if layer.name.endswith("_logits"):
      kernel, bias = layer.get_weights()
      bias = np.tile(np.array([0.0, 3.0, 0.0, 2.0, 0, 0, 0, 0, 0], np.float32), len(bias) // 9)
      layer.set_weights([kernel * 3.0, bias])
  ssd.checkpoint().save(str(workdir / "best" / "ckpt"))  # best/ckpt-1: what load picks
  export_dir = export.export_saved_model(ssd, label_map, run_dir.RunDir(workdir).label_map_json,
                                         str(workdir / "export" / "saved_model"))
  return dict(workdir=workdir, saved_model=pathlib.Path(export_dir), ssd=ssd, label_map=label_map)


def _same(a, b, tolerance=1e-3):
  assert len(a) == len(b) and len(a) > 0
  for x, y in zip(a, b):
    assert (x.name, x.category_id, x.label) == (y.name, y.category_id, y.label)
    assert x.score == pytest.approx(y.score, abs=1e-5)
    np.testing.assert_allclose(x.box, y.box, atol=tolerance)


def test_run_directory_and_saved_model_detect_the_same(run):
  from_run, from_export = ssd_tf.load(run["workdir"]), ssd_tf.load(run["saved_model"])
  image = _png(_image(0, 90, 140))
  _same(from_run.detect(image), from_export.detect(image))


def test_detections_are_pixel_boxes_with_names_and_category_ids(run):
  height, width = 90, 140
  array = _image(1, height, width)
  detections = ssd_tf.load(run["workdir"]).detect(array, min_score=0.05)
  # The same image through the SSD by hand: resize, detect, labels -> category ids, boxes -> pixels.
  resized = tf.image.resize(array[None].astype(np.float32), [64, 64], antialias=True)
  reference = {k: v.numpy()[0] for k, v in run["ssd"].detect(resized).items()}
  keep = reference["scores"][:reference["num_detections"]] >= 0.05
  assert len(detections) == keep.sum() > 0
  for d, box, label, score in zip(detections, reference["boxes"][keep], reference["labels"][keep],
                                  reference["scores"][keep]):
    assert d.label == label and d.category_id == CATEGORY_IDS[label - 1] and d.name == f"thing{d.category_id}"
    assert d.score == pytest.approx(float(score), abs=1e-5)
    ymin, xmin, ymax, xmax = box
    np.testing.assert_allclose(d.box, [xmin * width, ymin * height, xmax * width, ymax * height], atol=1e-3)
  assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)


def test_path_bytes_and_array_inputs_agree_and_a_list_is_a_batch(run, tmp_path):
  detector = ssd_tf.load(run["saved_model"])
  arrays = [_image(2, 80, 100), _image(3, 150, 120)]
  path = tmp_path / "one.png"
  path.write_bytes(_png(arrays[0]))
  from_path, from_bytes, from_array = (detector.detect(x) for x in (str(path), _png(arrays[0]), arrays[0]))
  _same(from_path, from_bytes, 0)
  _same(from_path, from_array, 0)
  batch = detector.detect([path, arrays[1]])
  assert len(batch) == 2
  _same(batch[0], from_path)
  _same(batch[1], detector.detect(arrays[1]))
  assert detector.detect([]) == []


def test_run_directory_reads_its_own_config_and_best_checkpoint(run, tmp_path):
  """Another checkpoint in checkpoints/ (newer) does not win over best/; the config comes from config.json."""
  detector = ssd_tf.load(run["workdir"])
  assert detector.label_map.entries == run["label_map"].entries
  config = run_dir.RunDir(run["workdir"]).load_config()
  assert config.model.image_size == 64 and config.postprocess.score_threshold == 0.05
  assert run_dir.RunDir(run["workdir"]).checkpoint().endswith(os.path.join("best", "ckpt-1"))


def _jpeg(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "JPEG", quality=90)
  return buffer.getvalue()


def _file(tmp_path, name, content):
  path = tmp_path / name
  path.write_bytes(content)
  return path


def _assert_one_line(excinfo, error_class, fragment):
  """An error of exactly ``error_class`` on one line naming the input, with no TensorFlow internals."""
  message = str(excinfo.value)
  assert type(excinfo.value) is error_class, (type(excinfo.value), message)
  assert "\n" not in message and fragment in message, message
  for internal in ("node", "Graph execution", "{{", "Traceback"):
    assert internal not in message, message


_GOOD = _image(6, 40, 50)
_TRUNCATED_JPEG = _jpeg(_GOOD)[:len(_jpeg(_GOOD)) // 2]
_TRUNCATED_PNG = _png(_GOOD)[:len(_png(_GOOD)) // 2]
BAD_IMAGES = {  # id: (tmp_path -> the input, the exception class, what the message names)
    "missing_file": (lambda t: str(t / "missing.jpg"), FileNotFoundError, "missing.jpg: No such file or directory"),
    "empty_file": (lambda t: _file(t, "empty.jpg", b""), ValueError, "empty.jpg: empty (0 bytes), not an image"),
    "empty_bytes": (lambda t: b"", ValueError, "empty (0 bytes), not an image"),
    "truncated_jpeg": (lambda t: _TRUNCATED_JPEG, ValueError, "truncated or corrupt image (jpeg::Uncompress failed"),
    "truncated_jpeg_file": (lambda t: _file(t, "cut.jpg", _TRUNCATED_JPEG), ValueError,
                            "cut.jpg: truncated or corrupt image"),
    "truncated_jpeg_header": (lambda t: _TRUNCATED_JPEG[:60], ValueError,
                              "truncated or corrupt image (Invalid JPEG data"),
    "truncated_png": (lambda t: _TRUNCATED_PNG, ValueError, "truncated or corrupt image (Invalid PNG data"),
    "truncated_png_file": (lambda t: _file(t, "cut.png", _TRUNCATED_PNG), ValueError,
                           "cut.png: truncated or corrupt image"),
    "not_an_image": (lambda t: b"GIMP brushes and notes", ValueError, "not a JPEG, PNG, GIF or BMP image"),
    "oversized": (lambda t: test_images.png_header(16000, 16000), ValueError,
                  "the image declares 16000 x 16000 pixels, over the limit"),
    "directory": (lambda t: t, IsADirectoryError, ": Is a directory"),
    "empty_array": (lambda t: np.zeros((0, 0, 3), np.uint8), ValueError, "with pixels, got uint8 [0, 0, 3]"),
    "zero_rows": (lambda t: np.zeros((0, 7, 3), np.uint8), ValueError, "got uint8 [0, 7, 3]"),
    "float": (lambda t: _GOOD.astype(np.float32), ValueError, "uint8 [H, W, 3] RGB with pixels, got float32 [40, 50, 3]"),
    "uint16": (lambda t: _GOOD.astype(np.uint16), ValueError, "got uint16 [40, 50, 3]"),
    "grey": (lambda t: _GOOD[..., 0], ValueError, "got uint8 [40, 50]"),
    "rgba": (lambda t: np.zeros((40, 50, 4), np.uint8), ValueError, "got uint8 [40, 50, 4]"),
    "batch_array": (lambda t: _GOOD[None], ValueError, "got uint8 [1, 40, 50, 3]"),
    "int": (lambda t: 7, ValueError, "an image is a file path, encoded bytes or a uint8 [H, W, 3] RGB array, got int"),
    "none": (lambda t: None, ValueError, "got NoneType"),
}


@pytest.fixture(scope="module")
def detectors(run):
  return {"run_dir": ssd_tf.load(run["workdir"]), "saved_model": ssd_tf.load(run["saved_model"])}


@pytest.mark.parametrize("source", ["run_dir", "saved_model"])
@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_a_bad_image_is_one_line_naming_it(detectors, source, case, tmp_path):
  make, error_class, fragment = BAD_IMAGES[case]
  with pytest.raises(error_class) as excinfo:
    detectors[source].detect(make(tmp_path))
  _assert_one_line(excinfo, error_class, fragment)


@pytest.mark.parametrize("source", ["run_dir", "saved_model"])
@pytest.mark.parametrize("case, fragment", [
    ("missing_file", "image 3 of the list ({bad}): No such file or directory"),
    ("truncated_jpeg", "image 3 of the list: truncated or corrupt image (jpeg::Uncompress failed"),
    ("truncated_png_file", "image 3 of the list ({bad}): truncated or corrupt image (Invalid PNG data"),
    ("oversized", "image 3 of the list declares 16000 x 16000 pixels, over the limit"),
    ("grey", "image 3 of the list: an image array must be uint8 [H, W, 3] RGB with pixels, got uint8 [40, 50]"),
    ("none", "image 3 of the list: an image is a file path, encoded bytes or a uint8 [H, W, 3] RGB array"),
])
def test_a_bad_image_in_a_list_is_named_by_its_index(detectors, source, case, fragment, tmp_path):
  """Good images before and after it: the index is the bad one's, also when TensorFlow refuses the
  batch (a truncated file or an oversized image passes the checks before it)."""
  make, error_class, _ = BAD_IMAGES[case]
  bad = make(tmp_path)
  with pytest.raises(error_class) as excinfo:
    detectors[source].detect([_png(_GOOD), _GOOD, _jpeg(_GOOD), bad, _GOOD])
  _assert_one_line(excinfo, error_class, fragment.format(bad=bad))


def _run_copy(run, tmp_path):
  return pathlib.Path(shutil.copytree(run["workdir"], tmp_path / "run", ignore=shutil.ignore_patterns("export")))


def _truncated_saved_model(run, tmp_path):
  folder = pathlib.Path(shutil.copytree(run["saved_model"], tmp_path / "saved_model"))
  graph = (folder / "saved_model.pb").read_bytes()
  (folder / "saved_model.pb").write_bytes(graph[:len(graph) // 2])
  return folder


def _corrupt_config(run, tmp_path):
  workdir = _run_copy(run, tmp_path)
  (workdir / "config.json").write_text('{"model": {"backbone": ')
  return workdir


def _without_checkpoints(run, tmp_path):
  workdir = _run_copy(run, tmp_path)
  shutil.rmtree(workdir / "best")
  return workdir


BAD_LOADS = {  # id: ((run, tmp_path) -> the path, the exception class, what the message says)
    "missing": (lambda r, t: t / "nothing", FileNotFoundError, "nothing: no such run directory or SavedModel"),
    "empty_directory": (lambda r, t: t, FileNotFoundError,
                        "is neither a run directory (no config.json) nor a SavedModel (no saved_model.pb)"),
    "a_file": (lambda r, t: _file(t, "model.h5", b"\x89HDF"), NotADirectoryError,
               "model.h5 is a file: give a run directory or an exported SavedModel directory"),
    "truncated_saved_model": (_truncated_saved_model, ValueError,
                              "saved_model: not a loadable SavedModel, truncated or incomplete"),
    "corrupt_config": (_corrupt_config, ValueError, "config.json: not a valid config.json"),
    "no_checkpoints": (_without_checkpoints, FileNotFoundError, "no checkpoint in "),
}


@pytest.mark.parametrize("case", list(BAD_LOADS))
def test_load_of_a_bad_path_is_one_line_naming_it(run, case, tmp_path):
  make, error_class, fragment = BAD_LOADS[case]
  path = make(run, tmp_path)
  with pytest.raises(error_class) as excinfo:
    ssd_tf.load(path)
  _assert_one_line(excinfo, error_class, fragment)
  assert str(path) in str(excinfo.value)


def test_old_field_names_in_a_saved_config_still_load(run, tmp_path, caplog):
  workdir = tmp_path / "old_run"
  workdir.mkdir()
  config = json.loads((run["workdir"] / "config.json").read_text())
  config["anchors"]["steps"] = config["anchors"].pop("strides")
  config["data"]["synthetic"]["image_size"] = config["data"]["synthetic"].pop("side_range")
  (workdir / "config.json").write_text(json.dumps(config))
  with caplog.at_level("WARNING"):
    loaded = run_dir.RunDir(workdir).load_config()
  assert list(loaded.data.synthetic.side_range) == [256, 320]  # the value saved under the old name
  assert "steps" not in loaded.anchors and list(loaded.anchors.strides) == []
  assert any("anchors.steps is deprecated, renamed anchors.strides" in r.getMessage() for r in caplog.records)


def _readme_snippet():
  """The README's Python API snippet, as written."""
  text = (REPO / "README.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  snippets = [b for b in blocks if "ssd_tf.load(" in b]
  assert len(snippets) == 1, "the README shows one ssd_tf.load snippet"
  return snippets[0]


def test_readme_snippet_runs_as_written(run, tmp_path, monkeypatch):
  """In a folder with runs/quickstart (this run) and photo.jpg, the README's snippet prints the detections."""
  (tmp_path / "runs").mkdir()
  os.symlink(run["workdir"], tmp_path / "runs" / "quickstart")
  Image.fromarray(_image(4, 120, 160)).save(tmp_path / "photo.jpg", quality=95)
  monkeypatch.chdir(tmp_path)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    exec(compile(_readme_snippet(), "README.md", "exec"), {})  # pylint: disable=exec-used
  lines = printed.getvalue().splitlines()
  expected = ssd_tf.load(run["workdir"]).detect(str(tmp_path / "photo.jpg"), min_score=0.3)
  assert len(lines) == len(expected) > 0
  for line, d in zip(lines, expected):
    assert line.startswith(f"{d.name} {d.category_id} {d.score}")


@pytest.mark.e2e
def test_pip_installed_package_runs_the_readme_snippet_from_another_folder(run, tmp_path):
  """pip builds and installs the package; the README snippet runs on it in a fresh process, away from
  the checkout, and prints what the in-process API finds."""
  wheels, site, folder = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
  def pip(*args):
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

  source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info next to pyproject.toml
  shutil.copytree(REPO / "ssd_tf", source / "ssd_tf", ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, source / name)
  pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source))
  wheel, = wheels.glob("ssd_tf-*.whl")
  pip("install", "--no-deps", "--target", str(site), str(wheel))
  (folder / "runs").mkdir(parents=True)
  os.symlink(run["workdir"], folder / "runs" / "quickstart")
  Image.fromarray(_image(5, 120, 160)).save(folder / "photo.jpg", quality=95)
  script = "import ssd_tf; print(ssd_tf.__file__)\n" + _readme_snippet()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
  result = subprocess.run([sys.executable, "-c", script], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  module_file, *lines = result.stdout.splitlines()
  assert pathlib.Path(module_file).parent == site / "ssd_tf"
  expected = ssd_tf.load(run["workdir"]).detect(str(folder / "photo.jpg"), min_score=0.3)
  assert len(lines) == len(expected) > 0
  for line, d in zip(lines, expected):
    assert line.startswith(f"{d.name} {d.category_id} {d.score}")
