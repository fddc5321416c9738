"""ssd_tf.convert.torchvision_resnet against torchvision's own numbers.

tests/golden/torchvision_resnet{18,34,50,101}.npz hold torchvision's layer2 and layer3 outputs for one
160x160 COCO crop, computed by tests/golden/make_golden.py (torch + torchvision) with a full state dict
(layer4 and fc included) drawn by ``seeded.make_state_dict(spec, seed)``; the .json holds the spec and
seed, so these tests rebuild the same weights with NumPy alone. Writing .pth files needs torch: those
tests skip without it (CI installs a CPU torch).
"""

import json
import logging
import pathlib

import numpy as np
import pytest

from golden import seeded
from ssd_tf.backbones import build_backbone, resnet
from ssd_tf.convert import torchvision_resnet

GOLDEN = pathlib.Path(__file__).parent / "golden"
DEPTHS = (18, 34, 50, 101)


def _golden(depth):
  """torchvision resnet{depth}'s seeded state dict {name: array} and its golden arrays."""
  meta = json.loads((GOLDEN / f"torchvision_resnet{depth}.json").read_text())
  state_dict = seeded.make_state_dict(meta["spec"], meta["seed"])
  assert seeded.state_dict_digest(state_dict) == meta["weights_sha256"], "regenerated weights differ"
  with np.load(GOLDEN / f"torchvision_resnet{depth}.npz") as arrays:
    return state_dict, dict(arrays)


def _assert_matches_torchvision(taps, golden):
  for tap, name in zip(taps, ("layer2", "layer3"), strict=True):
    expected = golden[name]
    assert tuple(tap.shape) == expected.shape
    error = np.abs(np.asarray(tap) - expected).max() / np.abs(expected).max()
    assert error < 1e-4, f"{name}: max abs difference {error:.2e} of the largest value"


def _one_line(excinfo, *parts):
  message = str(excinfo.value)
  assert "\n" not in message, message
  for part in parts:
    assert part in message, message


@pytest.mark.parametrize("depth", DEPTHS)
def test_load_resnet_matches_torchvision(depth):
  state_dict, golden = _golden(depth)
  model = resnet.build_resnet(depth, taps=("conv3", "conv4"), variant="torchvision")
  unused = torchvision_resnet.load_resnet(model, state_dict, depth)
  assert unused == [key for key in state_dict if key.startswith(("layer4.", "fc."))] and "fc.bias" in unused
  images = golden["image"][None].astype(np.float32)  # RGB 0..255, the crop torchvision saw
  _assert_matches_torchvision(model(resnet.normalization(depth, "torchvision")(images)), golden)


def test_load_resnet_names_missing_unexpected_and_misshapen_entries():
  resnet18, _ = _golden(18)
  resnet34, _ = _golden(34)
  resnet50, _ = _golden(50)
  cases = [(18, resnet50, ["x.pth (as torchvision resnet18)",
                           "entry layer1.0.conv1.weight [64, 64, 1, 1], expected [64, 64, 3, 3]"]),
           (34, resnet18, ["no entry layer1.2.conv1.weight [64, 64, 3, 3]", "layer2.0.conv1.weight [128, 64, 3, 3]"]),
           (18, resnet34, ["unexpected entries: layer1.2.conv1.weight [64, 64, 3, 3], layer1.2.bn1.weight [64]",
                           "more"])]
  for depth, state_dict, parts in cases:
    with pytest.raises(ValueError) as excinfo:
      torchvision_resnet.load_resnet(resnet.build_resnet(depth, variant="torchvision"), state_dict, depth, "x.pth")
    _one_line(excinfo, *parts)
  with pytest.raises(ValueError) as excinfo:
    torchvision_resnet.load_resnet(resnet.build_resnet(50), resnet50, 50)
  _one_line(excinfo, "resnet50 is variant 'keras'", "variant='torchvision'")


def test_load_resnet_drops_num_batches_tracked_when_absent():
  """torchvision's first ImageNet files predate BatchNorm's num_batches_tracked."""
  state_dict, golden = _golden(18)
  state_dict = {key: value for key, value in state_dict.items() if not key.endswith("num_batches_tracked")}
  model = resnet.build_resnet(18, taps=("conv3", "conv4"))
  torchvision_resnet.load_resnet(model, state_dict, 18)
  _assert_matches_torchvision(model(resnet.normalization(18)(golden["image"][None].astype(np.float32))), golden)


def test_torch_names():
  assert [torchvision_resnet.torch_name(name) for name in
          ("conv1_conv", "conv1_bn", "conv2_block1_2_conv", "conv3_block1_0_conv", "conv4_block23_3_bn",
           "conv3_block1_0_bn")] == ["conv1", "bn1", "layer1.0.conv2", "layer2.0.downsample.0", "layer3.22.bn3",
                                     "layer2.0.downsample.1"]


@pytest.mark.parametrize("depth", [18, 50])
def test_build_backbone_reads_a_torchvision_pth(depth, tmp_path, caplog):
  torch = pytest.importorskip("torch")
  state_dict, golden = _golden(depth)
  path = tmp_path / f"resnet{depth}.pth"
  torch.save({key: torch.from_numpy(value) for key, value in state_dict.items()}, path)
  absl_logger = logging.getLogger("absl")  # absl may stop propagating to the root logger caplog watches
  absl_logger.addHandler(caplog.handler)
  try:
    with caplog.at_level(logging.INFO, logger="absl"):
      backbone = build_backbone(f"resnet{depth}", path, taps=("conv3", "conv4"), variant="torchvision")
  finally:
    absl_logger.removeHandler(caplog.handler)
  _assert_matches_torchvision(backbone.taps(golden["image"][None].astype(np.float32)), golden)
  fc_layer4 = [key for key in state_dict if key.startswith("layer4.")]
  assert f"{path}: {len(fc_layer4) + 2} entries unused" in caplog.text
  assert f"layer4.* ({len(fc_layer4)}), fc.* (2)" in caplog.text


def test_build_backbone_pth_errors(tmp_path):
  path = tmp_path / "resnet50.pth"
  for name, match in [("resnet50", "set model.backbone_variant='torchvision' for resnet50"),
                      ("vgg16", "vgg16 takes no PyTorch weights")]:
    with pytest.raises(ValueError) as excinfo:
      build_backbone(name, path)
    _one_line(excinfo, str(path), match)
  with pytest.raises(FileNotFoundError) as excinfo:
    build_backbone("resnet18", tmp_path / "missing.pth")
  _one_line(excinfo, "missing.pth")

  torch = pytest.importorskip("torch")
  state_dict, _ = _golden(18)
  whole = tmp_path / "whole.pth"
  torch.save({key: torch.from_numpy(value) for key, value in state_dict.items()}, whole)
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
  jpeg = tmp_path / "photo.pth"
  jpeg.write_bytes(bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9"))
  for path in (truncated, jpeg):
    with pytest.raises(ValueError) as excinfo:
      build_backbone("resnet18", path)
    _one_line(excinfo, str(path), "not a readable PyTorch checkpoint")
  torch.save({key: torch.from_numpy(value) for key, value in _golden(50)[0].items()}, path)
  with pytest.raises(ValueError) as excinfo:
    build_backbone("resnet18", path)
  _one_line(excinfo, f"{path} (as torchvision resnet18): entry layer1.0.conv1.weight [64, 64, 1, 1]")
