"""Seeded weights for the golden files: NumPy only, shared by the torch venv and the TensorFlow tests.

A *spec* is a list of entries, one per tensor of a PyTorch state dict, in the state dict's order:

  [name, shape, dtype, dist, a, b]            or
  [name, shape, dtype, dist, a, b, adds]

- ``dtype``: "float32" or "int64".
- ``dist``: "normal" (mean ``a``, standard deviation ``b``), "uniform" (``[a, b)``) or "const" (every value ``a``;
  ``b`` is ignored).
- ``adds`` (optional): a list of ``[start, stop, step, value]``; after drawing, ``value`` is added to
  ``tensor[start:stop:step]`` along the first axis (``stop`` may be None). The golden script uses it once per
  detector: to raise the background logit of the classification convolution's bias, whose channel layout differs
  between torchvision (``a * K + k``: background every K-th channel) and NVIDIA (``k * A + a``: background in the
  first A channels).

Each tensor is drawn from its own generator, ``np.random.default_rng([seed, zlib.crc32(name)])`` (PCG64), so a
tensor's values depend only on the seed and its name, not on the order of the spec. Values are drawn in float64 by
``Generator.standard_normal`` / ``Generator.random`` (C order, ``prod(shape)`` values), then scaled, shifted and cast:

  normal:  (a + b * z).astype(dtype)
  uniform: (a + (b - a) * u).astype(dtype)

NumPy documents that ``Generator`` streams may change between NumPy versions; the goldens were written with the
version recorded in their json (``numpy``). ``state_dict_digest`` lets a test confirm its regeneration bit for bit
before it compares any output.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import zlib

import numpy as np

DTYPES = {"float32": np.float32, "int64": np.int64}

# Default rules of spec_for (see there). Each value: (dist, a, b).
DEFAULT_RULES = {
  "bias": ("normal", 0.0, 0.05),
  "bn_weight": ("uniform", 0.5, 1.5),
  "bn_bias": ("normal", 0.0, 0.1),
  "bn_running_mean": ("normal", 0.0, 0.2),
  "bn_running_var": ("uniform", 0.5, 1.5),
  "bn_num_batches_tracked": ("const", 0, 0),
  "l2norm_scale": ("normal", 20.0, 2.0),
}


def _generator(seed: int, name: str) -> np.random.Generator:
  return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def draw(entry, seed: int) -> np.ndarray:
  """The tensor of one spec entry."""
  name, shape, dtype, dist, a, b = entry[:6]
  adds = entry[6] if len(entry) > 6 else []
  shape = tuple(int(s) for s in shape)
  if dtype not in DTYPES:
    raise ValueError(f"{name}: unknown dtype {dtype!r}")
  np_dtype = DTYPES[dtype]
  if dist == "const":
    value = np.full(shape, a, dtype=np.float64)
  elif dist == "normal":
    z = _generator(seed, name).standard_normal(shape, dtype=np.float64)
    value = a + b * z
  elif dist == "uniform":
    u = _generator(seed, name).random(shape, dtype=np.float64)
    value = a + (b - a) * u
  else:
    raise ValueError(f"{name}: unknown dist {dist!r}")
  for start, stop, step, add in adds:
    value[slice(start, stop, step)] += add
  return value.astype(np_dtype)


def make_state_dict(spec, seed: int) -> dict:
  """name -> np.ndarray for every entry of ``spec``, in the spec's order."""
  names = [entry[0] for entry in spec]
  if len(set(names)) != len(names):
    raise ValueError("duplicate names in spec")
  return {entry[0]: draw(entry, seed) for entry in spec}


def state_dict_digest(state_dict: dict) -> str:
  """sha256 over (name, dtype, shape, bytes) of every tensor, names sorted."""
  h = hashlib.sha256()
  for name in sorted(state_dict):
    arr = np.ascontiguousarray(np.asarray(state_dict[name]))
    h.update(name.encode("utf-8"))
    h.update(str(arr.dtype).encode("ascii"))
    h.update(repr(tuple(arr.shape)).encode("ascii"))
    h.update(arr.tobytes())
  return h.hexdigest()


def _matches(name: str, pattern: str) -> bool:
  return fnmatch.fnmatchcase(name, pattern)


def spec_for(shapes, weight_gain=1.0, overrides=None, l2norm_names=(), rules=None):
  """Build a spec from ``shapes``: a list of (name, shape, dtype) in state dict order.

  Default rules, by what the tensor is:
  - ``*.num_batches_tracked``: int64, const 0.
  - BatchNorm (a module whose ``<prefix>.running_mean`` is in the state dict): weight uniform(0.5, 1.5),
      bias normal(0, 0.1), running_mean normal(0, 0.2), running_var uniform(0.5, 1.5).
  - a weight with 2 or more dimensions (convolution, linear): normal(0, gain * sqrt(1 / fan_in)),
      fan_in = prod(shape[1:]), gain = ``weight_gain``.
  - any other ``*.bias``: normal(0, 0.05).
  - a name in ``l2norm_names`` (torchvision's ``backbone.scale_weight``): normal(20, 2).

  ``overrides``: a list of (fnmatch pattern, rule), first match wins, checked before the defaults. A rule is
  ``{"gain": g}`` (a weight: normal(0, g * sqrt(1 / fan_in))), ``{"std": s}`` (normal(0, s)), or
  ``{"dist": d, "a": a, "b": b}``; any of them may add ``"adds": [[start, stop, step, value], ...]``.
  """
  rules = dict(DEFAULT_RULES, **(rules or {}))
  overrides = list(overrides or [])
  names = {name for name, _, _ in shapes}
  spec = []
  for name, shape, dtype in shapes:
    shape = [int(s) for s in shape]
    prefix, _, leaf = name.rpartition(".")
    fan_in = int(np.prod(shape[1:])) if len(shape) >= 2 else None
    rule = None
    for pattern, over in overrides:
      if _matches(name, pattern):
        rule = over
        break
    adds = []
    if rule is not None:
      adds = [list(x) for x in rule.get("adds", [])]
      if "gain" in rule:
        if fan_in is None:
          raise ValueError(f"{name}: a gain needs a weight with a fan-in")
        dist, a, b = "normal", 0.0, float(rule["gain"]) * math.sqrt(1.0 / fan_in)
      elif "std" in rule:
        dist, a, b = "normal", 0.0, float(rule["std"])
      else:
        dist, a, b = rule["dist"], rule["a"], rule["b"]
    elif leaf == "num_batches_tracked":
      dist, a, b = rules["bn_num_batches_tracked"]
    elif f"{prefix}.running_mean" in names and leaf in ("weight", "bias", "running_mean", "running_var"):
      dist, a, b = rules[f"bn_{leaf}"]
    elif name in l2norm_names:
      dist, a, b = rules["l2norm_scale"]
    elif fan_in is not None:
      dist, a, b = "normal", 0.0, float(weight_gain) * math.sqrt(1.0 / fan_in)
    elif leaf == "bias":
      dist, a, b = rules["bias"]
    else:
      raise ValueError(f"{name}: no rule for a tensor of shape {shape}")
    if dtype == "int64" and dist != "const":
      raise ValueError(f"{name}: int64 tensors must be const")
    entry = [name, shape, dtype, dist, a, b]
    if adds:
      entry.append(adds)
    spec.append(entry)
  return spec


def shapes_of(named_arrays):
  """(name, shape, dtype) list from (name, array-like with .shape and .dtype) pairs, e.g. a torch state dict's
  items; the dtype becomes "int64" when its string names an integer type, else "float32"."""
  out = []
  for name, arr in named_arrays:
    dt = str(arr.dtype)
    out.append((name, list(arr.shape), "int64" if "int" in dt else "float32"))
  return out
