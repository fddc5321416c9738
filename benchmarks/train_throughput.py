r"""Training throughput: steady-state images/s of ssd_tf's real training step, printed as one JSON line.

Times ssd_tf.train.Trainer's own step (matching, forward, MultiBox loss with hard negative
mining, weight decay, backward, SGD momentum update; XLA-compiled with --jit_compile) on
one device, after --warmup untimed steps, over --steps steps; a step ends when its loss is
on the host, as in Trainer.fit.

  --input=cached    one synthetic batch (random images in [0, 255], 1-10 random ground truth
                    boxes each, like the peer's) held in memory: the model alone is measured.
  --input=pipeline  the real augmenting tf.data pipeline over TFRecords prepared from the COCO
                    sample (--coco_dir, default $COCO_TINY_DIR) into a temporary folder.

FLOPs: one forward pass of one image is counted by TensorFlow's profiler on the traced
graph (Conv2D/MatMul at 2 per multiply-add); a training step is taken as 3x the forward
pass (backward ~ 2x forward). Achieved GFLOP/s is reported with its fraction of the machine's
peak, measured in the same run right after the steps (machine.measure_peak: a large matmul and a
3x3 convolution in float32 and bfloat16, --peak_seconds in all; "peak" in the JSON line): the peak
of the step's compute dtype, float32 or bfloat16 (the max of its matmul and conv figures; none
measured for mixed_float16's float16, whose fraction is null).

--breakdown times the parts of a step separately, each as its own tf.function (XLA as the
step) on the same batch: forward only, forward + loss + backward (targets given), matching,
matching + loss (model outputs given), optimizer update (gradients given).

--steps_per_loop=1,20 also times Trainer.train_loop running that many steps per call (the
loss on the host once per call, as Trainer.fit with train.steps_per_loop), on the same input,
each for --steps steps (rounded up to whole calls) after one untimed call: steps/s of each.

--peer_python runs torchvision's SSD of the same design ($PEER_DIR/torch_ssd_bench.py
--mode train, same batch size and number of classes) right after and reports the ratio.

  python benchmarks/train_throughput.py --config=configs/ssd300_resnet50_coco.py --jit_compile \
      --breakdown --peer_python=/tmp/peer/venv/bin/python
"""

import json
import pathlib
import sys
import tempfile

from absl import app
from absl import flags

import harness
import machine
import peer

sys.path.insert(0, str(harness.REPO))
from ssd_tf import cli  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = harness.define_model_flags(
    batch_size_help="Global batch size (the peer's default: 8).",
    coco_dir_help="--input=pipeline: COCO 2017 layout.", config_note="Backbone weights are random.")
_TIMING = harness.define_timing_flags(
    warmup=(3, "Untimed steps first (the first one traces and compiles)."), steps=(10, "Timed steps."),
    peer_steps=(6, "Peer: timed steps."), peer_warmup=(2, "Peer: untimed steps first."))
_JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "XLA-compile the training step.")
_INPUT = flags.DEFINE_enum("input", "cached", ("cached", "pipeline"), "Where batches come from.")
_BREAKDOWN = flags.DEFINE_bool("breakdown", False, "Also time the parts of a step separately.")
_PEAK_SECONDS = flags.DEFINE_float("peak_seconds", 2.0, "Seconds of timed calls measuring the machine's peak.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic batch.")
_STEPS_PER_LOOP = flags.DEFINE_list("steps_per_loop", [], "Also time loops of these many steps per call "
                                    "(e.g. 1,20): steps/s of each.")
flags.adopt_module_key_flags(harness)  # --help lists the shared flags too


def synthetic_batch(config, seed):
  """A training batch of random images and boxes, padded like the pipeline's (see the API contract).

  image float32 [B,S,S,3] uniform in [0, 255]; per image 1-10 boxes (normalized yxyx, sides
  at least 10 px, inside the image) with random labels 1..C; the rest of the
  config.data.max_boxes rows are padding (label -1).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  batch, size, rows = config.train.batch_size, config.model.image_size, config.data.max_boxes
  rng = np.random.default_rng(seed)
  boxes = np.zeros((batch, rows, 4), np.float32)
  labels = np.full((batch, rows), -1, np.int32)
  for i in range(batch):
    count = min(int(rng.integers(1, 11)), rows)
    corner = rng.uniform(0.0, 1.0 - 20.0 / size, size=(count, 2))
    extent = 10.0 / size + rng.uniform(0.0, 1.0, size=(count, 2)) * (1.0 - corner - 10.0 / size)
    boxes[i, :count] = np.concatenate([corner, corner + extent], axis=1)
    labels[i, :count] = rng.integers(1, config.model.num_classes + 1, size=count)
  return dict(image=rng.uniform(0.0, 255.0, size=(batch, size, size, 3)).astype(np.float32),
              boxes=boxes, labels=labels, is_crowd=np.zeros((batch, rows), bool))


def cached_iterator(strategy, batch):
  """The same batch every step, as the training loop receives batches (a distributed iterator)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tensors = {key: tf.constant(value) for key, value in batch.items()}
  return iter(strategy.distribute_datasets_from_function(
      lambda _: tf.data.Dataset.from_tensors(tensors).repeat()))


def step_parts(trainer, batch):
  """{part: zero-argument callable} timing each part of Trainer's step on `batch` (see --breakdown)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  batch = {key: tf.constant(value) for key, value in batch.items()}

  def compiled(fn):
    return tf.function(fn, jit_compile=trainer.jit_compile)

  forward = compiled(lambda: trainer.ssd.network(batch["image"], training=True))
  def match_batch():
    return trainer.ssd.targets(batch["boxes"], batch["labels"], batch["is_crowd"])

  match = compiled(match_batch)
  match_and_loss = compiled(lambda outputs: trainer.losses(outputs, match_batch())["loss"])
  gradients_of = compiled(lambda targets: trainer.gradients(batch, targets)[1])
  update = compiled(trainer.apply_gradients)
  outputs, targets = forward(), match()
  gradients = gradients_of(targets)
  return dict(forward=forward, forward_backward=lambda: gradients_of(targets),
              matching=match, matching_loss=lambda: match_and_loss(outputs),
              optimizer_update=lambda: update(gradients))


def loop_steps_per_s(trainer, iterator, steps_per_loop, steps):
  """Steps/s of Trainer.train_loop at ``steps_per_loop`` steps per call, over >= ``steps`` steps."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  num_steps = tf.constant(steps_per_loop)
  times = harness.time_calls(lambda: float(trainer.train_loop(iterator, num_steps)[1]["loss"]), 1,
                             -(-steps // steps_per_loop))
  return round(steps_per_loop * len(times) / sum(times), 3)


def measure(config, workdir, input_kind, coco_dir, warmup, steps, breakdown, peak_seconds, seed,
            steps_per_loop=()):
  """Times Trainer's step, then the machine's peak; returns (JSON fields, whether the step was XLA-compiled)."""
  import math  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  from ssd_tf import distribute  # pylint: disable=g-import-not-at-top
  from ssd_tf import train  # pylint: disable=g-import-not-at-top

  if input_kind == "pipeline":
    harness.prepare_coco(config, coco_dir, config.data.train_split, str(pathlib.Path(workdir) / "data"))
  trainer = train.Trainer(config, str(pathlib.Path(workdir) / "run"), distribute.make_strategy("default"))
  batch = synthetic_batch(config, seed)
  iterator = (trainer.dataset_iterator(0) if input_kind == "pipeline"
              else cached_iterator(trainer.strategy, batch))
  losses = []
  times = harness.time_calls(
      lambda: losses.append(float(trainer.train_step(iterator)["loss"])),
      warmup, steps)
  step = harness.timing(times, config.train.batch_size)
  forward_gflop = harness.forward_flops(trainer.ssd.network, trainer.ssd.image_size) / 1e9
  achieved = 3 * forward_gflop * step["images_per_s"]
  peak = machine.measure_peak(peak_seconds)
  peak_dtype = keras.mixed_precision.global_policy().compute_dtype  # SSD set it from the config
  peak_gflop = machine.peak_gflop_per_s(peak, peak_dtype)
  result = dict(
      **harness.model_facts(trainer.ssd), images_per_s=step["images_per_s"],
      step_ms_median=step["ms_median"], step_ms_mean=step["ms_mean"],
      loss_first_timed=round(losses[warmup], 4), loss_last=round(losses[-1], 4),
      finite=all(math.isfinite(value) for value in losses),
      forward_gflop_per_image=round(forward_gflop, 3), train_gflop_per_image=round(3 * forward_gflop, 3),
      achieved_gflop_per_s=round(achieved, 2), peak=peak, peak_dtype=peak_dtype, peak_gflop_per_s=peak_gflop,
      peak_fraction=None if peak_gflop is None else round(achieved / peak_gflop, 3),
      flops_method="tf.compat.v1.profiler float_operation on the batch-1 inference graph (2 per "
                   "multiply-add); training = 3x forward")
  if steps_per_loop:
    result["steps_per_loop_steps_per_s"] = {str(n): loop_steps_per_s(trainer, iterator, n, steps)
                                            for n in steps_per_loop}
  if breakdown:
    parts = {name: harness.timing(harness.time_calls(fn, warmup, steps), config.train.batch_size)["ms_median"]
             for name, fn in step_parts(trainer, batch).items()}
    result["breakdown_ms_median"] = parts
    result["breakdown_share_of_step"] = {name: round(ms / step["ms_median"], 3) for name, ms in parts.items()}
  return result, trainer.jit_compile


def main(argv):
  with cli.user_errors(_MODEL.traceback.value):
    config = harness.config_from_flags(_MODEL, argv, _JIT_COMPILE.value)
    if _TIMING.peer_python.value:
      peer.ssd_model(config)  # no peer model for this config: say so before measuring
    with tempfile.TemporaryDirectory() as workdir:
      ours, xla = measure(config, workdir, _INPUT.value, _MODEL.coco_dir.value, _TIMING.warmup.value,
                          _TIMING.steps.value, _BREAKDOWN.value, _PEAK_SECONDS.value, _SEED.value,
                          [int(n) for n in _STEPS_PER_LOOP.value])
    report = dict(bench="ssd_tf_train", batch_size=config.train.batch_size,
                  precision=_MODEL.precision.value, jit_compile=xla, input=_INPUT.value,
                  warmup=_TIMING.warmup.value, steps=_TIMING.steps.value, **ours, machine=machine.facts(xla))
    if _TIMING.peer_python.value:
      theirs = peer.run_ssd_bench(_TIMING.peer_python.value, config, "train", config.train.batch_size,
                                  _TIMING.peer_steps.value, _TIMING.peer_warmup.value,
                                  precision=harness.peer_precision(_TIMING, _MODEL))
      report["peer"] = theirs
      report["speedup_vs_peer"] = round(ours["images_per_s"] / theirs["images_per_s"], 2)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
