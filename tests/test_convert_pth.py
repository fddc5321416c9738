"""ssd_tf.convert.pth: reading PyTorch checkpoint files and accounting for their entries.

Writing .pth files needs torch: those tests skip without it (CI installs a CPU torch).
"""

import argparse
import sys

import numpy as np
import pytest
import tensorflow as tf

from ssd_tf.convert import pth, weights


def _arrays():
  rng = np.random.default_rng(0)
  return {"conv1.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
          "bn1.running_var": rng.uniform(0.5, 1.5, 4).astype(np.float32),
          "bn1.num_batches_tracked": np.array(7, np.int64)}


def _one_line(excinfo, *parts):
  message = str(excinfo.value)
  assert "\n" not in message, message
  for part in parts:
    assert part in message, message
  return message


@pytest.mark.parametrize("form", ["bare", "legacy_format", "under_model", "under_state_dict", "module_prefix"])
def test_read_state_dict_forms(tmp_path, form):
  torch = pytest.importorskip("torch")
  arrays = _arrays()
  tensors = {key: torch.from_numpy(value) for key, value in arrays.items()}
  checkpoint = {"bare": tensors, "legacy_format": tensors,
                "under_model": {"epoch": 3, "model": tensors, "label_map": {1: 1}},
                "under_state_dict": {"state_dict": tensors, "arch": "resnet18"},
                "module_prefix": {f"module.{key}": value for key, value in tensors.items()}}[form]
  path = tmp_path / "weights.pth"
  torch.save(checkpoint, path, _use_new_zipfile_serialization=form != "legacy_format")
  state = pth.read_state_dict(path)
  assert list(state) == list(arrays)
  for key, value in arrays.items():
    assert state[key].dtype == value.dtype
    np.testing.assert_array_equal(state[key], value)


def test_read_state_dict_reads_bfloat16_as_float32(tmp_path):
  torch = pytest.importorskip("torch")
  path = tmp_path / "bf16.pt"
  torch.save({"w": torch.tensor([1.5, -2.25, 3.0e-3], dtype=torch.bfloat16)}, path)
  state = pth.read_state_dict(path)
  assert state["w"].dtype == np.float32
  np.testing.assert_array_equal(state["w"], torch.tensor([1.5, -2.25, 3.0e-3], dtype=torch.bfloat16).float())


def test_read_state_dict_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError) as excinfo:
    pth.read_state_dict(tmp_path / "missing.pth")
  _one_line(excinfo, "missing.pth", "not found")

  torch = pytest.importorskip("torch")
  whole = tmp_path / "whole.pth"
  torch.save({key: torch.from_numpy(value) for key, value in _arrays().items()}, whole)
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) // 2])
  jpeg = tmp_path / "photo.pth"
  jpeg.write_bytes(tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy())
  empty = tmp_path / "empty.pt"
  empty.write_bytes(b"")
  for path in (truncated, jpeg, empty):
    with pytest.raises(ValueError) as excinfo:
      pth.read_state_dict(path)
    _one_line(excinfo, str(path), "not a readable PyTorch checkpoint")

  for name, checkpoint, found in [("list.pth", [torch.zeros(2)], "found a list"),
                                  ("counters.pth", {"epoch": 3, "iteration": 10}, "found a dict with keys 'epoch'"),
                                  ("empty.pth", {}, "found a dict with keys")]:
    torch.save(checkpoint, tmp_path / name)
    with pytest.raises(ValueError) as excinfo:
      pth.read_state_dict(tmp_path / name)
    _one_line(excinfo, name, "holds no state dict", found)

  torch.save({"model": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "objects.pth")
  with pytest.raises(ValueError) as excinfo:
    pth.read_state_dict(tmp_path / "objects.pth")
  _one_line(excinfo, "objects.pth", "argparse.Namespace", "torch.save(model.state_dict(), path)")


def test_read_state_dict_without_torch_says_how_to_install_it(tmp_path, monkeypatch):
  path = tmp_path / "resnet18.pth"
  path.write_bytes(b"any")
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  with pytest.raises(ImportError) as excinfo:
    pth.read_state_dict(path)
  _one_line(excinfo, str(path), "pip install torch --index-url https://download.pytorch.org/whl/cpu",
            "nothing else in ssd_tf needs torch")
  assert excinfo.value.name == "torch"  # what cli.user_errors knows an optional dependency by


def test_state_dict_take_and_check_consumed():
  state = weights.StateDict({**_arrays(), "fc.weight": np.zeros((10, 4), np.float32)}, "x.pth")
  np.testing.assert_array_equal(state.take("conv1.weight", (4, 3, 3, 3)), _arrays()["conv1.weight"])
  with pytest.raises(ValueError) as excinfo:
    state.take("bn1.running_var", (8,))
  _one_line(excinfo, "x.pth: entry bn1.running_var [4], expected [8]")
  with pytest.raises(ValueError) as excinfo:
    state.take("bn1.running_mean", (4,))
  _one_line(excinfo, "x.pth: no entry bn1.running_mean [4]", "bn1.num_batches_tracked []")
  with pytest.raises(ValueError) as excinfo:
    state.check_consumed(ignore_prefixes=("fc.",))
  _one_line(excinfo, "x.pth: 2 unexpected entries: bn1.running_var [4], bn1.num_batches_tracked []")
  state.take("bn1.running_var", (4,))
  state.discard("bn1.num_batches_tracked")
  assert state.check_consumed(ignore_prefixes=("fc.",)) == ["fc.weight"]
