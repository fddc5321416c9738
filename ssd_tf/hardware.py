"""What the host CPU offers, read without TensorFlow (configs use it at load time)."""

_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo_path="/proc/cpuinfo"):
  """The feature flags of the first CPU in ``cpuinfo_path`` (empty where there is no such file)."""
  try:
    with open(cpuinfo_path) as f:
      for line in f:
        if line.startswith("flags"):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def cpu_has_bfloat16(cpuinfo_path="/proc/cpuinfo"):
  """True when the CPU computes bfloat16 dot products natively (AVX512-BF16 or AMX-BF16): there,
  oneDNN runs mixed_bfloat16 convolutions faster than float32; elsewhere they are emulated and slower."""
  return bool(cpu_flags(cpuinfo_path) & _BFLOAT16_FLAGS)
