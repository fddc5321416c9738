"""A user's first hour: a failed start costs nothing, a run is used from any folder without --config."""

import json
import os
import shutil

import pytest

import cli_helpers
from cli_helpers import run_cli

pytestmark = pytest.mark.e2e  # main.py / export_savedmodel.py in subprocesses


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return cli_helpers.tiny_data(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  return cli_helpers.trained_run(tmp_path_factory)


def _tree(path):
  """{relative path: bytes} of every file under path."""
  return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _one_error_line(result, fragment):
  assert result.returncode == 1, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  lines = cli_helpers.message_lines(result.stderr)
  assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


@pytest.mark.parametrize("existing", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["new_folder", "empty_folder"])
def test_a_failed_first_start_leaves_the_run_directory_as_it_found_it(data, tmp_path, existing):
  """init_from of a run without checkpoints fails after the run directory was made: nothing stays,
  and the corrected command then runs."""
  other = tmp_path / "other_run"
  other.mkdir()
  workdir = tmp_path / "run"
  if existing:
    workdir.mkdir()
  flags = [*cli_helpers.config_flags(data), f"--workdir={workdir}", "--config.train.steps=2",
           "--config.eval.every_steps=0"]
  result = run_cli("main.py", "--mode=train", *flags, f"--config.model.init_from={other}")
  _one_error_line(result, "a run directory without checkpoints")
  assert (sorted(os.listdir(workdir)) == []) if existing else not workdir.exists()
  result = run_cli("main.py", "--mode=train", *flags)
  assert result.returncode == 0, result.stderr[-3000:]
  assert {"config.json", "label_map.json", "checkpoints"} <= set(os.listdir(workdir))


@pytest.mark.slow
def test_a_loss_that_diverges_before_the_first_checkpoint_leaves_nothing(data, tmp_path):
  workdir = tmp_path / "run"
  result = run_cli("main.py", "--mode=train", *cli_helpers.config_flags(data), f"--workdir={workdir}",
                   "--config.train.steps=2", "--config.train.base_learning_rate=1e35",
                   "--config.train.warmup_steps=0")
  _one_error_line(result, "at step")
  assert not workdir.exists()


def test_a_failed_resume_changes_nothing(trained, tmp_path):
  """A resume that diverges (and one whose data is gone) leaves config.json and every file byte-identical."""
  workdir = tmp_path / "run"
  shutil.copytree(trained["workdir"], workdir)
  before = _tree(workdir)
  result = run_cli("main.py", "--mode=train", f"--workdir={workdir}", "--config.train.steps=8",
                   "--config.train.base_learning_rate=1e35", "--config.train.warmup_steps=0")
  _one_error_line(result, "training stopped, no checkpoint written")
  result = run_cli("main.py", "--mode=train", f"--workdir={workdir}", "--config.train.steps=8",
                   f"--config.data.tfrecord_dir={tmp_path / 'gone'}")
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  after = _tree(workdir)
  assert sorted(after) == sorted(before)
  assert [name for name in before if after[name] != before[name]] == [".lock"]  # it names its last holder


def test_a_moved_run_works_from_any_folder_without_config(data, tmp_path):
  """A run whose data lies inside it, moved elsewhere (the original gone) and used from a third folder:
  resume, eval, predict, export SavedModel and int8 TFLite, with nothing but --workdir."""
  original = tmp_path / "first" / "run"
  shutil.copytree(data["tfrecord_dir"], original / "tfrecords")
  result = run_cli("main.py", "--mode=train_and_eval", f"--config={cli_helpers.TINY_CONFIG}",
                   "--config.data.tfrecord_dir=run/tfrecords", "--workdir=run", "--config.train.steps=2",
                   "--config.eval.every_steps=0", cwd=tmp_path / "first")
  assert result.returncode == 0, result.stderr[-3000:]
  stored = json.loads((original / "config.json").read_text())
  assert stored["data"]["tfrecord_dir"] == "tfrecords"  # inside the run: relative to it
  moved = tmp_path / "second" / "moved_run"
  moved.parent.mkdir()
  shutil.move(str(original), str(moved))
  shutil.rmtree(tmp_path / "first")
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  workdir = os.path.relpath(moved, elsewhere)  # ../second/moved_run
  for script, *args in (
      ("main.py", "--mode=train", "--config.train.steps=3"),
      ("main.py", "--mode=eval"),
      ("main.py", "--mode=predict", f"--images={data['coco_dir'] / 'val2017'}"),
      ("export_savedmodel.py",),
      ("export_savedmodel.py", "--format=tflite", "--quantize=int8", "--calibration_images=4")):
    result = run_cli(script, *args, f"--workdir={workdir}", cwd=elsewhere)
    assert result.returncode == 0, (script, args, result.stderr[-3000:])
  assert (moved / "checkpoints" / "ckpt-3.index").is_file()  # resumed
  assert json.loads((moved / "metrics.json").read_text())["step"] == 2  # the best checkpoint (train_and_eval's)
  assert (moved / "predictions" / "detections.json").is_file()
  assert (moved / "export" / "saved_model" / "saved_model.pb").is_file()
  assert (moved / "export" / "tflite_int8" / "model.tflite").is_file()
  assert json.loads((moved / "config.json").read_text())["data"]["tfrecord_dir"] == "tfrecords"
  assert sorted(os.listdir(elsewhere)) == []  # nothing written where the user stands
