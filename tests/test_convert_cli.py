"""main.py --mode=convert on real .pth files (written with torch from the seeded golden weights), and the
converted run directories used unchanged by ssd_tf.load, predict, eval and export_savedmodel.py."""

import json

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import cli_helpers
import golden_sources
import ssd_tf

torch = pytest.importorskip("torch")  # reading .pth files needs torch (requirements-test.txt)

pytestmark = pytest.mark.e2e
CONFIGS = {"torchvision": "configs/ssd300_vgg16_torchvision.py", "nvidia": "configs/ssd300_resnet50_nvidia.py",
           "torchvision_ssdlite": "configs/ssdlite320_mobilenet_v3_large_torchvision.py"}
FILES = {"torchvision": "ssd300_vgg16_coco-b556d3b4.pth", "nvidia": "nvidia_ssdpyt.pt",
         "torchvision_ssdlite": "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"}


def _save_pth(kind, path):
  """The seeded weights as the publisher's file holds them: torchvision a bare state dict; NVIDIA a training
  checkpoint with the state dict under "model", keys prefixed "module." (DistributedDataParallel)."""
  meta, _ = golden_sources.load(golden_sources.SOURCES[kind][0])
  tensors = {key: torch.from_numpy(value) for key, value in golden_sources.state_dict(meta).items()}
  if kind == "nvidia":
    tensors = {"epoch": 64, "iteration": 120000, "model": {f"module.{k}": v for k, v in tensors.items()}}
  torch.save(tensors, path)
  return path


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def converted(request, tmp_path_factory, coco_tiny_dir):
  """dict(kind, workdir, golden) of a run directory converted from a real .pth by main.py."""
  del coco_tiny_dir
  kind = request.param
  tmp = tmp_path_factory.mktemp(f"convert_{kind}")
  source = _save_pth(kind, tmp / FILES[kind])
  workdir = tmp / "run"
  result = cli_helpers.run_cli("main.py", "--mode=convert", f"--config={CONFIGS[kind]}", f"--source={source}",
                               f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Converted {source} into {workdir}" in result.stdout
  return dict(kind=kind, workdir=workdir, source=source, golden=golden_sources.Source(kind))


def test_run_directory_holds_checkpoint_config_and_coco_label_map(converted):
  workdir, golden = converted["workdir"], converted["golden"]
  assert (workdir / "checkpoints" / "ckpt-0.index").is_file()
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["model"]["num_classes"] == golden.config.model.num_classes
  entries = json.loads((workdir / "label_map.json").read_text())
  names = {e["category_id"]: e["name"] for e in entries}
  assert names[1] == "person" and names[90] == "toothbrush" and len(set(names)) == len(entries)
  if golden.framework == "torchvision":  # label i = column i = COCO category id i, unused ids named N/A
    assert [e["category_id"] for e in entries] == list(range(1, 91)) and names[12] == names[26] == "N/A"
  else:
    assert len(entries) == 80 and 12 not in names


def test_python_api_detects_what_the_source_detects(converted):
  golden = converted["golden"]
  detector = ssd_tf.load(str(converted["workdir"]))
  for i, path in enumerate(golden.image_files()):
    detections = detector.detect(str(path), min_score=0.0)
    size = Image.open(path).size
    golden_sources.assert_same_detections(
        np.array([d.box for d in detections]), np.array([d.score for d in detections]),
        np.array([d.category_id for d in detections]), golden.golden_detections(i), size,
        golden.config.postprocess.score_threshold, **golden.tolerances)


def test_predict_and_export_use_the_converted_run(converted, tmp_path):
  if converted["kind"] != "nvidia":
    pytest.skip("predict and export do not depend on the source (both go through the SavedModel in "
                "test_convert_detectors.py): run once")
  golden, workdir = converted["golden"], converted["workdir"]
  files = golden.image_files()
  result = cli_helpers.run_cli("main.py", "--mode=predict", f"--config={CONFIGS[converted['kind']]}",
                               f"--workdir={workdir}", f"--images={files[0]}", f"--output_dir={tmp_path / 'p'}")
  assert result.returncode == 0, result.stderr[-3000:]
  predicted = json.loads((tmp_path / "p" / "detections.json").read_text())["images"][0]["detections"]
  boxes, scores, ids = golden.golden_detections(0)
  confident = scores > 0.3  # predict's default threshold
  assert len(predicted) == confident.sum() > 0
  for d, box, score, category_id in zip(predicted, boxes[confident], scores[confident], ids[confident]):
    x, y, w, h = d["bbox"]
    assert d["category_id"] == category_id and abs(d["score"] - score) < 1e-4
    np.testing.assert_allclose([x, y, x + w, y + h], box, atol=0.02 + 1e-3 * max(Image.open(files[0]).size))

  result = cli_helpers.run_cli("export_savedmodel.py", f"--config={CONFIGS[converted['kind']]}",
                               f"--workdir={workdir}", f"--export_dir={tmp_path / 'saved_model'}")
  assert result.returncode == 0, result.stderr[-3000:]
  detector = ssd_tf.load(str(tmp_path / "saved_model"))
  served = detector.detect(files[1].read_bytes(), min_score=0.0)
  golden_sources.assert_same_detections(
      np.array([d.box for d in served]), np.array([d.score for d in served]),
      np.array([d.category_id for d in served]), golden.golden_detections(1), Image.open(files[1]).size,
      golden.config.postprocess.score_threshold)


@pytest.mark.slow
def test_eval_scores_the_converted_run_on_the_coco_sample(converted, tmp_path, coco_tiny_dir):
  """Unused (N/A) labels of torchvision's model are not scored; pycocotools runs on the real annotations."""
  if converted["kind"] != "torchvision":
    pytest.skip("eval does not depend on the source; torchvision's has the unused labels: run once")
  config = [f"--config={CONFIGS[converted['kind']]}", f"--config.data.coco_dir={coco_tiny_dir}",
            f"--config.data.tfrecord_dir={tmp_path / 'records'}"]
  result = cli_helpers.run_cli("main.py", "--mode=prepare", *config, "--splits=val2017", "--num_workers=1")
  assert result.returncode == 0, result.stderr[-3000:]
  result = cli_helpers.run_cli("main.py", "--mode=eval", *config, f"--workdir={converted['workdir']}",
                               "--config.eval.num_images=8", "--config.eval.batch_size=4")
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((converted["workdir"] / "metrics.json").read_text())
  assert 0.0 <= metrics["AP"] <= 1.0
  detections = json.loads((converted["workdir"] / "detections.json").read_text())
  ids = {d["category_id"] for d in detections}
  assert len(detections) > 100 and ids <= {i for i, _ in ssd_tf.label_map.COCO_CATEGORIES}


def test_bad_conversions_are_one_line(converted, tmp_path):
  if converted["kind"] != "nvidia":
    pytest.skip("the checks are the same for both sources: run once")
  kind = converted["kind"]
  other = "nvidia" if kind == "torchvision" else "torchvision"

  def convert(*args):
    result = cli_helpers.run_cli("main.py", "--mode=convert", *args)
    lines = cli_helpers.message_lines(result.stderr)
    assert result.returncode != 0 and len(lines) == 1, result.stderr[-2000:]
    return lines[0]

  line = convert(f"--config={CONFIGS[other]}", f"--source={converted['source']}", f"--workdir={tmp_path / 'a'}")
  assert f"--config={CONFIGS[kind]}" in line
  line = convert(f"--config={CONFIGS[kind]}", f"--source={converted['source']}", f"--workdir={converted['workdir']}")
  assert "is not empty" in line and "--overwrite" in line
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(converted["source"].read_bytes()[:100_000])
  line = convert(f"--config={CONFIGS[kind]}", f"--source={truncated}", f"--workdir={tmp_path / 'b'}")
  assert str(truncated) in line and "not a readable PyTorch checkpoint" in line
  assert not any((tmp_path / name).exists() for name in "ab")  # a failed conversion writes nothing


def test_overwrite_replaces_the_converted_checkpoint(converted):
  if converted["kind"] != "torchvision":
    pytest.skip("the same for both sources: run once")
  result = cli_helpers.run_cli("main.py", "--mode=convert", f"--config={CONFIGS[converted['kind']]}",
                               f"--source={converted['source']}", f"--workdir={converted['workdir']}", "--overwrite")
  assert result.returncode == 0, result.stderr[-3000:]
  assert tf.train.latest_checkpoint(str(converted["workdir"] / "checkpoints")).endswith("ckpt-0")
