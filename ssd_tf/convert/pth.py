"""PyTorch checkpoint files (.pth / .pt) as NumPy arrays, and the accounting of their entries.

``read_state_dict`` needs torch (imported only there); a converter then ``take``s each
entry it uses from a ``StateDict`` and ends with ``check_consumed``, which proves that no
entry was left over except under the prefixes the converter declares unused.
"""

import os
from collections.abc import Mapping

import numpy as np

TORCH_CPU_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def read_state_dict(path):
  """The state dict in PyTorch checkpoint ``path``: {name: np.ndarray}, dtypes as stored (bfloat16 -> float32).

  ``path`` holds a state dict (a dict of tensors) or a checkpoint dict with it under "model"
  (NVIDIA's training checkpoints) or "state_dict". A "module." prefix on every key
  (DistributedDataParallel) is stripped.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"PyTorch checkpoint {path} not found")
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"reading {path} (a PyTorch .pth file) needs torch: `{TORCH_CPU_INSTALL}` (the CPU build "
                      f"suffices; nothing else in ssd_tf needs torch)") from e
  try:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  (RuntimeError, UnpicklingError, EOFError, ...)
    if "Unsupported global" in str(e):
      raise ValueError(f"{path}: the checkpoint pickles Python objects besides tensors, which "
                       f"torch.load(weights_only=True) does not run ({_summary(e)}); save the state dict "
                       f"alone: torch.save(model.state_dict(), path)") from e
    raise ValueError(f"{path}: not a readable PyTorch checkpoint (truncated or another kind of file): "
                     f"{_summary(e)}") from e
  if isinstance(checkpoint, Mapping):
    checkpoint = next((checkpoint[key] for key in ("model", "state_dict")
                       if isinstance(checkpoint.get(key), Mapping)), checkpoint)
  if not (isinstance(checkpoint, Mapping) and checkpoint
          and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in checkpoint.items())):
    found = (f"a dict with keys {', '.join(map(repr, list(checkpoint)[:5]))}" if isinstance(checkpoint, Mapping)
             else f"a {type(checkpoint).__name__}")
    raise ValueError(f"{path}: holds no state dict (a dict of tensors, bare or under 'model' or 'state_dict'); "
                     f"found {found}")
  if all(key.startswith("module.") for key in checkpoint):
    checkpoint = {key[len("module."):]: value for key, value in checkpoint.items()}
  return {key: (value.float() if value.dtype == torch.bfloat16 else value).detach().numpy()
          for key, value in checkpoint.items()}


def _summary(error):
  """The line of a (many-line) torch.load error that says what is wrong."""
  text = str(error).split("WeightsUnpickler error:")[-1]
  line = next((line.strip() for line in text.splitlines() if line.strip()), "")
  return f"{type(error).__name__}: {line.split('. ')[0][:200]}" if line else type(error).__name__


def _describe(key, value):
  return f"{key} {list(np.shape(value))}"


class StateDict:
  """The entries of a state dict ({name: array}) not yet taken by a converter.

  ``source`` names the state dict in errors (e.g. the file's path).
  """

  def __init__(self, state_dict, source):
    self._left = dict(state_dict)
    self.source = source

  def take(self, key, shape):
    """Removes entry ``key`` and returns it; ValueError when it is missing or its shape is not ``shape``."""
    if key not in self._left:
      left = ", ".join(_describe(k, v) for k, v in list(self._left.items())[:3]) or "none"
      raise ValueError(f"{self.source}: no entry {key} {list(shape)}; the first of the {len(self._left)} entries "
                       f"left: {left}")
    if tuple(np.shape(self._left[key])) != tuple(shape):
      raise ValueError(f"{self.source}: entry {_describe(key, self._left[key])}, expected {list(shape)}")
    return self._left.pop(key)

  def discard(self, key):
    """Removes entry ``key`` if present (an entry the converter knowingly drops, e.g. a counter)."""
    self._left.pop(key, None)

  def check_consumed(self, ignore_prefixes=()):
    """Returns the names left under ``ignore_prefixes`` (state dict order); ValueError naming the first
    other entries left, with their shapes."""
    ignored = [key for key in self._left if key.startswith(tuple(ignore_prefixes))]
    unexpected = [key for key in self._left if not key.startswith(tuple(ignore_prefixes))]
    if unexpected:
      listed = ", ".join(_describe(key, self._left[key]) for key in unexpected[:4])
      more = f" and {len(unexpected) - 4} more" if len(unexpected) > 4 else ""
      raise ValueError(f"{self.source}: {len(unexpected)} unexpected entries: {listed}{more}")
    return ignored
