"""ONNX and OpenVINO exports: run by ONNX Runtime and OpenVINO, they give the float32 SavedModel's detections.

In process: the small SSD of test_tflite (random weights, biased class logits) and an SSD300-ResNet18 (seeded
random weights) exported as SavedModel, model.onnx and OpenVINO IR; on real COCO photos of the sample, each
at its own size (the resize is inside every export), the runtimes' four outputs equal serving_images' (same
count and classes, boxes within 1e-3, scores within 1e-4); OpenVINO in bfloat16 is measured against it.
End to end (subprocesses): export_savedmodel.py --format=onnx|openvino of the tiny trained run, eval --model
scoring them as eval mode scored the checkpoint, and the one-line errors.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import box_ops
from ssd_tf import onnx_export
from ssd_tf import onnx_model
from ssd_tf.export import OUTPUTS
from ssd_tf.export import export_saved_model
from ssd_tf.label_map import LabelMap
from ssd_tf.ssd import SSD

import cli_helpers
from cli_helpers import run_cli
from configs import ssd300_resnet18_coco
from test_tflite import CATEGORY_IDS, _one_error_line, _pictures, _small_ssd

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
openvino = pytest.importorskip("openvino")


def _export_all(ssd, label_map, folder):
  """{"saved_model": serving_images, "onnx": OnnxModel, "openvino": OpenVinoModel (f32),
  "openvino_bf16": the same IR in bfloat16} of ``ssd`` written under ``folder``."""
  label_map_path = folder / "label_map.json"
  label_map.save(str(label_map_path))
  saved_model = export_saved_model(ssd, label_map, str(label_map_path), str(folder / "saved_model"))
  model = onnx_export.to_onnx(ssd, label_map)
  onnx_path = onnx_export.write(model, label_map, str(folder / "onnx"))
  openvino_path = onnx_export.write(onnx_export.to_openvino(model), label_map, str(folder / "openvino"))
  serving = tf.saved_model.load(saved_model).signatures["serving_images"]
  return {"saved_model": lambda images: {k: v.numpy() for k, v in serving(images=tf.constant(images)).items()},
          "onnx": onnx_model.OnnxModel(onnx_path), "openvino": onnx_model.OpenVinoModel(openvino_path),
          "openvino_bf16": onnx_model.OpenVinoModel(openvino_path, precision="bf16"),
          "paths": (onnx_path, openvino_path), "saved_model_path": saved_model}


def _label_map(category_ids):
  return LabelMap([dict(label=i + 1, category_id=c, name=f"class {c}") for i, c in enumerate(category_ids)])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  try:
    return _export_all(_small_ssd(), _label_map(CATEGORY_IDS), tmp_path_factory.mktemp("onnx_small"))
  finally:
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def ssd300(tmp_path_factory):
  """SSD300-ResNet18 for COCO's 80 classes, float32, seeded random weights, score threshold 0.05."""
  config = ssd300_resnet18_coco.get_config()
  config.train.mixed_precision = ""
  config.model.backbone_weights = ""
  config.postprocess.score_threshold = 0.05
  try:
    tf.keras.utils.set_random_seed(3)
    ssd = SSD(config)
    return _export_all(ssd, LabelMap.coco(), tmp_path_factory.mktemp("onnx_ssd300"))
  finally:
    keras.mixed_precision.set_global_policy("float32")


def _assert_same_detections(expected, actual):
  """Same count; each expected detection has its own actual one of the same class, score within 1e-4 and
  box within 1e-3 (rows whose scores tie within that may come in either order); padding rows zero."""
  n = expected["num_detections"].astype(int)
  np.testing.assert_array_equal(actual["num_detections"], n)
  for i, count in enumerate(n):
    unused = np.ones(count, bool)
    for row in range(count):
      fits = (unused & (actual["detection_classes"][i, :count] == expected["detection_classes"][i, row])
              & (np.abs(actual["detection_scores"][i, :count] - expected["detection_scores"][i, row]) <= 1e-4)
              & (np.abs(actual["detection_boxes"][i, :count] - expected["detection_boxes"][i, row]).max(-1) <= 1e-3))
      assert fits.any(), (i, row, expected["detection_scores"][i, row], expected["detection_boxes"][i, row])
      unused[np.argmax(fits)] = False
    assert not actual["detection_scores"][i, count:].any() and not actual["detection_boxes"][i, count:].any()


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
@pytest.mark.parametrize("model", ["small", "ssd300"])
def test_runtimes_give_the_saved_models_detections(request, model, runtime):
  """Real COCO photos (and a synthetic one) at their own sizes, one per call, and two of one size in a batch."""
  exports = request.getfixturevalue(model)
  pictures = _pictures()
  batches = [p[None] for p in pictures] + [np.stack([pictures[0], pictures[0][::-1]])]
  found = 0
  for batch in batches:
    expected = exports["saved_model"](batch)
    _assert_same_detections(expected, exports[runtime](batch))
    found += int(expected["num_detections"].sum())
  assert found >= 10 * len(batches)


def _reproduced(expected, actual, min_score=0.5, min_iou=0.9):
  """(how many of the expected detections scored >= min_score have an actual one of the same class with
  IoU >= min_iou, how many there are), over a batch."""
  found = total = 0
  for i in range(len(expected["num_detections"])):
    n, m = int(expected["num_detections"][i]), int(actual["num_detections"][i])
    keep = expected["detection_scores"][i, :n] >= min_score
    overlap = box_ops.iou(expected["detection_boxes"][i, :n][keep], actual["detection_boxes"][i, :m]).numpy()
    same = expected["detection_classes"][i, :n][keep][:, None] == actual["detection_classes"][i, :m][None]
    found += int(((overlap >= min_iou) & same).any(axis=1).sum())
    total += int(keep.sum())
  return found, total


def test_openvino_bfloat16_keeps_most_confident_detections(small):
  """bfloat16 rounds activations to 8 bits of mantissa: close, not equal. Of the random small SSD's confident
  detections (score >= 0.5), 66 of 80 have a same-class bf16 box at IoU >= 0.9 (Xeon with AMX, 2026-12-07);
  the trained quickstart's are in test_trained_quickstart_exports_reproduce_the_saved_model (slow)."""
  found = total = 0
  for picture in _pictures():
    f, t = _reproduced(small["saved_model"](picture[None]), small["openvino_bf16"](picture[None]))
    found, total = found + f, total + t
  print(f"OpenVINO bf16: {found} of {total} confident float32 detections reproduced")
  assert total >= 20 and found >= 0.75 * total


def test_graphs_hold_one_nms_op_and_the_documented_interface(small):
  onnx_path, openvino_path = small["paths"]
  graph = onnx.load(onnx_path).graph
  ops = [node.op_type for node in graph.node]
  assert ops.count("NonMaxSuppression") == 1 and "ScaleAndTranslate" not in ops
  assert all(node.domain in ("", "ai.onnx") for node in graph.node)  # ONNX's own ops only
  (image,) = graph.input
  assert image.name == "images" and image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
  assert [d.dim_value for d in image.type.tensor_type.shape.dim] == [0, 0, 0, 3]  # B, H, W dynamic
  assert sorted(o.name for o in graph.output) == sorted(OUTPUTS)
  ir = openvino.Core().read_model(openvino_path)
  types = [op.get_type_name() for op in ir.get_ops()]
  assert types.count("NonMaxSuppression") == 1
  assert {o.get_any_name() for o in ir.outputs} == set(OUTPUTS)
  assert all(op.get_output_element_type(0).get_type_name() == "f32" for op in ir.get_ops()
             if op.get_type_name() == "Constant" and op.get_output_element_type(0).is_real())  # float32 weights


def test_metadata_and_detect_map_back_to_labels(small):
  """The image size and label map travel inside; detect() (the Evaluator's call) returns SSD.detect's labels."""
  ssd = _small_ssd()
  try:
    pictures = np.stack([tf.image.resize(p, [ssd.image_size] * 2).numpy().round() for p in _pictures()])
    expected = {k: v.numpy() for k, v in ssd.detect(tf.constant(pictures, tf.float32)).items()}
  finally:
    keras.mixed_precision.set_global_policy("float32")
  for runtime in ("onnx", "openvino"):
    model = small[runtime]
    assert model.image_size == ssd.image_size and model.label_map.entries == _label_map(CATEGORY_IDS).entries
    actual = model.detect(pictures)
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(actual["labels"], expected["labels"])
    np.testing.assert_allclose(actual["boxes"], expected["boxes"], atol=1e-3)


def test_a_file_without_ssd_tf_metadata_is_refused(tmp_path):
  path = tmp_path / "other.onnx"
  node = onnx.helper.make_node("Identity", ["x"], ["y"])
  value = onnx.helper.make_tensor_value_info
  graph = onnx.helper.make_graph([node], "g", [value("x", onnx.TensorProto.FLOAT, [1])],
                                 [value("y", onnx.TensorProto.FLOAT, [1])])
  onnx.save(onnx.helper.make_model(graph), str(path))
  with pytest.raises(ValueError, match="is not an ssd_tf export"):
    onnx_model.load(str(path))
  with pytest.raises(FileNotFoundError, match="holds no model.onnx or model.xml"):
    onnx_model.load(str(tmp_path))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  return cli_helpers.trained_run(tmp_path_factory)


@pytest.mark.e2e
def test_export_and_eval_from_the_command_line(trained):
  """export_savedmodel.py --format=onnx and openvino beside the run; eval --model scores both as eval mode
  scored the checkpoint (the tiny run is float32)."""
  workdir, flags = trained["workdir"], cli_helpers.config_flags(trained["data"])
  for export_format, name in (("onnx", "model.onnx"), ("openvino", "model.xml")):
    result = run_cli("export_savedmodel.py", *flags, f"--workdir={workdir}", f"--format={export_format}")
    assert result.returncode == 0, result.stderr[-3000:]
    path = workdir / "export" / export_format / name
    assert str(path) in result.stdout and (path.parent / "label_map.json").is_file()
    assert not path.parent.with_name(export_format + ".partial").exists()
    result = run_cli("main.py", "--mode=eval", *flags, f"--model={path.parent}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((path.parent / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == trained["metrics"]["num_images"]
    assert metrics["AP"] == pytest.approx(trained["metrics"]["AP"], abs=0.002), export_format


@pytest.mark.e2e
def test_missing_converter_is_one_line_naming_the_pip_command(trained, tmp_path):
  """With tf2onnx unimportable (a stand-in package that raises ImportError), nothing is written."""
  (tmp_path / "tf2onnx").mkdir()
  (tmp_path / "tf2onnx" / "__init__.py").write_text("raise ImportError('No module named tf2onnx', name='tf2onnx')\n")
  result = run_cli("export_savedmodel.py", *cli_helpers.config_flags(trained["data"]),
                   f"--workdir={trained['workdir']}", "--format=onnx", f"--export_dir={tmp_path / 'out'}",
                   env={"PYTHONPATH": f"{tmp_path}:{cli_helpers.REPO}"})
  line = _one_error_line(result)
  assert "needs tf2onnx" in line and "pip install tf2onnx" in line
  assert not (tmp_path / "out").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("model, fragment", [
    ("missing/model.onnx", "missing/model.onnx not found"),
    ("model.pb", "model.pb: not an .onnx or OpenVINO .xml file"),
], ids=["missing", "unknown_kind"])
def test_eval_of_a_bad_model_path_is_one_line(model, fragment, tmp_path):
  result = run_cli("main.py", "--mode=eval", f"--config={cli_helpers.TINY_CONFIG}", f"--model={tmp_path / model}",
                   timeout=60)
  assert fragment in _one_error_line(result)


@pytest.mark.slow
def test_trained_quickstart_exports_reproduce_the_saved_model(tmp_path_factory):
  """A shortened quickstart (300 steps, 800 images) and its float32 SavedModel: on its 100 val images the ONNX
  and OpenVINO f32 exports pair every detection (benchmarks/export_agreement.py: same category, score within
  1e-4, box within 1e-3), OpenVINO bf16 reproduces >= 95% of the confident ones; eval --model scores f32 within
  0.002 AP of eval mode (the run's mixed_bfloat16 checkpoint), bf16 within 0.01."""
  run = cli_helpers.shortened_quickstart(tmp_path_factory)
  workdir, flags, saved_model = run["workdir"], run["flags"], run["saved_model"]
  checkpoint_ap = json.loads((workdir / "metrics.json").read_text())["AP"]
  for export_format in ("onnx", "openvino"):
    result = run_cli("export_savedmodel.py", *flags, f"--format={export_format}")
    assert result.returncode == 0, result.stderr[-3000:]
  for export_format, precision in (("onnx", "f32"), ("openvino", "f32"), ("openvino", "bf16")):
    folder = workdir / "export" / export_format
    result = run_cli("benchmarks/export_agreement.py", f"--saved_model={saved_model}", f"--model={folder}",
                     f"--precision={precision}", f"--images={workdir / 'synthetic' / 'val2017'}")
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    result = run_cli("main.py", "--mode=eval", flags[0], flags[2], f"--model={folder}", f"--precision={precision}")
    assert result.returncode == 0, result.stderr[-3000:]
    ap = json.loads((folder / "eval" / "metrics.json").read_text())["AP"]
    print(export_format, precision, figures, ap, checkpoint_ap)
    assert figures["images"] == 100 and figures["confident"] > 50
    if precision == "f32":
      assert figures["identical_images"] == figures["images"] and figures["paired"] == figures["detections"]
      assert ap == pytest.approx(checkpoint_ap, abs=0.002)
    else:
      assert figures["reproduced"] >= 0.95 * figures["confident"]
      assert ap == pytest.approx(checkpoint_ap, abs=0.01)


def _readme_client():
  """The README's client snippet (Serving on CPUs), with a print of what it got appended."""
  text = (cli_helpers.REPO / "README.md").read_text()
  block = text.split("A client needs nothing of ssd_tf:\n\n```python\n", 1)[1].split("```", 1)[0]
  return block + "print(json.dumps(dict(count=count.tolist(), boxes=boxes.tolist(), "\
                 "openvino=result['num_detections'].tolist())))\n"


@pytest.mark.e2e
def test_readme_client_runs_in_a_fresh_process(small, tmp_path):
  """In a folder holding runs/quickstart/export/{onnx,openvino} (the small exports) and photo.jpg, the snippet
  runs as written, with no ssd_tf on the path, and gets what the SavedModel gives for the decoded photo."""
  import shutil  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  onnx_path, openvino_path = (pathlib.Path(p) for p in small["paths"])
  export_dir = tmp_path / "runs" / "quickstart" / "export"
  shutil.copytree(onnx_path.parent, export_dir / "onnx")
  shutil.copytree(openvino_path.parent, export_dir / "openvino")
  Image.fromarray(_pictures()[0]).save(tmp_path / "photo.jpg", quality=95)
  result = subprocess.run([sys.executable, "-c", "import json\n" + _readme_client()], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={"PATH": os.environ["PATH"]})
  assert result.returncode == 0, result.stderr[-3000:]
  got = json.loads(result.stdout.strip().splitlines()[-1])
  expected = small["saved_model"](np.asarray(Image.open(tmp_path / "photo.jpg").convert("RGB"))[None])
  assert got["count"] == got["openvino"] == expected["num_detections"].tolist() and got["count"][0] > 0
  np.testing.assert_allclose(np.array(got["boxes"]), expected["detection_boxes"], atol=1e-3)


@pytest.mark.e2e
def test_export_agreement_counts_every_detection_paired(small, tmp_path):
  """benchmarks/export_agreement.py on the small exports and three photos: all paired in f32, counted alike."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  for i, picture in enumerate(_pictures()[:3]):
    Image.fromarray(picture).save(tmp_path / f"{i}.png")
  for model in small["paths"]:
    result = run_cli("benchmarks/export_agreement.py", f"--saved_model={small['saved_model_path']}",
                     f"--model={model}", f"--images={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    assert figures["images"] == 3 and figures["identical_images"] == 3
    assert figures["paired"] == figures["detections"] > 0 and figures["reproduced"] == figures["confident"]
    assert figures["max_score_difference"] <= 1e-4 and figures["max_box_difference"] <= 1e-3
