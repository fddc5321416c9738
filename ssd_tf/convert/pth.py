"""PyTorch checkpoint files (.pth / .pt) as NumPy state dicts; the one place ssd_tf imports torch."""

import os
from collections.abc import Mapping

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
                      f"suffices; nothing else in ssd_tf needs torch)", name="torch") from e
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
