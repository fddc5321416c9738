"""Benchmarks: each script end to end at 64 px (its JSON line), FLOPs by hand, the machine's peak at tiny sizes,
the README table from sample lines.

The model benchmarks start together (one subprocess each, module fixture, one timed call
of each function: the first one, untimed, traces) so the file stays well under a minute
on 2 cores; each test then checks one script's JSON line.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import keras
import pytest

from benchmarks import harness
from benchmarks import machine
from benchmarks import peer

REPO = harness.REPO
TINY = ("--config=tests/tiny_config.py", "--config.model.num_classes=80")  # 64 px; the sample's 80 classes
COMMANDS = {
    "train": ("train_throughput.py", *TINY, "--batch_size=2", "--warmup=1", "--steps=1", "--breakdown",
              "--peak_seconds=0.2", "--steps_per_loop=1,2"),
    "inference": ("inference.py", *TINY, "--batch_size=2", "--warmup=1", "--steps=1", "--calibration_images=4"),
    "eval": ("eval_speed.py", *TINY, "--rounds=2", "--config.eval.num_images=16"),
    "runtimes": ("runtimes.py", *TINY, "--batch_size=2", "--warmup=0", "--steps=1", "--calibration_images=2",
                 "--height=48", "--width=80"),
}


def _start(script, *flags, coco_dir):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", COCO_TINY_DIR=str(coco_dir))
  return subprocess.Popen([sys.executable, os.path.join("benchmarks", script), *flags], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _json_line(name, process):
  stdout, stderr = process.communicate(timeout=600)
  assert process.returncode == 0, f"{name} failed:\n{stderr[-3000:]}"
  lines = stdout.strip().splitlines()
  assert len(lines) == 1, f"{name} printed more than its JSON line:\n{stdout[-2000:]}"
  return json.loads(lines[0])


@pytest.fixture(scope="module")
def outputs(coco_tiny_dir):
  """{name: the JSON line of COMMANDS[name]}, the scripts run side by side."""
  processes = {name: _start(*command, coco_dir=coco_tiny_dir) for name, command in COMMANDS.items()}
  return {name: _json_line(name, process) for name, process in processes.items()}


def _check_machine(record, xla):
  machine = record["machine"]
  assert machine["nproc"] == os.cpu_count() and machine["xla"] is xla
  assert machine["tensorflow"] and machine["keras"] and machine["devices"] and machine["date"]


def _check_timing(row, batch_size):
  """ms_median, ms_mean, images_per_s of harness.timing (images/s = batch / mean)."""
  assert row["ms_median"] > 0 and row["ms_mean"] > 0
  assert row["images_per_s"] == pytest.approx(1e3 * batch_size / row["ms_mean"], rel=1e-2)


@pytest.mark.e2e
def test_train_throughput(outputs):
  r = outputs["train"]
  _check_machine(r, xla=False)
  assert (r["bench"], r["backbone"], r["image_size"], r["batch_size"], r["input"]) == (
      "ssd_tf_train", "resnet18", 64, 2, "cached")
  assert r["machine"]["dtype_policy"] == "float32" and r["finite"]
  assert r["images_per_s"] == pytest.approx(2e3 / r["step_ms_mean"], rel=1e-2)
  assert r["loss_first_timed"] == r["loss_last"] > 0  # one timed step
  assert r["forward_gflop_per_image"] > 0
  assert set(r["steps_per_loop_steps_per_s"]) == {"1", "2"} and min(r["steps_per_loop_steps_per_s"].values()) > 0
  assert r["train_gflop_per_image"] == pytest.approx(3 * r["forward_gflop_per_image"], abs=2e-3)  # both rounded
  assert r["achieved_gflop_per_s"] == pytest.approx(r["train_gflop_per_image"] * r["images_per_s"], rel=1e-2)
  peak = r["peak"]
  assert r["peak_dtype"] == "float32" and "ceiling_fraction" not in r
  assert r["peak_gflop_per_s"] == max(peak["matmul_float32_gflop_per_s"], peak["conv3x3_float32_gflop_per_s"]) > 0
  assert peak["matmul_bfloat16_gflop_per_s"] > 0 and peak["conv3x3_bfloat16_gflop_per_s"] > 0
  # peak_fraction is rounded to 3 decimals: on a busy machine (a small fraction) that is more than 1%
  assert r["peak_fraction"] == pytest.approx(r["achieved_gflop_per_s"] / r["peak_gflop_per_s"], rel=1e-2, abs=5e-4)
  parts = r["breakdown_ms_median"]
  assert set(parts) == {"forward", "forward_backward", "matching", "matching_loss", "optimizer_update"}
  assert all(ms > 0 for ms in parts.values())
  assert parts["forward_backward"] > parts["forward"]
  share = parts["forward"] / r["step_ms_median"]
  assert r["breakdown_share_of_step"]["forward"] == pytest.approx(share, abs=2e-3)


@pytest.mark.e2e
def test_inference(outputs):
  r = outputs["inference"]
  _check_machine(r, xla=False)
  assert (r["bench"], r["score_threshold"], r["batch_size"]) == ("ssd_tf_inference", 0.01, 2)
  for batch_size in (1, 2):
    row = r[f"batch{batch_size}"]
    for part in ("saved_model", "detector", "preprocess", "network", "postprocess"):
      _check_timing(row[part], batch_size)
    parts_ms = sum(row[part]["ms_median"] for part in ("preprocess", "network", "postprocess"))
    assert row["postprocess_share"] == pytest.approx(row["postprocess"]["ms_median"] / parts_ms, abs=2e-3)
    # Random weights: scores ~1/81 > 0.01 for most of the 368 boxes x 80 classes.
    assert 0.1 * 368 * 80 < row["nms_candidates_per_image"] <= 368 * 80
    assert row["detections_per_image"] == 20  # tiny_config's postprocess.max_detections
  lite = r["tflite"]
  assert (lite["threads"], lite["calibration_images"]) == (2, 4)
  for name in ("float32", "float16", "int8"):
    _check_timing(lite[name]["model"], 1)
    _check_timing(lite[name]["network"], 1)
    assert lite[name]["postprocess_ms"] == pytest.approx(
        lite[name]["model"]["ms_median"] - lite[name]["network"]["ms_median"], abs=0.011)
    assert lite[name]["detections_per_image"] == 20
  assert lite["int8"]["size_mb"] < lite["float16"]["size_mb"] < lite["float32"]["size_mb"]


@pytest.mark.e2e
def test_runtimes(outputs):
  """Every runtime, precision and part at both batches (TFLite at batch 1 only), BLOCK timed calls each."""
  r = outputs["runtimes"]
  _check_machine(r, xla=False)
  assert (r["bench"], r["photo_size"], r["threads"]) == ("ssd_tf_runtimes", [48, 80], 2)
  keys = {(row["runtime"], row["precision"], row["part"], row["batch"]) for row in r["rows"]}
  expected = {(runtime, precision, part, batch)
              for runtime, precisions in (("tensorflow", ("float32", "bf16")), ("onnxruntime", ("float32",)),
                                          ("openvino", ("f32", "bf16")))
              for precision in precisions for part in ("model", "model_at_s", "network") for batch in (1, 2)}
  expected |= {("tflite", precision, part, 1) for precision in ("float32", "int8") for part in ("model_at_s", "network")}
  assert keys == expected and len(r["rows"]) == len(expected)
  for row in r["rows"]:
    _check_timing(row, row["batch"])
    base = next(b for b in r["rows"] if (b["runtime"], b["precision"], b["part"], b["batch"]) ==
                ("tensorflow", "float32", row["part"], row["batch"]))
    assert row["speedup"] == pytest.approx(base["ms_median"] / row["ms_median"], rel=0.02)


@pytest.mark.e2e
def test_eval_speed(outputs):
  r = outputs["eval"]
  _check_machine(r, xla=False)
  assert (r["bench"], r["num_images"], r["detections_per_image"]) == ("ssd_tf_eval", 16, 20)
  for row in r["rounds"]:
    assert row["wall_s"] == pytest.approx(row["predict_s"] + row["cocoeval_s"] + row["other_s"], abs=2e-3)
    assert row["images_per_s"] == pytest.approx(16 / row["wall_s"], rel=1e-2)
    assert 0 < row["pycocotools_share"] < 1
  assert r["eval_mode"]["wall_s"] == pytest.approx(r["setup_s"] + r["rounds"][0]["wall_s"], abs=2e-3)
  assert r["warm"]["images_per_s"] == r["rounds"][1]["images_per_s"]


@pytest.mark.e2e
@pytest.mark.slow
def test_data_service_reports_in_process_and_one_and_two_workers(coco_tiny_dir):
  process = _start("data_service.py", "--coco_dir", str(coco_tiny_dir), "--image_size=64", "--batch=4",
                   "--warmup=1", "--batches=2", "--rounds=1", coco_dir=coco_tiny_dir)
  r = _json_line("data_service", process)
  _check_machine(r, xla=False)
  assert (r["bench"], r["images_in_split"]) == ("ssd_tf_data_service", 80)
  assert all(r[name]["images_per_s"] > 0 for name in ("in_process", "service_1_worker", "service_2_workers"))


@pytest.mark.e2e
@pytest.mark.slow
def test_input_pipeline_reports_machine_facts(coco_tiny_dir):
  process = _start("input_pipeline.py", "--coco_dir", str(coco_tiny_dir), "--image_size=64", "--batch=4",
                   "--warmup=1", "--batches=2", "--rounds=1", coco_dir=coco_tiny_dir)
  r = _json_line("input_pipeline", process)
  _check_machine(r, xla=False)
  assert r["images_per_s"] > 0 and r["decode_resize_images_per_s"] > 0


def test_allreduce_bytes_is_the_ring_volume_of_float32_gradients():
  """Each of 8 replicas of a ring all-reduce sends 2 * 7/8 of the gradient bytes (4 per parameter)."""
  run = subprocess.run([sys.executable, "benchmarks/allreduce_bytes.py", "--configs=ssd300_resnet18_coco",
                        "--replicas=8", "--steps_per_s=10"], cwd=REPO, capture_output=True, text=True, check=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  r = json.loads(run.stdout)
  parameters = r["trainable_parameters"]
  assert r["config"] == "ssd300_resnet18_coco" and parameters > 10_000_000
  assert r["bytes_per_replica_per_step"] == 7 * parameters
  assert r["gbit_per_s_per_replica"] == pytest.approx(8 * 7 * parameters * 10 / 1e9, abs=0.01)


def test_forward_flops_by_hand():
  inputs = keras.Input((10, 10, 3))
  features = keras.layers.Conv2D(4, 3, padding="same")(inputs)
  outputs = keras.layers.Dense(5)(keras.layers.Flatten()(features))
  # Conv: 2 x (10*10*4 outputs x 3*3*3 taps) + 400 bias adds; dense: 2 x 400*5 + 5 bias adds.
  assert harness.forward_flops(keras.Model(inputs, outputs), 10) == 21600 + 400 + 4000 + 5


def test_peak_flops_match_the_profiler():
  """machine's FLOP counts against TensorFlow's profiler (harness.forward_flops) on a bias-free layer of each."""
  def flops(layer, size):
    inputs = keras.Input((size, size, 3))
    return harness.forward_flops(keras.Model(inputs, layer(inputs)), size)

  conv = keras.layers.Conv2D(7, 3, padding="same", use_bias=False)
  assert machine.conv3x3_flops(1, 5, 5, 3, 7) == flops(conv, 5) == 2 * 5 * 5 * 7 * 3 * 3 * 3  # 9450
  dense = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(11, use_bias=False)])
  assert machine.matmul_flops(1, 4 * 4 * 3, 11) == flops(dense, 4) == 2 * 48 * 11  # 1056
  assert machine.matmul_flops(2048, 2048, 2048) == 17_179_869_184  # the default matmul: 17.2 GFLOP


def test_measure_peak_at_tiny_sizes():
  peak = machine.measure_peak(seconds_budget=0.02, matmul_size=16, conv_shape=(1, 6, 6, 4, 5))
  assert (peak["matmul_shape"], peak["conv3x3_shape"]) == ([16, 16, 16], [1, 6, 6, 4, 5])
  # 2 FLOPs per multiply-add: 16^3 of the matmul; 6*6 outputs x 5 channels x 3*3*4 taps of the conv.
  by_hand = dict(matmul=2 * 16**3, conv3x3=2 * 6 * 6 * 5 * 3 * 3 * 4)
  for kernel, count in by_hand.items():
    assert peak[f"{kernel}_gflop"] == pytest.approx(count / 1e9, rel=1e-3)
    for dtype in ("float32", "bfloat16"):
      seconds, rate = peak[f"{kernel}_{dtype}_s"], peak[f"{kernel}_{dtype}_gflop_per_s"]
      assert seconds > 0 and rate > 0 and math.isfinite(rate)
      assert rate == pytest.approx(count / 1e9 / seconds, rel=2e-3)  # both to 4 significant digits
  assert machine.peak_gflop_per_s(peak, "bfloat16") == max(peak["matmul_bfloat16_gflop_per_s"],
                                                          peak["conv3x3_bfloat16_gflop_per_s"])
  assert machine.peak_gflop_per_s(peak, "float16") is None  # not measured


def test_peer_model_of_config():
  from configs import ssd300_vgg16_coco, ssd512_resnet50_coco  # pylint: disable=g-import-not-at-top
  assert peer.ssd_model(ssd300_vgg16_coco.get_config()) == "ssd300_vgg16"
  with pytest.raises(ValueError, match="no SSD for backbone resnet50 at 512 px"):
    peer.ssd_model(ssd512_resnet50_coco.get_config())


def test_depthwise_layers_are_mobilenets_and_their_flops_are_counted_by_hand(monkeypatch):
  monkeypatch.syspath_prepend(str(harness.REPO / "benchmarks"))  # the script imports its siblings, as run
  import depthwise  # pylint: disable=g-import-not-at-top
  layers = depthwise.layer_shapes(320)
  # block 1 (no expansion): depthwise 3x3 on the stem's 160 x 160 x 16, projection to 16
  assert layers[:3] == [(160, 16, 16, 3, 1, "depthwise"), (160, 16, 16, 1, 1, "pointwise"),
                        (160, 16, 64, 1, 1, "pointwise")]
  assert layers[-2:] == [(10, 480, 480, 5, 1, "depthwise"), (10, 480, 80, 1, 1, "pointwise")]
  assert len(layers) == 3 * 15 - 1
  one = [(10, 8, 8, 3, 2, "depthwise"), (5, 8, 4, 1, 1, "pointwise")]
  assert depthwise.flops(one, "depthwise", 2) == 2 * 2 * 5 * 5 * 8 * 9
  assert depthwise.flops(one, "pointwise", 2) == 2 * 2 * 5 * 5 * 4 * 8


@pytest.mark.e2e
@pytest.mark.parametrize("precision, script, model", [
    ("float32", ["torch_ssd_bench.py"], "ssd300_resnet18"),
    ("mixed_bfloat16", ["peer_autocast.py", "bfloat16"], "ssd300_resnet18"),
    ("float32", ["peer_ssdlite.py", "float32"], "ssdlite"),
    ("mixed_bfloat16", ["peer_ssdlite.py", "bfloat16"], "ssdlite")])
def test_peer_command_runs_autocast_for_mixed_precision(tmp_path, precision, script, model):
  """The peer's command line, seen by a stand-in for the peer's Python that prints its arguments as JSON;
  torchvision's SSDLite goes through benchmarks/peer_ssdlite.py (the peer's script has no SSDLite)."""
  from configs import ssd300_resnet18_coco, ssdlite320_mobilenet_v3_large_torchvision  # pylint: disable=g-import-not-at-top
  config = (ssdlite320_mobilenet_v3_large_torchvision if model == "ssdlite" else ssd300_resnet18_coco).get_config()
  fake_python = tmp_path / "python"
  fake_python.write_text(f"#!{sys.executable}\nimport json, sys\nprint('log line')\nprint(json.dumps(sys.argv[1:]))\n")
  fake_python.chmod(0o755)
  args = peer.run_ssd_bench(fake_python, config, "train", 8, 5, 2, precision=precision)
  assert [pathlib.Path(args[0]).name, *args[1:len(script)]] == script
  name, classes = ("ssd300_vgg16", "91") if model == "ssdlite" else ("ssd300_resnet18", "81")  # ssdlite: ignored
  assert args[len(script):] == ["--model", name, "--mode", "train", "--batch", "8", "--steps", "5",
                                "--warmup", "2", "--num-classes", classes, "--score-thresh", "0.01"]
  with pytest.raises(ValueError, match="precision must be one of"):
    peer.run_ssd_bench(fake_python, ssd300_resnet18_coco.get_config(), "train", 8, 5, 2, precision="float64")


MACHINE = dict(cpu="AMD EPYC", nproc=2, tensorflow="2.21.0", keras="3.15.1", date="2026-11-25T10:00:00")
PEER_VERSIONS = dict(torch="2.14.1", torchvision="0.29.1")
SAMPLE = [
    dict(bench="ssd_tf_train", backbone="resnet18", image_size=300, batch_size=8, precision="float32",
         jit_compile=True, input="cached", images_per_s=3.104, step_ms_median=2577.3, achieved_gflop_per_s=145.1,
         peak_gflop_per_s=484.2, peak_fraction=0.3, speedup_vs_peer=1.42,
         peer=dict(images_per_s=2.18, **PEER_VERSIONS), machine=MACHINE),
    # A line from before the peak was measured (benchmarks/results/2026-11-26_*): a fixed ceiling, no peak.
    dict(bench="ssd_tf_train", backbone="resnet18", image_size=300, batch_size=8, precision="mixed_bfloat16",
         jit_compile=False, input="cached", images_per_s=6.5, step_ms_median=1230.8, achieved_gflop_per_s=304.2,
         ceiling_fraction=2.173, ceiling_gflop_per_s=140.0, speedup_vs_peer=1.3,
         peer=dict(images_per_s=5.0, autocast="bfloat16", **PEER_VERSIONS), machine=MACHINE),
    dict(bench="ssd_tf_inference", backbone="resnet50", backbone_taps=["conv3", "conv4"], image_size=512,
         checkpoint=None, score_threshold=0.01, pre_nms_top_k=400, precision="float32", batch_size=8,
         batch1=dict(saved_model=dict(ms_median=410.4), detector=dict(ms_median=380.2), preprocess=dict(ms_median=6.3)),
         batch8=dict(saved_model=dict(images_per_s=2.71), detector=dict(images_per_s=2.93),
                     preprocess=dict(ms_median=50.2), network=dict(ms_median=2500.7),
                     postprocess=dict(ms_median=180.4), postprocess_share=0.066, nms_candidates_per_image=1.9e6),
         tflite=dict(threads=2, **{name: dict(model=dict(ms_median=m), network=dict(ms_median=n), postprocess_ms=m - n)
                                   for name, m, n in (("float32", 300.2, 280.1), ("float16", 350.0, 330.0),
                                                      ("int8", 102.6, 90.0))}),
         machine=dict(MACHINE, date="2026-11-26T09:00:00")),
    dict(bench="ssd_tf_eval", backbone="vgg16", image_size=300, checkpoint="runs/vgg/ckpt-1", num_images=80,
         batch_size=8, eval_mode=dict(images_per_s=4.5, pycocotools_share=0.104), machine=MACHINE),
    dict(bench="ssd_tf_data_service", image_size=300, batch=8, in_process=dict(images_per_s=211.67),
         service_1_worker=dict(images_per_s=178.24), service_2_workers=dict(images_per_s=193.31),
         service_2_workers_vs_in_process=0.91, machine=MACHINE),
]


@pytest.mark.e2e
def test_report_renders_tables(tmp_path):
  path = tmp_path / "results.jsonl"
  path.write_text("some log line\n" + "\n".join(json.dumps(r) for r in SAMPLE) + "\n")
  text = subprocess.run([sys.executable, str(REPO / "benchmarks" / "report.py"), str(path)],
                        capture_output=True, text=True, check=True).stdout
  assert text.startswith("Measured on AMD EPYC, 2 logical CPUs, TensorFlow 2.21.0, Keras 3.15.1, no GPU, "
                         "on 2026-11-25 to 2026-11-26; peer: torch 2.14.1 / torchvision 0.29.1, in the same "
                         "sittings.")
  assert ("| SSD300-ResNet18 | 8 | float32 | on | cached | 3.10 | 2577 | 145 (30% of 484) | float32 | 2.18 "
          "| 1.42x |") in text
  assert ("| SSD300-ResNet18 | 8 | mixed_bfloat16 | off | cached | 6.50 | 1231 | 304 (-) "
          "| autocast bfloat16 | 5.00 | 1.30x |") in text
  assert ("| SSD512-ResNet50 (conv3+conv4) | random | 0.01 | float32 | 8 | 410 | 2.71 | 380 | 2.93 "
          "| 50 / 2501 / 180 | 7% | 1900000 | - | - | - | - | - |") in text
  assert "| SSD300-VGG16 | checkpoint | 80 | 8 | 4.50 | 10% | - | - |" in text
  assert ("| SSD512-ResNet50 (conv3+conv4) | random | 0.01 (top 400) | 2 | 410.4 (float32) | 6.3 | 300.2 (280.1 / 20.1) "
          "| 350.0 (330.0 / 20.0) | 102.6 (90.0 / 12.6) | 0.25 |") in text
  assert "| 300 | 8 | 211.7 | 178.2 | 193.3 | 0.91x |" in text
  assert "input_pipeline" not in text  # no such records, no such table


@pytest.mark.e2e
def test_report_without_records_is_an_error(tmp_path):
  path = tmp_path / "empty.jsonl"
  path.write_text("not json\n")
  result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "report.py"), str(path)],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 1 and "no benchmark JSON lines found" in result.stderr


@pytest.mark.e2e
def test_seeds_runs_each_seed_repeatably_and_reports_the_spread(coco_tiny_dir, tmp_path):
  """Seeds 0 and 1 of the tiny config on the COCO sample; seed 0 trained again in the same root (its run
  moved away) logs the same losses, and seed 1's finished run is read back, not trained again."""
  command = [sys.executable, "benchmarks/seeds.py", "--config=tests/tiny_config.py", "--seeds=0,1",
             f"--root={tmp_path}", "--config.model.num_classes=80", f"--config.data.coco_dir={coco_tiny_dir}",
             "--config.data.eval_split=train2017", "--config.data.max_boxes=100", "--config.train.steps=3",
             "--config.eval.every_steps=0", "--config.eval.num_images=8"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

  def seeds():
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])

  first = seeds()
  (tmp_path / "seed-0").rename(tmp_path / "seed-0-first")
  again = seeds()
  assert [run["seed"] for run in first["runs"]] == [0, 1]
  curves = [{step: point["loss"] for step, point in run["curve"].items()} for run in first["runs"]]
  assert list(curves[0]) == ["1", "2", "3"] and curves[0] != curves[1]       # the seed changes the run
  assert {step: point["loss"] for step, point in again["runs"][0]["curve"].items()} == curves[0]  # repeats
  assert again["runs"][0]["seconds"] > 0 and again["runs"][1]["seconds"] is None  # seed 1 read back
  for run in first["runs"]:
    assert 0 <= run["AP50"] <= 1 and run["final_loss"] == run["curve"]["3"]["loss"] > 0
    assert all(point["grad_norm"] > 0 for point in run["curve"].values())
    assert run["curve"]["1"]["lr"] > run["curve"]["3"]["lr"] == 0  # warmup, then cosine to 0 at the end
  ap50 = sorted(run["AP50"] for run in first["runs"])
  assert first["spread"]["AP50"] == dict(min=ap50[0], median=round((ap50[0] + ap50[1]) / 2, 5), max=ap50[1],
                                         std=round((ap50[1] - ap50[0]) / 2, 4), n=2)
  assert first["config"] == "tiny" and first["machine"]["nproc"] == os.cpu_count()
  assert not list(tmp_path.glob("synthetic"))  # a config with a coco_dir writes no synthetic data
