"""Shared setup of the command-line tests: a tiny prepared dataset, main.py as a subprocess, one trained run.

The dataset and the trained run are built once per pytest process (cached here), so the
session fixtures of several test files share them.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import tensorflow as tf

from ssd_tf.data import prepare
from ssd_tf.data import synthetic

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "tests" / "tiny_config.py"
TIMEOUT = 300  # seconds for any one command; a tiny run takes 5-20 s
# Lines TensorFlow's C++ runtime and absl logging write to stderr (startup notices, INFO/WARNING
# records); TF writes the startup ones before its logger is configured, whatever TF_CPP_MIN_LOG_LEVEL.
_LOG_LINE = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]|WARNING: All log messages before absl::"
                       r"|To enable the following instructions)")
_CACHE = {}


def run_cli(script, *args, timeout=TIMEOUT, cwd=REPO, env=None):
  """Runs `python <script> args` in ``cwd`` (the repository), ``env`` changing the environment (None:
  unset); returns the CompletedProcess (text output)."""
  environment = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
  return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd,
                        capture_output=True, text=True, timeout=timeout, env=environment)


def message_lines(stderr):
  """stderr without TensorFlow's and absl's log lines: what the program itself printed."""
  return [line for line in stderr.splitlines() if line.strip() and not _LOG_LINE.match(line)]


def tiny_data(tmp_path_factory):
  """Synthetic COCO-layout data (24 train / 8 val images of 96..128 px) and its TFRecords.

  Returns dict(coco_dir, tfrecord_dir, val_json) of pathlib.Paths.
  """
  if "data" not in _CACHE:
    root = tmp_path_factory.mktemp("tiny_data")
    synthetic.write_dataset(str(root / "coco"), num_train=24, num_val=8, side_range=(96, 128),
                            num_workers=1, verbose=False)
    for split in ("train2017", "val2017"):
      prepare.prepare_split(str(root / "coco"), split, str(root / "tfrecords"), num_shards=2,
                            num_workers=1, verbose=False)
    _CACHE["data"] = dict(coco_dir=root / "coco", tfrecord_dir=root / "tfrecords",
                          val_json=root / "coco" / "annotations" / "instances_val2017.json")
  return _CACHE["data"]


def config_flags(data):
  """--config flags of the tiny config reading the tiny data."""
  return [f"--config={TINY_CONFIG}", f"--config.data.tfrecord_dir={data['tfrecord_dir']}"]


def trained_run(tmp_path_factory):
  """`main.py --mode=train_and_eval` of the tiny config (6 steps, eval at 3 and 6, keep 2 checkpoints).

  Returns dict(workdir, data, stdout, stderr, metrics, detections): metrics.json and
  detections.json as that run left them (eval mode rewrites them later).
  """
  if "run" not in _CACHE:
    data = tiny_data(tmp_path_factory)
    workdir = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli("main.py", "--mode=train_and_eval", *config_flags(data), f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    _CACHE["run"] = dict(workdir=workdir, data=data, stdout=result.stdout, stderr=result.stderr,
                         metrics=json.loads((workdir / "metrics.json").read_text()),
                         detections=json.loads((workdir / "detections.json").read_text()))
  return _CACHE["run"]


def scalar_events(event_dir):
  """{tag: [(step, value)]} of every summary in event_dir's event files, files in name order.

  Images are reported as their value count (tf.summary.image stores width, height and the
  encoded images as one string tensor).
  """
  events = {}
  for path in sorted(pathlib.Path(event_dir).glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        tensor = tf.make_ndarray(value.tensor)
        number = len(tensor) if value.metadata.plugin_data.plugin_name == "images" else float(tensor)
        events.setdefault(value.tag, []).append((event.step, number))
  return events


def shortened_quickstart(tmp_path_factory):
  """`main.py` (the quickstart) shortened to 300 steps on 800 / 100 images, and its SavedModel exported in
  float32 (the quickstart runs mixed_bfloat16 on CPUs with native bfloat16; the other exports are float32).

  Returns dict(workdir, flags: --config/--workdir/--config.data.tfrecord_dir for the run, saved_model).
  """
  if "quickstart" not in _CACHE:
    root = tmp_path_factory.mktemp("shortened_quickstart")
    workdir = root / "quickstart"
    result = run_cli("main.py", f"--workdir={workdir}", "--config.train.steps=300",
                     "--config.data.synthetic.num_train=800", "--config.data.synthetic.num_val=100", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    flags = [f"--config={REPO / 'configs' / 'quickstart.py'}", f"--workdir={workdir}",
             f"--config.data.tfrecord_dir={workdir / 'tfrecords'}"]
    result = run_cli("export_savedmodel.py", *flags, "--config.train.mixed_precision=",
                     f"--export_dir={root / 'saved_model_float32'}")
    assert result.returncode == 0, result.stderr[-3000:]
    _CACHE["quickstart"] = dict(workdir=workdir, flags=flags, saved_model=root / "saved_model_float32")
  return _CACHE["quickstart"]

