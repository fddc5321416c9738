"""What the host CPU offers, read without TensorFlow (configs use it at load time)."""

import platform

_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def _cpuinfo_field(name, cpuinfo_path):
  """The value of field ``name`` of the first CPU in ``cpuinfo_path``; None without the file or the field."""
  try:
    with open(cpuinfo_path) as f:
      for line in f:
        key, colon, value = line.partition(":")
        if colon and key.strip() == name:
          return value.strip()
  except OSError:
    pass
  return None


def cpu_flags(cpuinfo_path="/proc/cpuinfo"):
  """The feature flags of the first CPU in ``cpuinfo_path`` (empty where there is no such file)."""
  return frozenset((_cpuinfo_field("flags", cpuinfo_path) or "").split())


def cpu_model(cpuinfo_path="/proc/cpuinfo"):
  """The first CPU's model name in ``cpuinfo_path`` (platform.processor() without the file or the field)."""
  return _cpuinfo_field("model name", cpuinfo_path) or platform.processor()


def cpu_has_bfloat16(cpuinfo_path="/proc/cpuinfo"):
  """True when the CPU computes bfloat16 dot products natively (AVX512-BF16 or AMX-BF16): there,
  oneDNN runs mixed_bfloat16 convolutions faster than float32; elsewhere they are emulated and slower."""
  return bool(cpu_flags(cpuinfo_path) & _BFLOAT16_FLAGS)
