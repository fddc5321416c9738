r"""Depthwise against pointwise convolutions, TensorFlow against PyTorch on this CPU, printed as one JSON line.

SSDLite's MobileNetV3 spends its FLOPs in 1x1 (pointwise) convolutions and its memory traffic in the
depthwise ones. This times, for each convolution of the reduced-tail MobileNetV3-Large at --image_size
(ssd_tf.backbones.mobilenet.block_specs: every block's depthwise k x k conv and its 1x1 expansion and
projection convs), at --batch_size, the forward pass and forward + backward (input and kernel
gradients), summed per kind:

  tensorflow  tf.nn.depthwise_conv2d / tf.nn.conv2d in a tf.function (oneDNN), in float32 and bfloat16;
  torch       the same shapes with torch.nn.functional.conv2d (groups=C for depthwise) in the peer's
              venv (--peer_python), float32 and bfloat16.

JSON: ``tf_kernels`` and ``torch_kernels`` {"<dtype>/<kind>/<forward|backward>": ms, GFLOP/s} and their ratio
``tf_over_torch_ms``. Each figure is the median over --steps timed calls after --warmup; GFLOP/s counts 2 per multiply-add
(backward as 2x forward). If TensorFlow's depthwise rows are far behind torch's while the pointwise
rows are level, the depthwise kernel is what loses.

  python benchmarks/depthwise.py --peer_python=/tmp/peer/venv/bin/python
"""

import json
import subprocess
import sys

from absl import app
from absl import flags

import harness
import machine

sys.path.insert(0, str(harness.REPO))

_IMAGE_SIZE = flags.DEFINE_integer("image_size", 320, "Input side the layer shapes follow.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Batch of every convolution.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls first.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed calls.")
_PEER = flags.DEFINE_string("peer_python", None, "python of the torch venv: time torch too.")

# The torch side, run in the peer's venv: argv = layers JSON, batch, warmup, steps.
_TORCH = r"""
import json, statistics, sys, time
import torch
import torch.nn.functional as F
layers, batch, warmup, steps = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(torch.get_num_threads())
out = {}
for dtype in ("float32", "bfloat16"):
  dt = getattr(torch, dtype)
  for layer in layers:
    size, cin, cout, k, stride, kind = layer
    x = torch.randn(batch, cin, size, size, dtype=dt, requires_grad=True)
    groups = cin if kind == "depthwise" else 1
    w = torch.randn(cout, cin // groups, k, k, dtype=dt, requires_grad=True)
    for mode in ("forward", "backward"):
      def call():
        if mode == "forward":
          with torch.no_grad():
            F.conv2d(x, w, stride=stride, padding=k // 2, groups=groups)
        else:
          y = F.conv2d(x, w, stride=stride, padding=k // 2, groups=groups)
          gx, gw = torch.autograd.grad(y.sum(), (x, w))
      for _ in range(warmup):
        call()
      times = []
      for _ in range(steps):
        t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
      key = f"{dtype}/{kind}/{mode}"
      out[key] = out.get(key, 0.0) + statistics.median(times)
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "seconds": out}))
"""


def layer_shapes(image_size):
  """[(input side, in channels, out channels, kernel, stride, "depthwise" | "pointwise")] of MobileNetV3."""
  from ssd_tf.backbones import mobilenet  # pylint: disable=g-import-not-at-top
  side, channels, layers = -(-image_size // 2), mobilenet.STEM_CHANNELS, []
  for kernel, expansion, out, _, _, stride in mobilenet.block_specs("reduced_tail"):
    if expansion != channels:
      layers.append((side, channels, expansion, 1, 1, "pointwise"))
    layers.append((side, expansion, expansion, kernel, stride, "depthwise"))
    side = -(-side // stride)
    layers.append((side, expansion, out, 1, 1, "pointwise"))
    channels = out
  return layers


def flops(layers, kind, batch):
  """Forward multiply-adds x 2 of the ``kind`` layers."""
  total = 0
  for size, cin, cout, k, stride, layer_kind in layers:
    if layer_kind == kind:
      out = -(-size // stride)
      total += 2 * batch * out * out * cout * k * k * (1 if kind == "depthwise" else cin)
  return total


def tensorflow_seconds(layers, batch, warmup, steps):
  import statistics  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  seconds = {}
  for dtype in ("float32", "bfloat16"):
    for size, cin, cout, k, stride, kind in layers:
      x = tf.Variable(tf.random.normal((batch, size, size, cin), dtype=dtype))
      shape = (k, k, cin, 1) if kind == "depthwise" else (k, k, cin, cout)
      w = tf.Variable(tf.random.normal(shape, dtype=dtype))

      def conv(x, w, kind=kind, stride=stride):
        if kind == "depthwise":
          return tf.nn.depthwise_conv2d(x, w, (1, stride, stride, 1), "SAME")
        return tf.nn.conv2d(x, w, stride, "SAME")

      forward = tf.function(lambda conv=conv: conv(x, w))

      @tf.function
      def backward(conv=conv):
        with tf.GradientTape() as tape:
          y = tf.reduce_sum(conv(x, w))
        return tape.gradient(y, [x, w])

      for mode, fn in (("forward", forward), ("backward", backward)):
        times = harness.time_calls(lambda fn=fn: [t.numpy() for t in tf.nest.flatten(fn())], warmup, steps)
        key = f"{dtype}/{kind}/{mode}"
        seconds[key] = seconds.get(key, 0.0) + statistics.median(times)
  return seconds


def rows(seconds, layers, batch):
  out = {}
  for key, value in sorted(seconds.items()):
    _, kind, mode = key.split("/")
    work = flops(layers, kind, batch) * (3 if mode == "backward" else 1)
    out[key] = dict(ms=round(1e3 * value, 2), gflop_per_s=round(work / value / 1e9, 1))
  return out


def main(argv):
  harness.check_arguments(argv)
  layers = layer_shapes(_IMAGE_SIZE.value)
  batch = _BATCH.value
  result = dict(bench="depthwise", image_size=_IMAGE_SIZE.value, batch_size=batch, layers=len(layers),
                gflop={kind: round(flops(layers, kind, batch) / 1e9, 3) for kind in ("depthwise", "pointwise")},
                tf_kernels=rows(tensorflow_seconds(layers, batch, _WARMUP.value, _STEPS.value), layers, batch))
  if _PEER.value:
    torch_run = subprocess.run([_PEER.value, "-c", _TORCH, json.dumps(layers), str(batch), str(_WARMUP.value),
                                str(_STEPS.value)], capture_output=True, text=True, check=True)
    line = json.loads(torch_run.stdout.strip().splitlines()[-1])
    result.update(torch=line["torch"], torch_threads=line["threads"], torch_kernels=rows(line["seconds"], layers, batch))
    result["tf_over_torch_ms"] = {key: round(value["ms"] / result["torch_kernels"][key]["ms"], 2)
                                  for key, value in result["tf_kernels"].items()}
  result.update(machine.facts(xla=False))
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
