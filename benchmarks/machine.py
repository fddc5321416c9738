"""The machine facts every benchmark prints next to its figures (the "machine" object of its JSON line), and
the machine's measured peak GFLOP/s in TensorFlow (train_throughput.py's "peak").

  python benchmarks/machine.py [--seconds_budget=2]   # the peak alone, as one JSON line
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time

DTYPES = ("float32", "bfloat16")  # the compute dtypes whose peak is measured


def facts(xla):
  """CPU model and count, Python, TensorFlow, Keras, TF devices, the global dtype policy, XLA, date.

  Call it after the benchmark set its dtype policy and put the repository on sys.path;
  ``xla`` says whether the measured functions were XLA-compiled.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ssd_tf import hardware  # pylint: disable=g-import-not-at-top
  return dict(
      cpu=hardware.cpu_model(), nproc=os.cpu_count(), python=platform.python_version(),
      platform=platform.platform(), tensorflow=tf.__version__, keras=keras.__version__,
      devices=[device.name for device in tf.config.list_logical_devices()],
      dtype_policy=keras.mixed_precision.global_policy().name, xla=bool(xla),
      date=datetime.datetime.now().isoformat(timespec="seconds"))


def matmul_flops(m, k, n):
  """FLOPs of a [m, k] x [k, n] matmul, 2 per multiply-add."""
  return 2 * m * k * n


def conv3x3_flops(batch, height, width, channels_in, channels_out):
  """FLOPs of a stride-1 'SAME' 3x3 convolution [B,H,W,Cin] -> [B,H,W,Cout], 2 per multiply-add; every
  output counts all 9 taps, the zero padding included (as TensorFlow's profiler counts Conv2D)."""
  return 2 * batch * height * width * channels_in * channels_out * 9


def _best_seconds(fn, seconds):
  """Seconds of the fastest call of fn() after one untimed call; calls until `seconds` are spent, 3 at least.

  The fastest call, not the median: other processes on the cores only ever slow a call down.
  """
  fn()
  times = []
  while len(times) < 3 or sum(times) < seconds:
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def _kernels(dtype, matmul_size, conv_shape):
  """{"matmul": call, "conv3x3": call}: zero-argument calls of the two kernels on random operands of dtype."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  batch, height, width, channels_in, channels_out = conv_shape
  a = tf.cast(tf.random.uniform([matmul_size, matmul_size]), dtype)
  x = tf.cast(tf.random.uniform([batch, height, width, channels_in]), dtype)
  w = tf.cast(tf.random.uniform([3, 3, channels_in, channels_out], -0.1, 0.1), dtype)
  return dict(matmul=lambda: tf.linalg.matmul(a, a), conv3x3=lambda: tf.nn.conv2d(x, w, 1, "SAME"))


def _digits(value):
  return float(f"{value:.4g}")


def measure_peak(seconds_budget=2.0, matmul_size=2048, conv_shape=(8, 38, 38, 256, 256)):
  """GFLOP/s of TensorFlow's own kernels on this machine: the peak a model's FLOP rate is a fraction of.

  Times, in float32 and in bfloat16, a square [N, N] x [N, N] matmul (N = matmul_size) and a stride-1
  'SAME' 3x3 convolution of conv_shape = (B, H, W, Cin, Cout), NHWC (the default: 256 channels on SSD300's
  38x38 feature map), eagerly with TensorFlow's default CPU kernels (oneDNN on x86; not XLA). Each kernel
  gets one untimed warm-up call, then is called for seconds_budget / 4 seconds (3 calls at least) and the
  fastest call counts. At the defaults a call takes 5 ms (bfloat16 conv) to 55 ms (float32 matmul) on 2
  Xeon cores with AMX, so the whole takes little more than seconds_budget.

  Returns {"<kernel>_<dtype>_gflop_per_s": FLOPs / 1e9 / seconds, "<kernel>_<dtype>_s": seconds of the
  fastest call} for kernel in (matmul, conv3x3), dtype in DTYPES, with "<kernel>_gflop" (GFLOP per call,
  matmul_flops / conv3x3_flops) and the shapes; figures to 4 significant digits.
  """
  flops = dict(matmul=matmul_flops(matmul_size, matmul_size, matmul_size), conv3x3=conv3x3_flops(*conv_shape))
  result = dict(matmul_shape=[matmul_size] * 3, conv3x3_shape=list(conv_shape),
                **{f"{kernel}_gflop": _digits(count / 1e9) for kernel, count in flops.items()})
  for dtype in DTYPES:
    for kernel, fn in _kernels(dtype, matmul_size, conv_shape).items():
      seconds = _best_seconds(fn, seconds_budget / 4)
      result[f"{kernel}_{dtype}_s"] = _digits(seconds)
      result[f"{kernel}_{dtype}_gflop_per_s"] = _digits(flops[kernel] / 1e9 / seconds)
  return result


def peak_gflop_per_s(peak, dtype):
  """The peak of a compute dtype in a measure_peak result: the max of its matmul and 3x3 conv figures.

  The max, not the conv alone: a training step runs convolutions of many shapes (1x1 ones are plain
  matmuls) and one 3x3 shape can run slower than others, so the best measured rate of the dtype is
  the bound. None for a dtype not measured (float16, of mixed_float16).
  """
  if dtype not in DTYPES:
    return None
  return max(peak[f"matmul_{dtype}_gflop_per_s"], peak[f"conv3x3_{dtype}_gflop_per_s"])


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seconds_budget", type=float, default=2.0, help="Seconds of timed calls in all.")
  args = parser.parse_args()
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # ssd_tf, for facts()
  print(json.dumps(dict(bench="machine_peak", **measure_peak(args.seconds_budget), machine=facts(xla=False))),
        flush=True)


if __name__ == "__main__":
  main()
