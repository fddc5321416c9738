"""The golden files of tests/golden (written by make_golden.py in the torch venv) as the TF tests use them:
seeded source state dicts, regenerated bit for bit, and the source framework's outputs."""

import importlib.util
import json
import pathlib

from golden import seeded
import numpy as np
import tensorflow as tf

from ssd_tf import defaults, images
from ssd_tf.convert import detectors

REPO = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"


def load(name):
  """(json dict, npz arrays) of tests/golden/<name>.{json,npz}."""
  with open(GOLDEN / f"{name}.json") as f:
    meta = json.load(f)
  with np.load(GOLDEN / f"{name}.npz") as arrays:
    return meta, dict(arrays)


def state_dict(meta):
  """The source's seeded state dict {name: array}; its digest must be the one the golden run used."""
  tensors = seeded.make_state_dict(meta["spec"], meta["seed"])
  assert seeded.state_dict_digest(tensors) == meta["weights_sha256"], "seeded weights differ from the golden run's"
  return tensors


def config(name):
  """configs/<name>.py's config."""
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def assert_same_detections(boxes, scores, category_ids, expected, image_size, threshold, score_atol=1e-4,
                           box_rtol=1e-3, max_detections=None):
  """Every golden detection has one of ours with its class, box within ``box_rtol`` of the image size and score
  within ``score_atol``, and back; only detections within ``score_atol`` of the score threshold (or, when the
  list is full at ``max_detections``, of its last score) may be on one side alone."""
  expected_boxes, expected_scores, expected_ids = expected
  tolerance = box_rtol * max(image_size)
  cutoff = threshold
  if max_detections is not None and len(expected_scores) == max_detections:
    cutoff = max(threshold, float(np.min(expected_scores)))
  unmatched = list(range(len(scores)))
  for box, score, category_id in zip(expected_boxes, expected_scores, expected_ids):
    candidates = [j for j in unmatched if category_ids[j] == category_id and abs(scores[j] - score) <= score_atol
                  and np.abs(boxes[j] - box).max() <= tolerance]
    if candidates:
      unmatched.remove(min(candidates, key=lambda j: abs(scores[j] - score)))
    else:
      assert score < cutoff + score_atol, f"no detection for category {category_id}, score {score}, box {box}"
  assert all(scores[j] < cutoff + score_atol for j in unmatched), [(category_ids[j], scores[j]) for j in unmatched]
  assert len(expected_scores) - len(unmatched) >= 0.95 * len(expected_scores) > 40


SOURCES = {"torchvision": ("torchvision_ssd300_vgg16", "ssd300_vgg16_torchvision"),
           "torchvision_ssdlite": ("torchvision_ssdlite320_mobilenet_v3_large",
                                   "ssdlite320_mobilenet_v3_large_torchvision"),
           "nvidia": ("nvidia_ssd300", "ssd300_resnet50_nvidia")}


class Source:
  """A converted source: its golden files, config, SSD, label map and (NVIDIA) box order."""

  def __init__(self, kind):
    golden_name, config_name = SOURCES[kind]
    self.kind = kind
    self.framework = "nvidia" if kind == "nvidia" else "torchvision"
    self.meta, self.arrays = load(golden_name)
    self.config = config(config_name)
    self.ssd, self.label_map = detectors.load_detector(self.config, state_dict(self.meta), golden_name)
    # SSDLite's seeded MobileNet turns the resize's float rounding into logits 1e-3 apart (see
    # test_raw_outputs_are_the_sources): its scores and boxes are compared that much looser (on a Zen 3
    # EPYC, AVX2 only, scores of the third image are up to 5.7e-3 off, 0.3194 for 0.3137; 2026-12-08).
    lite = kind == "torchvision_ssdlite"
    self.tolerances = dict(score_atol=1e-2 if lite else 1e-4, box_rtol=5e-3 if lite else 1e-3,
                           max_detections=self.config.postprocess.max_detections)
    # ssd_tf's box n is the source's box order[n] (NVIDIA runs anchor by anchor; torchvision as ssd_tf).
    self.order = self.arrays["torchvision_order"] if kind == "nvidia" else np.arange(len(self.ssd.default_boxes))

  def image_files(self):
    if self.kind == "nvidia":
      return [GOLDEN / i["file"] for i in self.meta["images"]]
    return [pathlib.Path(defaults.coco_sample_dir()) / i["file"] for i in self.meta["images"]]

  def network_inputs(self):
    """float32 [3, S, S, 3]: the decoded images resized as the config says (the eval pipeline's way)."""
    resized = [images.resize(images.decode(path.read_bytes()), self.ssd.image_size,
                             self.config.model.resize_antialias) for path in self.image_files()]
    return tf.stack(resized)

  def golden_detections(self, i):
    """(boxes [D, 4] pixels of the original image x1, y1, x2, y2, scores [D], category ids [D])."""
    a = self.arrays
    boxes = a[f"det{i}_boxes"] if self.framework == "torchvision" else a[f"det{i}_boxes_pixels"]
    labels = a[f"det{i}_labels"]
    return boxes, a[f"det{i}_scores"], self.label_map.category_ids(labels) if len(labels) else labels
