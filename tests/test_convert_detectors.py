"""torchvision's SSD300-VGG16 and SSDLite320-MobileNetV3-Large and NVIDIA's SSD300-ResNet50 converted from seeded weights give the
source framework's default boxes, raw outputs and detections (golden files from tests/golden/make_golden.py)."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import golden_sources
from ssd_tf.convert import detectors
from ssd_tf.export import export_saved_model

YXYX_FROM_XYXY = [1, 0, 3, 2]
OFFSETS_FROM_XY_ORDER = [1, 0, 3, 2]  # ssd_tf's (dy, dx, dh, dw) from (dx, dy, dw, dh)


@pytest.fixture(scope="module", params=sorted(golden_sources.SOURCES))
def source(request, coco_tiny_dir):
  del coco_tiny_dir  # torchvision's golden images come from the COCO sample
  return golden_sources.Source(request.param)


def test_default_boxes_are_the_sources(source):
  if source.framework == "torchvision":
    cx, cy, w, h = source.arrays["default_boxes_cxcywh"].T
  else:
    cx, cy, w, h = source.arrays["default_boxes_xywh"][source.order].T
  expected = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)
  np.testing.assert_allclose(source.ssd.default_boxes, expected, atol=1e-6)


def test_inputs_are_the_sources(source):
  """The decoded, resized images: torchvision's transform samples (NVIDIA's are 300 x 300 files, unresized)."""
  pixels = source.network_inputs().numpy()
  for i, path in enumerate(source.image_files()):
    decoded = np.asarray(Image.open(path).convert("RGB"))
    if source.kind == "nvidia":
      np.testing.assert_array_equal(pixels[i], decoded)
      continue
    size = source.ssd.image_size
    chw = np.transpose(pixels[i], (2, 0, 1)).reshape(-1)[source.arrays["input_sample_index"]]
    channel = source.arrays["input_sample_index"] // (size * size)
    mean = 255.0 * np.array(source.meta["transform"]["image_mean"])
    std = 255.0 * np.array(source.meta["transform"]["image_std"])
    np.testing.assert_allclose((chw - mean[channel]) / std[channel], source.arrays["input_samples"][i],
                               atol=2e-3 / std.min())


def test_raw_outputs_are_the_sources(source):
  outputs = source.ssd(source.network_inputs())
  loc, logits = outputs["loc"].numpy(), outputs["logits"].numpy()
  a = source.arrays
  if source.framework == "torchvision":
    expected_loc = a["bbox_regression"][..., OFFSETS_FROM_XY_ORDER]
    rows, expected_logits = a["rows"], a["cls_logits_rows"]
  else:
    expected_loc = np.transpose(a["locs"], (0, 2, 1))[:, source.order][..., OFFSETS_FROM_XY_ORDER]
    position = np.argsort(source.order)  # ssd_tf row of each NVIDIA box
    rows, expected_logits = position[a["rows"]], np.transpose(a["confs_rows"], (0, 2, 1))
  # SSDLite's random-weight MobileNet amplifies the resize's float rounding (inputs equal within 2e-3 of a
  # pixel) to 1.2e-3 of the largest output; on an unresized input it is torchvision's own rounding (below).
  tolerance = 5e-3 if source.kind == "torchvision_ssdlite" else 1e-4
  np.testing.assert_allclose(loc, expected_loc, atol=tolerance * np.abs(expected_loc).max())
  np.testing.assert_allclose(logits[:, rows], expected_logits, atol=tolerance * np.abs(expected_logits).max())


def test_ssdlite_raw_outputs_on_an_unresized_input_differ_from_float64_no_more_than_torchvisions():
  """The 320 x 320 crop torchvision does not resize: ssd_tf's float32 outputs are as close to torchvision's
  float64 outputs as torchvision's own float32 outputs are, within a factor 3 (measured: loc 6.5e-4 of the
  largest value, torchvision 3.5e-4; a wrong layer would be off by the order of the values)."""
  source = golden_sources.Source("torchvision_ssdlite")
  a = source.arrays
  outputs = source.ssd(a["crop"][None].astype(np.float32))
  for ours, name in ((outputs["loc"].numpy(), "crop_bbox_regression"),
                     (outputs["logits"].numpy()[:, a["rows"]], "crop_cls_logits_rows")):
    exact = a[f"{name}_float64"]
    if name == "crop_bbox_regression":
      ours = ours[..., OFFSETS_FROM_XY_ORDER]
    scale = np.abs(exact).max()
    torchvision_error = np.abs(a[name] - exact).max() / scale
    ssd_tf_error = np.abs(ours - exact).max() / scale
    assert 1e-6 < torchvision_error < 1e-3 and ssd_tf_error < 3 * torchvision_error, (name, ssd_tf_error,
                                                                                       torchvision_error)


def test_detections_are_the_sources_in_process(source):
  detections = source.ssd.detect(source.network_inputs())
  for i, path in enumerate(source.image_files()):
    width, height = Image.open(path).size
    n = int(detections["num_detections"][i])
    boxes = detections["boxes"][i, :n].numpy()[:, YXYX_FROM_XYXY] * [width, height, width, height]
    category_ids = source.label_map.category_ids(detections["labels"][i, :n].numpy())
    golden_sources.assert_same_detections(boxes, detections["scores"][i, :n].numpy(), category_ids, source.golden_detections(i),
                            (width, height), source.config.postprocess.score_threshold, **source.tolerances)


@pytest.mark.e2e
def test_detections_are_the_sources_through_the_saved_model_from_jpeg_bytes(source, tmp_path):
  label_map_path = tmp_path / "label_map.json"
  source.label_map.save(label_map_path)
  export_saved_model(source.ssd, source.label_map, str(label_map_path), str(tmp_path / "saved_model"))
  serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
  files = source.image_files()
  outputs = serve(images=tf.constant([path.read_bytes() for path in files]))
  for i, path in enumerate(files):
    width, height = Image.open(io.BytesIO(path.read_bytes())).size
    n = int(outputs["num_detections"][i])
    boxes = outputs["detection_boxes"][i, :n].numpy()[:, YXYX_FROM_XYXY] * [width, height, width, height]
    golden_sources.assert_same_detections(boxes, outputs["detection_scores"][i, :n].numpy(),
                            outputs["detection_classes"][i, :n].numpy().astype(np.int64),
                            source.golden_detections(i), (width, height), source.config.postprocess.score_threshold,
                            **source.tolerances)


def test_every_source_entry_is_used_and_a_misfit_is_named(source):
  tensors = golden_sources.state_dict(source.meta)
  extra = dict(tensors, **{"head.extra_layer.weight": np.zeros((3, 3), np.float32)})
  with pytest.raises(ValueError, match=r"^extra.pth: 1 unexpected entries: head.extra_layer.weight \[3, 3\]$"):
    detectors.load_detector(source.config, extra, "extra.pth")
  last = list(tensors)[-1]
  missing = {k: v for k, v in tensors.items() if k != last}
  with pytest.raises(ValueError, match=f"^missing.pth: no entry {last} "):
    detectors.load_detector(source.config, missing, "missing.pth")


def test_a_state_dict_of_another_architecture_is_named_by_its_first_entries():
  resnet = {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "fc.bias": np.zeros(1000, np.float32)}
  config = golden_sources.config("ssd300_vgg16_torchvision")
  with pytest.raises(ValueError, match=r"^resnet.pth is not a checkpoint of torchvision SSD300-VGG16 or NVIDIA "
                                       r"SSD300-ResNet50 or torchvision SSDLite320-MobileNetV3-Large \(its first entries: conv1.weight \[64, 3, 7, 7\], "
                                       r"fc.bias \[1000\]\)$"):
    detectors.load_detector(config, resnet, "resnet.pth")
