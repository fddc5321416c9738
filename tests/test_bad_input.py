"""Every entry point against every class of bad input: one `error:` line naming the input, nothing changed.

The table is entry points (the file or value each takes) x kinds of bad input (missing, empty,
truncated, corrupt, wrong kind of file; a value of the wrong type). Each case runs the real
command line and asserts: exit code 1, exactly one message line, `error: ...` naming the input,
no traceback, and that the run directory it read (a copy of a trained run) is byte-identical and
no output folder was made. The Python API's table is in test_api.py.
"""

import io
import os
import pathlib
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from benchmarks import local_service
import cli_helpers
from cli_helpers import run_cli

pytestmark = pytest.mark.e2e

FILE_KINDS = ("missing", "empty", "truncated", "corrupt", "wrong_kind")


def _jpeg():
  buffer = io.BytesIO()
  Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buffer, "JPEG")
  return buffer.getvalue()


def _spoil(good, kind):
  """The bytes of a bad copy of the file whose bytes are ``good`` (None: no file)."""
  return {"missing": None, "empty": b"", "truncated": good[:len(good) // 2],
          "corrupt": np.random.default_rng(0).integers(0, 256, len(good), np.uint8).tobytes(),
          "wrong_kind": _jpeg()}[kind]


def _write(path, data):
  if data is not None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _tree(path):
  """{relative path: bytes} of every file under path, the lock (it names its last holder) aside."""
  path = pathlib.Path(path)
  return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
          if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  return cli_helpers.trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def goods(trained, tmp_path_factory):
  """Good files to spoil: a checkpoint's two files, a .pth, a saved_model.pb, config.json, label_map.json."""
  torch = pytest.importorskip("torch")
  tmp = tmp_path_factory.mktemp("goods")
  torch.save({"conv1.weight": torch.zeros(4, 3, 7, 7)}, tmp / "w.pth")
  module = tf.Module()
  module.f = tf.function(lambda x: x + 1, input_signature=[tf.TensorSpec([None], tf.float32)])
  tf.saved_model.save(module, str(tmp / "saved_model"))
  checkpoint = trained["workdir"] / "checkpoints" / "ckpt-6"
  return {"index": pathlib.Path(f"{checkpoint}.index").read_bytes(),
          "data": pathlib.Path(f"{checkpoint}.data-00000-of-00001").read_bytes(),
          "pth": (tmp / "w.pth").read_bytes(), "saved_model.pb": (tmp / "saved_model" / "saved_model.pb").read_bytes(),
          "config.json": (trained["workdir"] / "config.json").read_bytes(),
          "label_map.json": (trained["workdir"] / "label_map.json").read_bytes()}


def _checkpoint(tmp, goods, kind, run):
  """A checkpoint prefix whose files are spoilt as ``kind`` says (truncated/corrupt: its data file)."""
  del run
  prefix = tmp / "bad" / "ckpt-6"
  if kind in ("truncated", "corrupt"):
    _write(pathlib.Path(f"{prefix}.index"), goods["index"])
    _write(pathlib.Path(f"{prefix}.data-00000-of-00001"), _spoil(goods["data"], kind))
  elif kind != "missing":
    _write(pathlib.Path(f"{prefix}.index"), _spoil(goods["index"], kind))
    _write(pathlib.Path(f"{prefix}.data-00000-of-00001"), goods["data"])
  return prefix


# Entry points: name -> (script, arguments for (run, bad input path, data), how to make the bad input).
def _cases():
  checkpoint_args = lambda r, p, d: [f"--workdir={r}", f"--checkpoint={p}"]  # pylint: disable=unnecessary-lambda-assignment
  entries = {
      "eval --checkpoint": ("main.py", lambda r, p, d: ["--mode=eval", *checkpoint_args(r, p, d)], _checkpoint),
      "predict --checkpoint": ("main.py", lambda r, p, d: ["--mode=predict", "--images=x.jpg", *checkpoint_args(r, p, d)],
                               _checkpoint),
      "export saved_model --checkpoint": ("export_savedmodel.py", checkpoint_args, _checkpoint),
      "export tflite --checkpoint": ("export_savedmodel.py", lambda r, p, d: ["--format=tflite", *checkpoint_args(r, p, d)],
                                     _checkpoint),
      "train --config.model.backbone_weights": (
          "main.py", lambda r, p, d: ["--mode=train", *cli_helpers.config_flags(d), f"--workdir={r}_new",
                                   f"--config.model.backbone_weights={p}"],
          lambda tmp, goods, kind, run: _file(tmp / "resnet18.pth", goods["pth"], kind)),
      "convert --source": (
          "main.py", lambda r, p, d: ["--mode=convert", "--config=configs/ssd300_vgg16_torchvision.py", f"--source={p}",
                                   f"--workdir={r}_new"],
          lambda tmp, goods, kind, run: _file(tmp / "ssd300.pth", goods["pth"], kind)),
      "predict --saved_model": (
          "main.py", lambda r, p, d: ["--mode=predict", "--images=x.jpg", f"--saved_model={p}"],
          lambda tmp, goods, kind, run: _saved_model(tmp, goods, kind)),
      "eval: the run's config.json": (
          "main.py", lambda r, p, d: ["--mode=eval", f"--workdir={p}"],
          lambda tmp, goods, kind, run: _run_file(tmp, goods, "config.json", kind, run)),
      "export: the run's label_map.json": (
          "export_savedmodel.py", lambda r, p, d: [f"--workdir={p}"],
          lambda tmp, goods, kind, run: _run_file(tmp, goods, "label_map.json", kind, run)),
  }
  for name, (script, args, make) in entries.items():
    for kind in FILE_KINDS:
      if kind == "missing" and name.startswith(("eval: the run's", "export: the run's")):
        continue  # a run without its config.json is no run: test_first_hour, test_cli
      # The default run: every kind for one entry point, the truncated file for most others (each case
      # is a TensorFlow start, 3-6 s); the whole table with -m slow.
      full = name == "eval --checkpoint" or (kind == "truncated" and name not in (
          "predict --checkpoint", "export saved_model --checkpoint"))  # SSD.restore, as eval --checkpoint
      yield pytest.param(script, args, make, kind, id=f"{name}:{kind}", marks=() if full else pytest.mark.slow)


def _file(path, good, kind):
  _write(path, _spoil(good, kind))
  return path


def _saved_model(tmp, goods, kind):
  folder = tmp / "saved_model"
  if kind != "missing":
    _write(folder / "saved_model.pb", _spoil(goods["saved_model.pb"], kind))
  return folder


def _run_file(tmp, goods, name, kind, run):
  """A copy of ``run`` with its ``name`` spoilt (the copy is then the input)."""
  spoilt = tmp / "spoilt_run"
  shutil.copytree(run, spoilt)
  _write(spoilt / name, _spoil(goods[name], kind))
  return spoilt


@pytest.mark.parametrize("script, args, make, kind", list(_cases()))
def test_bad_input_is_one_line_naming_it_and_changes_nothing(trained, goods, tmp_path, script, args, make, kind):
  run = tmp_path / "run"
  shutil.copytree(trained["workdir"], run)
  bad = make(tmp_path, goods, kind, run)
  before, inputs_before = _tree(run), _tree(tmp_path)
  result = run_cli(script, *args(run, bad, trained["data"]))
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = cli_helpers.message_lines(result.stderr)
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  assert str(bad) in lines[0] or os.path.basename(bad) in lines[0], lines[0]
  for banned in ("Graph execution", "{{node", "[Op:"):
    assert banned not in lines[0], lines[0]
  assert _tree(run) == before  # the run read is unchanged
  assert _tree(tmp_path) == inputs_before  # and nothing new was written anywhere here
  assert not pathlib.Path(f"{run}_new").exists()


@pytest.mark.parametrize("script, args, fragment", [
    ("main.py", ["--mode=eval", "--num_threads=two"], "--num_threads"),
    ("main.py", ["--mode=train", "--config.train.steps=many"], "--config.train.steps=many: train.steps takes an int"),
    ("main.py", ["--mode=data_service", "--data_service_role=dispatcher", "--data_service_port=port"],
     "--data_service_port"),
    ("export_savedmodel.py", ["--calibration_images=1.5"], "--calibration_images"),
    ("export_savedmodel.py", ["--format=pb"], "--format"),
], ids=["eval_threads", "train_steps", "data_service_port", "export_calibration", "export_format"])
def test_a_value_of_the_wrong_type_is_one_line_naming_the_flag(trained, tmp_path, script, args, fragment):
  run = tmp_path / "run"
  shutil.copytree(trained["workdir"], run)
  before = _tree(run)
  result = run_cli(script, *args, f"--workdir={run}", timeout=120)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = cli_helpers.message_lines(result.stderr)
  assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
  assert _tree(run) == before


def test_a_data_service_journal_folder_that_is_a_file_is_one_line(tmp_path):
  journal = tmp_path / "journal"
  journal.write_text("not a folder")
  port, = local_service.free_ports(1)
  result = run_cli("main.py", "--mode=data_service", "--data_service_role=dispatcher",
                   f"--data_service_port={port}", f"--data_service_work_dir={journal}", timeout=120)
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  lines = cli_helpers.message_lines(result.stderr)
  assert len(lines) == 1 and lines[0].startswith("error: ") and str(journal) in lines[0], lines
  assert journal.read_text() == "not a folder"
