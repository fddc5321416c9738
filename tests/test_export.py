"""SavedModel export: signatures, same detections as in process, clear errors on bad bytes."""

import io
import json
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from ssd_tf import export
from ssd_tf.label_map import LabelMap
from ssd_tf.ssd import SSD

from test_learning import small_config

CATEGORY_IDS = (3, 17, 90)  # non-contiguous dataset ids: the export must map labels back


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("export")
  config = small_config()
  config.postprocess.score_threshold = 0.2  # an untrained model: keep NMS small
  config.postprocess.max_detections = 20
  label_map = LabelMap([dict(label=i + 1, category_id=c, name=f"class{c}")
                        for i, c in enumerate(CATEGORY_IDS)])
  label_map_path = str(tmp / "label_map.json")
  label_map.save(label_map_path)
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
  return module, path, config


def _jpeg(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, "PNG")  # lossless: in-process and served inputs are identical
  return buffer.getvalue()


def _images():
  rng = np.random.default_rng(0)
  return [rng.integers(0, 255, size=shape, dtype=np.uint8) for shape in ((90, 120, 3), (200, 150, 3))]


def test_saved_model_cli_lists_both_signatures(exported):
  _, path, _ = exported
  out = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show",
                        "--dir", path, "--all"], capture_output=True, text=True, check=True).stdout
  for name in ("serving_default", "serving_images", "detection_boxes", "detection_scores",
               "detection_classes", "num_detections"):
    assert name in out
  assert "DT_STRING" in out and "DT_UINT8" in out


def test_reloaded_model_matches_in_process(exported):
  module, path, _ = exported
  loaded = tf.saved_model.load(path)
  encoded = tf.constant([_jpeg(a) for a in _images()])
  served = loaded.signatures["serving_default"](images=encoded)
  local = module.serve_encoded(encoded)
  assert int(tf.reduce_sum(served["num_detections"])) > 0
  for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
    np.testing.assert_allclose(served[key].numpy(), local[key].numpy(), atol=1e-4, err_msg=key)
  assert set(np.unique(served["detection_classes"].numpy())) <= {0.0, *map(float, CATEGORY_IDS)}
  boxes = served["detection_boxes"].numpy()
  assert boxes.min() >= 0.0 and boxes.max() <= 1.0


def test_uint8_signature_matches_bytes_signature(exported):
  _, path, _ = exported
  loaded = tf.saved_model.load(path)
  image = _images()[1]
  from_bytes = loaded.signatures["serving_default"](images=tf.constant([_jpeg(image)]))
  from_pixels = loaded.signatures["serving_images"](images=tf.constant(image[None]))
  np.testing.assert_allclose(from_bytes["detection_scores"].numpy(),
                             from_pixels["detection_scores"].numpy(), atol=1e-5)


def test_label_map_travels_as_asset(exported):
  _, path, _ = exported
  with open(export.asset_label_map_path(path)) as f:
    entries = json.load(f)
  assert [e["category_id"] for e in entries] == list(CATEGORY_IDS)
  assert tf.saved_model.load(path).label_map_asset.asset_path.numpy().decode().endswith("label_map.json")


def test_bytes_that_are_not_an_image_raise_invalid_argument(exported):
  _, path, _ = exported
  loaded = tf.saved_model.load(path)
  with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
    loaded.signatures["serving_default"](images=tf.constant([b"this is not an image"]))
