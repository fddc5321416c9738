"""CPU feature detection used by the quickstart config to pick bfloat16, and the CPU model benchmarks print."""

import platform

from ssd_tf import hardware

_CPUINFO = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu sse2 avx2 {extra}
bogomips\t: 4000

processor\t: 1
flags\t\t: fpu
"""


def _cpuinfo(tmp_path, extra):
  path = tmp_path / "cpuinfo"
  path.write_text(_CPUINFO.format(extra=extra))
  return str(path)


def test_bfloat16_needs_avx512_bf16_or_amx_bf16_on_the_first_cpu(tmp_path):
  assert hardware.cpu_flags(_cpuinfo(tmp_path, "avx512f")) == {"fpu", "sse2", "avx2", "avx512f"}
  assert not hardware.cpu_has_bfloat16(_cpuinfo(tmp_path, "avx512f avx512_vnni"))
  assert hardware.cpu_has_bfloat16(_cpuinfo(tmp_path, "avx512f avx512_bf16"))
  assert hardware.cpu_has_bfloat16(_cpuinfo(tmp_path, "amx_tile amx_bf16"))


def test_no_cpuinfo_means_no_bfloat16(tmp_path):
  assert hardware.cpu_flags(str(tmp_path / "missing")) == frozenset()
  assert not hardware.cpu_has_bfloat16(str(tmp_path / "missing"))


def test_cpu_model_is_the_first_cpus_model_name_else_platform_processor(tmp_path, monkeypatch):
  monkeypatch.setattr(platform, "processor", lambda: "platform CPU")
  assert hardware.cpu_model(_cpuinfo(tmp_path, "")) == "Some CPU"
  assert hardware.cpu_model(str(tmp_path / "missing")) == "platform CPU"
  no_model = tmp_path / "no_model"
  no_model.write_text("processor\t: 0\nflags\t\t: fpu\n")
  assert hardware.cpu_model(str(no_model)) == "platform CPU"
