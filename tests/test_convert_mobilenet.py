"""ssd_tf.backbones.mobilenet and ssd_tf.convert.torchvision_mobilenet against torchvision's own numbers.

tests/golden/torchvision_mobilenet_v3_large.npz holds torchvision mobilenet_v3_large's SSDLite taps (block 13's
expansion ``c4``, the last conv ``c5``) for the 160x160 COCO crop of the ResNet goldens, computed by
tests/golden/make_golden.py with its full state dict (classifier included) drawn by ``seeded.make_state_dict``.
"""

import json
import logging
import pathlib

import numpy as np
import pytest

from golden import seeded
from ssd_tf.backbones import build_backbone, mobilenet
from ssd_tf.convert import torchvision_mobilenet

GOLDEN = pathlib.Path(__file__).parent / "golden"


def _golden():
  meta = json.loads((GOLDEN / "torchvision_mobilenet_v3_large.json").read_text())
  state_dict = seeded.make_state_dict(meta["spec"], meta["seed"])
  assert seeded.state_dict_digest(state_dict) == meta["weights_sha256"], "regenerated weights differ"
  with np.load(GOLDEN / "torchvision_mobilenet_v3_large.npz") as arrays:
    return state_dict, dict(arrays)


def _assert_matches_torchvision(taps, golden):
  for tap, name in zip(taps, ("c4", "c5"), strict=True):
    expected = golden[name]
    assert tuple(tap.shape) == expected.shape
    error = np.abs(np.asarray(tap) - expected).max() / np.abs(expected).max()
    assert error < 1e-4, f"{name}: max abs difference {error:.2e} of the largest value"


def test_load_mobilenet_matches_torchvision():
  state_dict, golden = _golden()
  model = mobilenet.build_mobilenet_v3_large()
  unused = torchvision_mobilenet.load_mobilenet(model, state_dict)
  assert unused == [key for key in state_dict if key.startswith("classifier.")] and len(unused) == 4
  _assert_matches_torchvision(model(mobilenet.normalization()(golden["image"][None].astype(np.float32))), golden)


def test_architecture_is_torchvisions():
  """Every entry of torchvision's state dict but the classifier has a weight here, with its shape; the reduced tail
  halves blocks 13-15 and the last conv as torchvision's reduced_tail=True does."""
  state_dict, _ = _golden()
  full = mobilenet.build_mobilenet_v3_large()
  assert full.count_params() == sum(v.size for k, v in state_dict.items()
                                    if not k.startswith("classifier.") and not k.endswith("num_batches_tracked"))
  reduced = mobilenet.build_mobilenet_v3_large("reduced_tail")
  assert [tuple(t.shape[1:]) for t in reduced(np.zeros((1, 320, 320, 3), np.float32))] == [(20, 20, 672), (10, 10, 480)]
  assert [spec[1:3] for spec in mobilenet.block_specs("reduced_tail")[12:]] == [(672, 80), (480, 80), (480, 80)]
  assert mobilenet.make_divisible(672 // 4) == 168 and mobilenet.make_divisible(72 // 4) == 24
  assert mobilenet.make_divisible(10) == 16  # never below 90% of the value: 8 is, so one more step


def test_torch_names():
  names = {layer.name for layer in mobilenet.build_mobilenet_v3_large().layers}
  assert [torchvision_mobilenet.torch_name(n, names) for n in
          ("stem_conv", "block1_depthwise_bn", "block2_expand_conv", "block4_se_reduce", "block4_se_expand",
           "block4_project_bn", "last_conv")] == [
              "features.0.0", "features.1.block.0.1", "features.2.block.0.0", "features.4.block.2.fc1",
              "features.4.block.2.fc2", "features.4.block.3.1", "features.16.0"]


def test_a_reduced_tail_model_names_the_variant_for_the_imagenet_file():
  state_dict, _ = _golden()
  with pytest.raises(ValueError, match=r"^x.pth: its last conv has 960 channels, the model's 480: set "
                                       r"model.backbone_variant=''$"):
    torchvision_mobilenet.load_mobilenet(mobilenet.build_mobilenet_v3_large("reduced_tail"), state_dict, "x.pth")


def test_build_backbone_reads_the_torchvision_pth(tmp_path, caplog):
  torch = pytest.importorskip("torch")
  state_dict, golden = _golden()
  path = tmp_path / "mobilenet_v3_large-8738ca79.pth"
  torch.save({key: torch.from_numpy(value) for key, value in state_dict.items()}, path)
  absl_logger = logging.getLogger("absl")
  absl_logger.addHandler(caplog.handler)
  try:
    with caplog.at_level(logging.INFO, logger="absl"):
      backbone = build_backbone("mobilenet_v3_large", path)
  finally:
    absl_logger.removeHandler(caplog.handler)
  _assert_matches_torchvision(backbone.taps(golden["image"][None].astype(np.float32)), golden)
  assert f"{path}: 4 classifier entries unused" in caplog.text
  with pytest.raises(ValueError, match="not 'imagenet'"):
    build_backbone("mobilenet_v3_large", "imagenet")
