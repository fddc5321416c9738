"""SavedModel export: the same detections through every loader as in process, clear errors on bad bytes.

The loaders: tf.saved_model.load (TF2, in process), and TF Serving's road, the session loader
(tests/serving_client.py in a fresh process; REST predict bodies mapped onto the signature def)
and ``saved_model_cli run`` (which loads the same way).
"""

import base64
import collections
import importlib
import io
import json
import os
import pathlib
import pickle
import subprocess
import sys

import keras
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from ssd_tf import export
from ssd_tf.label_map import LabelMap
from ssd_tf.ssd import SSD

import serving_client
import test_images
from test_learning import small_config

CATEGORY_IDS = (3, 17, 90)  # non-contiguous dataset ids: the export must map labels back
OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
CLIENT = pathlib.Path(__file__).with_name("serving_client.py")
README = pathlib.Path(__file__).parents[1] / "README.md"

# The in-process DetectionModule, the SavedModel directory and the SavedModel as tf.saved_model.load reads it.
Exported = collections.namedtuple("Exported", "module path loaded")


def _export(tmp, config, precision):
  """An untrained SSD of config built under the Keras policy `precision`, exported to tmp/saved_model."""
  config.postprocess.score_threshold = 0.2  # an untrained model: keep NMS small
  config.postprocess.max_detections = 20
  config.train.mixed_precision = "" if precision == "float32" else precision
  label_map = LabelMap([dict(label=i + 1, category_id=c, name=f"class{c}")
                        for i, c in enumerate(CATEGORY_IDS)])
  label_map_path = str(tmp / "label_map.json")
  label_map.save(label_map_path)
  try:
    tf.keras.utils.set_random_seed(1)
    ssd = SSD(config)
    # Biased logits so detections exist and differ between classes.
    for layer in ssd.network.layers:
      if layer.name.endswith("_logits"):
        kernel, bias = layer.get_weights()
        bias = np.tile(np.array([0.0, 2.0, 1.0, 1.5], np.float32), len(bias) // 4)
        layer.set_weights([kernel, bias])
    module = export.DetectionModule(ssd, label_map, label_map_path)
    path = export.export_saved_model(ssd, label_map, label_map_path, str(tmp / "saved_model"))
  finally:
    keras.mixed_precision.set_global_policy("float32")
  return Exported(module, path, tf.saved_model.load(path))


# The mixed_bfloat16 export's session-loader checks are in the slow layer (the default run stays under 10
# minutes); test_shipped_models_served_by_session_loader_and_saved_model_cli keeps a bfloat16 case by default.
@pytest.fixture(scope="module", params=("float32", pytest.param("mixed_bfloat16", marks=pytest.mark.slow)))
def exported(request, tmp_path_factory):
  return _export(tmp_path_factory.mktemp("export"), small_config(), request.param)


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "PNG")  # lossless: in-process and served inputs are identical
  return buffer.getvalue()


def _images():
  rng = np.random.default_rng(0)
  return [rng.integers(0, 255, size=shape, dtype=np.uint8)
          for shape in ((90, 120, 3), (200, 150, 3), (64, 64, 3))]


def _pixel_batch():
  """uint8 [2, H, W, 3]: an image and its upside-down copy."""
  image = _images()[0]
  return np.stack([image, image[::-1]])


def _photo():
  """photo.jpg of the README: a JPEG of a smooth picture."""
  y, x = np.mgrid[0:120, 0:160]
  picture = np.stack([y * 2, x * 1.5, (x + y) % 256], axis=-1).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(picture).save(buffer, "JPEG", quality=90)
  return buffer.getvalue()


def _b64(data):
  return {"b64": base64.b64encode(data).decode("ascii")}


def _run(args, **kwargs):
  """subprocess.run; a failure fails the test with the command's stderr."""
  result = subprocess.run(args, capture_output=True, text=True, **kwargs)
  assert result.returncode == 0, f"{args} exited with {result.returncode}:\n{result.stderr[-4000:]}"
  return result


def _reference(exported, signature, images):
  """(tf.saved_model.load outputs, in-process DetectionModule outputs) as numpy dicts."""
  loaded = exported.loaded.signatures[signature](images=tf.constant(images))
  serve = exported.module.serve_encoded if signature == "serving_default" else exported.module.serve_images
  local = serve(tf.constant(images))
  return ({key: value.numpy() for key, value in loaded.items()},
          {key: local[key].numpy() for key in OUTPUTS})


def _assert_same_detections(actual, expected, what):
  """Boxes within 1e-4; the same classes, scores and counts."""
  assert sorted(actual) == sorted(OUTPUTS), what
  np.testing.assert_allclose(actual["detection_boxes"], expected["detection_boxes"], atol=1e-4, err_msg=what)
  np.testing.assert_allclose(actual["detection_scores"], expected["detection_scores"], atol=1e-6, err_msg=what)
  for key in ("detection_classes", "num_detections"):
    np.testing.assert_array_equal(actual[key], expected[key], err_msg=f"{what}: {key}")


def _assert_served_like_in_process(exported, served_outputs, signature, images):
  """The served outputs equal tf.saved_model.load's and the in-process module's; every image has detections."""
  loaded, local = _reference(exported, signature, images)
  _assert_same_detections(served_outputs, loaded, f"{signature}: served vs tf.saved_model.load")
  _assert_same_detections(served_outputs, local, f"{signature}: served vs in process")
  assert (served_outputs["num_detections"] > 0).all()


def _serve(saved_model_dir, bodies, tmp):
  """{name: REST predict body} through the session loader in a fresh process: serving_client's results."""
  requests, results = tmp / "requests.json", tmp / "results.pkl"
  requests.write_text(json.dumps(bodies))
  _run([sys.executable, str(CLIENT), saved_model_dir, str(requests), str(results)])
  with open(results, "rb") as f:
    return pickle.load(f)


def _outputs(results, name):
  response = results["responses"][name]
  assert "outputs" in response, f"{name}: {response}"
  return response["outputs"]


def _session_bodies():
  """REST bodies of the session-loader tests: PNGs of 3 sizes, a uint8 batch, batches whose second image is
  not an image / declares 16000 x 16000 pixels."""
  return {"sizes": {"instances": [_b64(_png(a)) for a in _images()]},
          "pixels": {"signature_name": "serving_images", "instances": _pixel_batch().tolist()},
          "not_an_image": {"instances": [_b64(_png(_images()[2])), _b64(b"this is not an image")]},
          "oversized": {"instances": [_b64(_png(_images()[2])), _b64(test_images.png_header(16000, 16000))]}}


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
  return _serve(exported.path, _session_bodies(), tmp_path_factory.mktemp("served"))


@pytest.mark.e2e
def test_session_loader_serving_default_batch_of_sizes(exported, served):
  """TF Serving's loader restores every variable: bytes of 3 sizes -> the in-process detections."""
  outputs = _outputs(served, "sizes")
  _assert_served_like_in_process(exported, outputs, "serving_default", [_png(a) for a in _images()])
  assert set(np.unique(outputs["detection_classes"])) <= {0.0, *map(float, CATEGORY_IDS)}
  assert outputs["detection_boxes"].min() >= 0.0 and outputs["detection_boxes"].max() <= 1.0


@pytest.mark.e2e
def test_session_loader_serving_images(exported, served):
  _assert_served_like_in_process(exported, _outputs(served, "pixels"), "serving_images", _pixel_batch())


@pytest.mark.e2e
def test_session_loader_names_the_image_it_refuses(served):
  for body, expected in (("not_an_image", "image 1 is not a JPEG, PNG, GIF or BMP image"),
                         ("oversized", "image 1 declares 16000 x 16000 pixels, over the limit of 100000000")):
    error_class, message = served["responses"][body]["error"]
    assert error_class == "InvalidArgumentError" and expected in message, (body, message)


@pytest.mark.e2e
def test_session_loader_finds_label_map_asset(exported, served):
  assert served["assets"] == ["label_map.json"]
  with open(export.asset_label_map_path(exported.path)) as f:
    assert [e["category_id"] for e in json.load(f)] == list(CATEGORY_IDS)


# Runs README "Serving"'s commands: curl writes its -d body to bodies.jsonl instead of sending it.
_README_SHIMS = r"""set -e
python3() { "$PYTHON" "$@"; }
saved_model_cli() { "$PYTHON" -m tensorflow.python.tools.saved_model_cli "$@"; }
curl() {
  while [ $# -gt 0 ]; do
    if [ "$1" = -d ]; then
      case "$2" in @*) cat "${2#@}" ;; *) printf '%s\n' "$2" ;; esac >> bodies.jsonl
    fi
    shift
  done
}
"""


def _run_readme_serving_commands(saved_model_dir, jpeg, tmp):
  """Runs README "Serving"'s python3, saved_model_cli and curl lines in tmp, with photo.jpg and
  runs/quickstart/export/saved_model there: (their stdout, the request bodies curl was given)."""
  section = README.read_text().split("\n## Serving\n")[1].split("\n## ")[0]
  commands = [line for line in section.splitlines() if line.startswith(("python3 ", "saved_model_cli ", "curl "))]
  (tmp / "photo.jpg").write_bytes(jpeg)
  (tmp / "runs" / "quickstart" / "export").mkdir(parents=True)
  (tmp / "runs" / "quickstart" / "export" / "saved_model").symlink_to(saved_model_dir)
  stdout = _run(["bash", "-c", _README_SHIMS + "\n".join(commands)], cwd=tmp,
                env=dict(os.environ, PYTHON=sys.executable)).stdout
  return stdout, [json.loads(line) for line in (tmp / "bodies.jsonl").read_text().splitlines() if line]


@pytest.mark.e2e
def test_readme_serving_commands(exported, tmp_path):
  """README's saved_model_cli lines run; its REST bodies, mapped as TF Serving's REST API maps them, fit
  the signature defs the session loader reads and give the in-process detections."""
  jpeg = _photo()
  stdout, bodies = _run_readme_serving_commands(exported.path, jpeg, tmp_path)
  assert stdout.count("Result for output key") == 2 * len(OUTPUTS)  # both saved_model_cli run lines
  names = [body.get("signature_name", "serving_default") for body in bodies]
  assert names == ["serving_default", "serving_images"]
  results = _serve(exported.path, dict(zip(names, bodies)), tmp_path)

  signatures = {name: meta_graph_pb2.SignatureDef.FromString(s) for name, s in results["signatures"].items()}
  for name, (dtype, shape) in {"serving_default": (tf.string, [None]),
                               "serving_images": (tf.uint8, [None, None, None, 3])}.items():
    assert list(signatures[name].inputs) == ["images"]
    info = signatures[name].inputs["images"]
    assert (info.dtype, tf.TensorShape(info.tensor_shape).as_list()) == (dtype.as_datatype_enum, shape)
    assert sorted(signatures[name].outputs) == sorted(OUTPUTS)
    assert {o.dtype for o in signatures[name].outputs.values()} == {tf.float32.as_datatype_enum}
  (encoded,) = serving_client.rest_feed(bodies[0], signatures["serving_default"]).values()
  assert encoded.tolist() == [jpeg]
  (pixels,) = serving_client.rest_feed(bodies[1], signatures["serving_images"]).values()
  np.testing.assert_array_equal(pixels, np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))[None])
  _assert_served_like_in_process(exported, _outputs(results, "serving_default"), "serving_default", [jpeg])
  _assert_served_like_in_process(exported, _outputs(results, "serving_images"), "serving_images", pixels)


def _saved_model_cli_run(saved_model_dir, signature, images, tmp):
  """`saved_model_cli run` on images saved as .npy: the outputs it writes to --outdir."""
  np.save(tmp / "images.npy", images)
  _run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run", "--dir", saved_model_dir,
        "--tag_set", "serve", "--signature_def", signature, "--inputs", f"images={tmp / 'images.npy'}",
        "--outdir", str(tmp / "out")])
  return {key: np.load(tmp / "out" / f"{key}.npy") for key in OUTPUTS}


@pytest.mark.e2e
@pytest.mark.parametrize("signature", ["serving_default", "serving_images"])
def test_saved_model_cli_run(exported, signature, tmp_path):
  if signature == "serving_default":
    images = np.array([_png(a) for a in _images()], dtype=object)
  else:
    images = _pixel_batch()
  outputs = _saved_model_cli_run(exported.path, signature, images, tmp_path)
  _assert_served_like_in_process(exported, outputs, signature, images)


def test_uint8_signature_matches_bytes_signature(exported):
  image = _images()[1]
  from_bytes = exported.loaded.signatures["serving_default"](images=tf.constant([_png(image)]))
  from_pixels = exported.loaded.signatures["serving_images"](images=tf.constant(image[None]))
  np.testing.assert_allclose(from_bytes["detection_scores"].numpy(),
                             from_pixels["detection_scores"].numpy(), atol=1e-5)


def test_label_map_travels_as_asset(exported):
  asset = exported.loaded.label_map_asset
  assert asset.asset_path.numpy().decode() == export.asset_label_map_path(exported.path)


def test_refused_images_are_named_by_their_index_in_the_batch(exported):
  serve = exported.loaded.signatures["serving_default"]
  good = _png(_images()[2])
  with pytest.raises(tf.errors.InvalidArgumentError, match="image 1 is not a JPEG, PNG, GIF or BMP image"):
    serve(images=tf.constant([good, b"this is not an image"]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="image 2 declares 16000 x 16000 pixels, over the limit"):
    serve(images=tf.constant([good, good, test_images.png_header(16000, 16000)]))
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"images of shape \[1 0 5 3\] have no pixels"):
    exported.loaded.signatures["serving_images"](images=tf.zeros([1, 0, 5, 3], tf.uint8))


def test_an_empty_batch_gives_empty_outputs(exported):
  for signature, images in (("serving_default", tf.constant([], tf.string)),
                            ("serving_images", tf.zeros([0, 20, 30, 3], tf.uint8))):
    outputs = exported.loaded.signatures[signature](images=images)
    assert {k: v.shape.as_list() for k, v in outputs.items()} == {
        "detection_boxes": [0, 20, 4], "detection_scores": [0, 20], "detection_classes": [0, 20],
        "num_detections": [0]}, signature


@pytest.mark.e2e
def test_a_decompression_bomb_costs_little_memory(exported, tmp_path):
  """A valid 16000 x 16000 PNG (decoded: 768 MB of uint8, 3 GB as float32) is refused from its header:
  serving it raises the peak memory of a fresh process by less than 100 MB."""
  bomb = tmp_path / "bomb.png"
  bomb.write_bytes(test_images.png_bomb(16000, 16000))
  script = f"""
import resource, tensorflow as tf
serve = tf.saved_model.load({exported.path!r}).signatures["serving_default"]
good = open({str(tmp_path / "good.png")!r}, "rb").read()
serve(images=tf.constant([good]))  # warm: every op the bomb's call could need is loaded
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
  serve(images=tf.constant([good, open({str(bomb)!r}, "rb").read()]))
except tf.errors.InvalidArgumentError as error:
  print("refused:", "declares 16000 x 16000 pixels" in error.message)
print("peak_increase_kb:", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
  (tmp_path / "good.png").write_bytes(_png(_images()[2]))
  lines = dict(line.split(": ") for line in _run([sys.executable, "-c", script]).stdout.splitlines()
               if ": " in line)
  assert lines["refused"] == "True"
  assert int(lines["peak_increase_kb"]) < 100_000, lines


@pytest.mark.e2e
@pytest.mark.parametrize("config_name, precision", [
    pytest.param("quickstart", "float32", marks=pytest.mark.slow), ("quickstart", "mixed_bfloat16"),
    pytest.param("ssd300_resnet18_coco", "mixed_bfloat16", marks=pytest.mark.slow)])
def test_shipped_models_served_by_session_loader_and_saved_model_cli(tmp_path, config_name, precision):
  """The quickstart's SSD192 and SSD300-ResNet18 (random weights): both TF Serving roads give the
  in-process detections."""
  config = importlib.import_module(f"configs.{config_name}").get_config()
  config.model.num_classes = len(CATEGORY_IDS)
  exported = _export(tmp_path, config, precision)
  served = _serve(exported.path, _session_bodies(), tmp_path)
  _assert_served_like_in_process(exported, _outputs(served, "sizes"), "serving_default",
                                 [_png(a) for a in _images()])
  _assert_served_like_in_process(exported, _outputs(served, "pixels"), "serving_images", _pixel_batch())
  images = np.array([_png(a) for a in _images()], dtype=object)
  _assert_served_like_in_process(exported, _saved_model_cli_run(exported.path, "serving_default", images, tmp_path),
                                 "serving_default", images)


def test_mixed_precision_export_reads_weights_in_the_compute_dtype(tmp_path):
  """mixed_bfloat16: the serving graph casts no weight (every Cast's input is an activation, not a variable
  read), the kernels it reads and saves are bfloat16, BatchNorm's stay float32, and its detections equal the
  SSD's own (which casts each kernel at each call) bit for bit."""
  config = small_config()
  config.train.mixed_precision = "mixed_bfloat16"
  try:
    tf.keras.utils.set_random_seed(2)
    ssd = SSD(config)
    module = export.DetectionModule(ssd, LabelMap([dict(label=i + 1, category_id=c, name=str(c))
                                                   for i, c in enumerate(CATEGORY_IDS)]))
    size = ssd.image_size
    graph = tf.function(module.detections).get_concrete_function(tf.TensorSpec([None, size, size, 3])).graph
    batch = tf.constant(_pixel_batch())
    served = module.serve_images(batch)
    expected = tf.function(ssd.detect)(module._resize(batch))  # pylint: disable=protected-access
    label_map_path = tmp_path / "label_map.json"
    LabelMap([dict(label=i + 1, category_id=c, name=str(c)) for i, c in enumerate(CATEGORY_IDS)]).save(label_map_path)
    path = export.export_saved_model(ssd, LabelMap.load(label_map_path), str(label_map_path), str(tmp_path / "sm"))
  finally:
    keras.mixed_precision.set_global_policy("float32")
  reads = [op for op in graph.get_operations() if op.type == "ReadVariableOp"]
  casts_of_reads = [op for op in graph.get_operations() if op.type == "Cast" and op.inputs[0].op in reads]
  assert reads and not casts_of_reads
  dtypes = collections.Counter(v.dtype.name for v in module.network_variables)
  assert dtypes["bfloat16"] >= 10 and dtypes["float32"] >= 4 * 3  # BatchNorm: gamma, beta, mean, variance
  assert all(v.dtype == tf.float32 for v in module.network_variables if "moving" in v.name or "gamma" in v.name)
  saved = tf.train.load_checkpoint(os.path.join(path, "variables", "variables")).get_variable_to_dtype_map()
  saved = collections.Counter(dtype.name for dtype in saved.values() if dtype != tf.string)
  assert saved == dtypes  # the copies alone: no float32 original of a bfloat16 kernel is saved beside it
  np.testing.assert_array_equal(served["detection_boxes"].numpy(), expected["boxes"].numpy())
  np.testing.assert_array_equal(served["detection_scores"].numpy(), expected["scores"].numpy())
  assert int(served["num_detections"].numpy().sum()) == int(expected["num_detections"].numpy().sum()) > 0
