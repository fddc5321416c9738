"""main.py end to end on a tiny synthetic dataset: errors, --helpfull, train_and_eval, eval, TensorBoard."""

import json
import re

import numpy as np
import pytest

from ssd_tf import evaluate
from ssd_tf.data import synthetic

import cli_helpers
from cli_helpers import run_cli

pytestmark = pytest.mark.e2e  # main.py / export_savedmodel.py in subprocesses

TABLE_HEADER = "| Backbone | AP@IOU 0.50:0.95 | AP@IOU 0.50 | AP@IOU 0.75 |"


@pytest.fixture(scope="session")
def data(tmp_path_factory):
  return cli_helpers.tiny_data(tmp_path_factory)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  return cli_helpers.trained_run(tmp_path_factory)


def _defined_flags(script):
  """Names of the flags a script defines (DEFINE_* calls in its source)."""
  return re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", (cli_helpers.REPO / script).read_text())


def _assert_one_error_line(result, *fragments):
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  lines = cli_helpers.message_lines(result.stderr)
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  for fragment in fragments:
    assert fragment in lines[0]


@pytest.mark.parametrize("script", ["main.py", "export_savedmodel.py"])
def test_helpfull_documents_every_flag(script):
  result = run_cli(script, "--helpfull")
  section = result.stdout.split(f"\n{cli_helpers.REPO / script}:\n", 1)[1].split("\n\n", 1)[0]
  documented = dict(re.findall(r"^  --(?:\[no\])?(\w+):\s+(\S.*)$", section, re.M))  # long enums wrap
  names = _defined_flags(script)
  assert len(names) >= 5
  assert sorted(documented) == sorted(names)
  assert all(len(text) > 10 for text in documented.values()), documented


@pytest.mark.parametrize("args, fragments", [
    (["--mode=serve"], ["--mode=serve", "train_and_eval"]),
    (["--config=configs/no_such_config.py"], ["config file not found: configs/no_such_config.py"]),
    (["--config=configs/no_such_config.py", "--config.train.steps=3"], ["config file not found"]),
    (["--config.train.stepz=3"], ["stepz", 'Did you mean "steps"']),
    (["--mode=train", "stray_argument"], ["unexpected arguments: stray_argument"]),
    (["--mode=predict", "--workdir=/tmp"], ["--mode=predict needs --images"]),
    (["--mode=train", "--workdir=/tmp", "--config.train.batch_size=0"],
     ["tiny_config.py: train.batch_size=0 must be >= 1"]),
], ids=["wrong_mode", "missing_config", "missing_config_with_override", "unknown_field", "positional",
        "predict_without_images", "out_of_range"])
def test_usage_errors_are_one_line(args, fragments):
  """Errors found before TensorFlow is imported: quick, one line, no traceback."""
  config = [] if any(a.startswith("--config=") for a in args) else [f"--config={cli_helpers.TINY_CONFIG}"]
  _assert_one_error_line(run_cli("main.py", *config, *args, timeout=60), *fragments)


def test_prepare_without_coco_dir_is_one_line():
  _assert_one_error_line(run_cli("main.py", "--mode=prepare", f"--config={cli_helpers.TINY_CONFIG}"),
                         "config.data.coco_dir")


def test_a_missing_optional_dependency_is_one_line_naming_the_pip_command(tmp_path):
  """--mode=convert where torch cannot be imported, installed or not (a torch package first on
  PYTHONPATH raises ImportError): one line saying how to install it, nothing written."""
  blocker = tmp_path / "path" / "torch"
  blocker.mkdir(parents=True)
  (blocker / "__init__.py").write_text('raise ImportError("torch cannot be imported in this test")\n')
  source = tmp_path / "ssd300_vgg16_coco.pth"
  source.write_bytes(b"not read")
  workdir = tmp_path / "run"
  result = run_cli("main.py", "--mode=convert", "--config=configs/ssd300_vgg16_torchvision.py", f"--source={source}",
                   f"--workdir={workdir}", env=dict(PYTHONPATH=str(tmp_path / "path")))
  _assert_one_error_line(result, f"reading {source} (a PyTorch .pth file) needs torch",
                         "`pip install torch --index-url https://download.pytorch.org/whl/cpu`")
  assert not workdir.exists()


def test_quickstart_never_writes_into_a_given_coco_dir(tmp_path):
  """A coco_dir set in the config is the user's data: without its annotations, stop, write nothing."""
  coco_dir = tmp_path / "my_coco"
  coco_dir.mkdir()
  result = run_cli("main.py", f"--config={cli_helpers.TINY_CONFIG}", f"--config.data.coco_dir={coco_dir}",
                   f"--workdir={tmp_path / 'run'}")
  _assert_one_error_line(result, f"config.data.coco_dir={coco_dir} has no annotations/instances_train2017.json")
  assert list(coco_dir.iterdir()) == []


def test_eval_without_checkpoints_is_one_line(data, tmp_path):
  """A run directory whose training died before its first checkpoint (label map, no checkpoints)."""
  (tmp_path / "label_map.json").write_text((data["tfrecord_dir"] / "label_map.json").read_text())
  result = run_cli("main.py", "--mode=eval", *cli_helpers.config_flags(data), f"--workdir={tmp_path}")
  _assert_one_error_line(result, f"no checkpoint in {tmp_path / 'checkpoints'}")
  assert not (tmp_path / "metrics.json").exists()


def test_eval_of_a_missing_checkpoint_is_one_line(trained):
  missing = trained["workdir"] / "checkpoints" / "ckpt-999"
  result = run_cli("main.py", "--mode=eval", *cli_helpers.config_flags(trained["data"]),
                   f"--workdir={trained['workdir']}", f"--checkpoint={missing}")
  _assert_one_error_line(result, f"checkpoint {missing} not found")


def test_train_and_eval_fills_the_workdir(trained):
  workdir = trained["workdir"]
  for name in ("config.json", "label_map.json", "metrics.json", "detections.json"):
    assert (workdir / name).is_file(), name
  assert json.loads((workdir / "config.json").read_text())["train"]["steps"] == 6
  assert (json.loads((workdir / "label_map.json").read_text())
          == json.loads((trained["data"]["tfrecord_dir"] / "label_map.json").read_text()))
  assert list((workdir / "train").glob("events.out.tfevents.*"))
  # Checkpoints at 2, 4, 6; keep_checkpoints=2 keeps the last two.
  assert sorted(p.name for p in (workdir / "checkpoints").glob("*.index")) == ["ckpt-4.index", "ckpt-6.index"]
  # best/ holds the checkpoint of the first eval reaching the best AP (evals at steps 3 and 6).
  best_files = list((workdir / "best").glob("ckpt-*.index"))
  assert len(best_files) == 1
  best_ap, best_step = (workdir / "best" / "best_ap.txt").read_text().split()
  assert best_files[0].name == f"ckpt-{best_step}.index" and int(best_step) in (3, 6)
  eval_ap = dict(cli_helpers.scalar_events(workdir / "train")["eval/AP"])
  assert float(best_ap) == pytest.approx(max(eval_ap.values()), abs=1e-6)
  assert int(best_step) == min(s for s, ap in eval_ap.items() if ap == max(eval_ap.values()))
  assert trained["metrics"]["step"] == 6
  assert "Training done at step 6" in trained["stdout"]


def test_detections_are_coco_results_of_the_original_images(trained):
  val = json.loads(trained["data"]["val_json"].read_text())
  sizes = {image["id"]: (image["width"], image["height"]) for image in val["images"]}
  category_ids = {c["id"] for c in val["categories"]}
  assert category_ids == {synthetic.category_id(label) for label in range(1, 9)}
  detections = trained["detections"]
  assert detections and len(detections) == trained["metrics"]["num_detections"]
  for d in detections:
    width, height = sizes[d["image_id"]]
    x, y, w, h = d["bbox"]
    assert d["category_id"] in category_ids
    assert 0 <= x and 0 <= y and w >= 0 and h >= 0, d
    assert x + w <= width + 1e-3 and y + h <= height + 1e-3, (d, width, height)
    assert 0 < d["score"] <= 1
  assert {d["image_id"] for d in detections} <= set(sizes)


def _check_report(stdout, metrics):
  """The last report in stdout: the AP table (header line exactly), the 12 stats, per-class AP."""
  lines = stdout.splitlines()
  start = len(lines) - 1 - lines[::-1].index(TABLE_HEADER)  # the last report printed
  numbers = " | ".join(f"{metrics[name]:.3f}" for name in ("AP", "AP50", "AP75"))
  assert lines[start + 2] == f"| resnet18 | {numbers} |"
  stat_rows = [line.split(" | ") for line in lines[start + 3:] if line.startswith("| A")]
  assert [row[0].lstrip("| ") for row in stat_rows] == list(evaluate.STAT_NAMES)
  assert [float(row[-1].rstrip(" |")) for row in stat_rows] == pytest.approx(
      [metrics[name] for name in evaluate.STAT_NAMES], abs=5e-4)
  per_class_header = lines.index("| Class | AP |", start)
  assert per_class_header > start + 3 + len(stat_rows)
  classes = [line.split(" | ")[0].lstrip("| ") for line in lines[per_class_header + 2:]
             if line.startswith("| ") and line.count("|") == 3]
  assert classes == list(metrics["per_class_AP"]) and set(classes) <= set(synthetic.CLASSES)


def test_train_and_eval_prints_the_report(trained):
  assert trained["stdout"].count(TABLE_HEADER) == 2  # evals at steps 3 and 6
  _check_report(trained["stdout"], trained["metrics"])
  assert len(trained["metrics"]["per_class_AP"]) >= 3


def test_tensorboard_has_losses_rate_speed_ap_and_drawings(trained):
  events = cli_helpers.scalar_events(trained["workdir"] / "train")
  for tag in ("loss/loss", "loss/loc_loss", "loss/cls_loss", "learning_rate", "images_per_second"):
    assert [step for step, _ in events[tag]] == [1, 2, 3, 4, 5, 6], tag
    assert all(np.isfinite(value) for _, value in events[tag]), tag
  for step, loss in events["loss/loss"]:
    parts = [dict(events[f"loss/{k}"])[step] for k in ("loc_loss", "cls_loss", "weight_decay")]
    assert loss == pytest.approx(sum(parts), rel=1e-5)
  assert max(v for _, v in events["learning_rate"]) == pytest.approx(0.01)  # peak after 2 warmup steps
  for name in evaluate.STAT_NAMES:
    assert [step for step, _ in events[f"eval/{name}"]] == [3, 6], name
  assert dict(events["eval/AP"])[6] == pytest.approx(trained["metrics"]["AP"], abs=1e-6)
  # Each image summary: width, height and num_summary_images=2 encoded images.
  assert events["eval/detections"] == [(3, 4), (6, 4)]


def test_eval_mode_reproduces_the_final_evaluation(trained):
  """With the run's own config.json (no --config) and its newest checkpoint named."""
  workdir = trained["workdir"]
  result = run_cli("main.py", "--mode=eval", f"--workdir={workdir}",
                   f"--checkpoint={workdir / 'checkpoints' / 'ckpt-6'}")
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert metrics["step"] == 6
  _check_report(result.stdout, metrics)
  for name in evaluate.STAT_NAMES:
    assert metrics[name] == pytest.approx(trained["metrics"][name], abs=1e-4), name
  # Same weights (ckpt-6 vs the model in memory at step 6) -> the same detections.
  detections = json.loads((workdir / "detections.json").read_text())
  assert len(detections) == len(trained["detections"])
  for got, want in zip(detections, trained["detections"]):
    assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
    np.testing.assert_allclose(got["bbox"], want["bbox"], atol=1e-2)
    assert got["score"] == pytest.approx(want["score"], abs=1e-5)


def test_eval_without_a_checkpoint_scores_the_one_the_run_means(trained):
  """The best-AP checkpoint (best/), as predict, export, ssd_tf.load and init_from take it."""
  workdir = trained["workdir"]
  best_step = int((workdir / "best" / "best_ap.txt").read_text().split()[1])
  result = run_cli("main.py", "--mode=eval", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((workdir / "metrics.json").read_text())["step"] == best_step


_TF_LOG_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog)", re.M)


# main.py quiet and with --verbose, export_savedmodel.py with a user's level in the default run; the
# other three with -m slow.
@pytest.mark.parametrize("script, case, flags, level", [
    ("main.py", "quiet", [], None), pytest.param("export_savedmodel.py", "quiet", [], None, marks=pytest.mark.slow),
    ("main.py", "verbose", ["--verbose"], None), ("export_savedmodel.py", "user_set_level", [], "0"),
    pytest.param("export_savedmodel.py", "verbose", ["--verbose"], None, marks=pytest.mark.slow),
    pytest.param("main.py", "user_set_level", [], "0", marks=pytest.mark.slow),
], ids=["quiet-main.py", "quiet-export_savedmodel.py", "verbose-main.py", "user_set_level-export_savedmodel.py",
        "verbose-export_savedmodel.py", "user_set_level-main.py"])
def test_tensorflow_logs_only_with_verbose_or_a_level_the_user_set(trained, tmp_path, script, case, flags, level):
  """Raw stderr (not message_lines): by default only the program's own lines, none of TensorFlow's C++
  log lines (cuInit, Grappler, startup notices) nor its Python records; with --verbose, or with
  TF_CPP_MIN_LOG_LEVEL set by the user, TensorFlow's lines are there."""
  args = [*cli_helpers.config_flags(trained["data"]), f"--workdir={trained['workdir']}", *flags]
  if script == "main.py":
    args = ["--mode=eval", *args]
  else:
    args.append(f"--export_dir={tmp_path / 'saved_model'}")
  result = run_cli(script, *args, env=dict(TF_CPP_MIN_LOG_LEVEL=level))  # None: unset, as in a user's shell
  assert result.returncode == 0, result.stderr[-3000:]
  assert bool(_TF_LOG_LINE.search(result.stderr)) == (case != "quiet"), result.stderr[-3000:]
  if case == "quiet":  # eval's progress line alone; the export prints to stdout only
    expected = ["eval: "] if script == "main.py" else []
    assert [line[:6] for line in result.stderr.splitlines()] == expected, result.stderr
  assert TABLE_HEADER in result.stdout if script == "main.py" else "SavedModel written to" in result.stdout


def test_a_run_in_use_refuses_a_second_training_and_eval_writes_aside(trained, tmp_path):
  """While another process trains in a run directory (holds its lock), train stops with one line
  naming it and eval writes to eval/step-<N>/, leaving the training's metrics and detections alone."""
  import shutil  # pylint: disable=g-import-not-at-top
  import test_run_lock  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  shutil.copytree(trained["workdir"], workdir)
  metrics_before = (workdir / "metrics.json").read_bytes()
  holder = test_run_lock.hold_in_subprocess(workdir)
  try:
    result = run_cli("main.py", "--mode=train", *cli_helpers.config_flags(trained["data"]), f"--workdir={workdir}",
                     "--config.train.steps=8")
    _assert_one_error_line(result, f"{workdir} is in use by another training (pid {holder.pid} on ")
    result = run_cli("main.py", "--mode=eval", *cli_helpers.config_flags(trained["data"]), f"--workdir={workdir}",
                     f"--checkpoint={workdir / 'checkpoints' / 'ckpt-6'}")
    assert result.returncode == 0, result.stderr[-3000:]
  finally:
    holder.kill()
    holder.wait()
  assert (workdir / "metrics.json").read_bytes() == metrics_before
  aside = json.loads((workdir / "eval" / "step-6" / "metrics.json").read_text())
  assert aside["AP"] == pytest.approx(trained["metrics"]["AP"], abs=1e-4)
  assert f"results go to {workdir / 'eval' / 'step-6'}" in result.stdout
  assert sorted(p.name for p in (workdir / "checkpoints").glob("*.index")) == ["ckpt-4.index", "ckpt-6.index"]


def test_eval_and_export_into_a_full_folder_stop_before_working(trained, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  import test_files  # pylint: disable=g-import-not-at-top
  size_kb = sum(p.stat().st_size for p in trained["workdir"].rglob("*") if p.is_file()) // 1024 + 2048
  with test_files.small_disk(tmp_path / "disk", size_kb) as disk:
    workdir = disk / "run"
    shutil.copytree(trained["workdir"], workdir)
    test_files.fill(disk)
    metrics_before = (workdir / "metrics.json").read_bytes()
    result = run_cli("main.py", "--mode=eval", *cli_helpers.config_flags(trained["data"]), f"--workdir={workdir}")
    _assert_one_error_line(result, f"cannot write to {workdir}: No space left on device")
    assert "images/s" not in result.stdout  # stopped before evaluating
    assert (workdir / "metrics.json").read_bytes() == metrics_before
    result = run_cli("export_savedmodel.py", *cli_helpers.config_flags(trained["data"]), f"--workdir={workdir}")
    _assert_one_error_line(result, f"cannot write to {workdir / 'export'}: No space left on device")


def test_eval_with_a_config_of_another_architecture_is_one_line(trained):
  result = run_cli("main.py", "--mode=eval", *cli_helpers.config_flags(trained["data"]),
                   f"--workdir={trained['workdir']}", "--config.model.image_size=96")
  _assert_one_error_line(result, f"the config does not match the run in {trained['workdir']}: model.image_size "
                                 "is 96 here but 64 in its config.json")


def test_eval_of_a_checkpoint_that_does_not_fit_is_one_line(trained, tmp_path):
  """A checkpoint of another class count: one line naming it and the first variable, no warnings after."""
  script = ("import sys; sys.path.insert(0, 'tests'); import tiny_config; from ssd_tf.ssd import SSD\n"
            "c = tiny_config.get_config(); c.model.num_classes = 5\n"
            f"print(SSD(c).checkpoint().save({str(tmp_path / 'ckpt')!r}))")
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  saved = subprocess.run([sys.executable, "-c", script], cwd=cli_helpers.REPO, capture_output=True, text=True,
                         env=dict(__import__("os").environ, PYTHONPATH=str(cli_helpers.REPO)))
  assert saved.returncode == 0, saved.stderr[-2000:]
  foreign = saved.stdout.strip().splitlines()[-1]
  result = run_cli("main.py", "--mode=eval", *cli_helpers.config_flags(trained["data"]),
                   f"--workdir={trained['workdir']}", f"--checkpoint={foreign}")
  _assert_one_error_line(result, f"checkpoint {foreign} does not fit this SSD (resnet18, 64 px, 8 classes): "
                                 "Received incompatible tensor with shape")
