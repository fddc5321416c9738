"""What the model benchmarks share: their flags, config, models, the COCO sample, timing and FLOP counting.

TensorFlow is imported inside the functions, so the scripts print --help without it.
"""

import collections
import os
import pathlib
import statistics
import time

from absl import flags

REPO = pathlib.Path(__file__).resolve().parent.parent
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

ModelFlags = collections.namedtuple("ModelFlags", "config checkpoint batch_size precision coco_dir traceback")
TimingFlags = collections.namedtuple("TimingFlags", "warmup steps peer_python peer_steps peer_warmup peer_precision")


def define_model_flags(batch_size_help, coco_dir_help, config_note="", checkpoint_help=None):
  """Defines --config, --batch_size (default 8), --mixed_precision, --coco_dir, --traceback and, with a
  checkpoint_help, --checkpoint; returns their FlagHolders as a ModelFlags (checkpoint None without).

  Call it after the repository is on sys.path (the --coco_dir default is ssd_tf.defaults.coco_sample_dir()),
  then flags.adopt_module_key_flags(harness) so that the script's --help lists these flags.
  """
  from ssd_tf import defaults  # pylint: disable=g-import-not-at-top
  config_help = " ".join(filter(None, ("Config file (configs/*.py); override fields with --config.a.b=value.",
                                       config_note)))
  return ModelFlags(
      config=flags.DEFINE_string("config", str(REPO / "configs" / "ssd300_resnet18_coco.py"), config_help),
      checkpoint=flags.DEFINE_string("checkpoint", None, checkpoint_help) if checkpoint_help else None,
      batch_size=flags.DEFINE_integer("batch_size", 8, batch_size_help),
      precision=flags.DEFINE_enum("mixed_precision", "float32", PRECISIONS, "Keras dtype policy."),
      coco_dir=flags.DEFINE_string("coco_dir", defaults.coco_sample_dir(), coco_dir_help),
      traceback=flags.DEFINE_bool("traceback", False, "Show the full traceback of an error."))


def define_timing_flags(warmup, steps, peer_steps, peer_warmup):
  """Defines --warmup, --steps, --peer_python, --peer_steps, --peer_warmup and --peer_precision; returns a
  TimingFlags.

  Each argument is the (default, help) pair of its flag; --peer_python is alike everywhere. Call
  flags.adopt_module_key_flags(harness) after it, as after define_model_flags.
  """
  return TimingFlags(
      warmup=flags.DEFINE_integer("warmup", *warmup),
      steps=flags.DEFINE_integer("steps", *steps),
      peer_python=flags.DEFINE_string("peer_python", "", "Python of the torch peer venv: run the peer too."),
      peer_steps=flags.DEFINE_integer("peer_steps", *peer_steps),
      peer_warmup=flags.DEFINE_integer("peer_warmup", *peer_warmup),
      peer_precision=flags.DEFINE_enum(
          "peer_precision", "same", ("same", "float32"),
          "same: the peer runs under torch.autocast in the --mixed_precision dtype (float32 when float32); "
          "float32: the peer's default, whatever --mixed_precision is."))


def peer_precision(timing, model):
  """The precision the peer runs in: --mixed_precision under --peer_precision=same, else float32."""
  return model.precision.value if timing.peer_precision.value == "same" else "float32"


def config_from_flags(model, argv, jit_compile=False):
  """The benchmarked config (see benchmark_config) of the ModelFlags; ValueError on stray arguments."""
  from ssd_tf import cli  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
  return benchmark_config(cli.load_config(model.config.value), model.batch_size.value, model.precision.value,
                          jit_compile)


def benchmark_config(config, batch_size, precision, jit_compile):
  """The config as benchmarked: random init (nothing downloaded), one device, the given batch, precision, XLA."""
  if batch_size < 1:
    raise ValueError(f"--batch_size must be at least 1, got {batch_size}")
  config.model.backbone_weights = None
  config.train.strategy = "default"
  config.train.batch_size = config.eval.batch_size = batch_size
  config.train.mixed_precision = precision
  config.train.jit_compile = jit_compile
  return config


def model_facts(ssd):
  """What identifies the measured SSD in a JSON line."""
  config, m = ssd.config, ssd.config.model
  return dict(config=config.name, backbone=m.backbone, backbone_taps=list(m.get("backbone_taps", ())),
              image_size=ssd.image_size, num_classes=ssd.num_classes,
              num_default_boxes=int(ssd.default_boxes.shape[0]))


def load_ssd(config, checkpoint=None):
  """The SSD of config under its dtype policy: random weights, or restored from a checkpoint prefix."""
  from ssd_tf.ssd import SSD  # pylint: disable=g-import-not-at-top
  ssd = SSD(config)
  if checkpoint:
    ssd.restore(checkpoint)
  return ssd


def prepare_coco(config, coco_dir, split, data_dir):
  """Converts a split of a COCO layout to TFRecords in data_dir and points config.data at them.

  Returns the prepare summary; a ValueError when the split's classes differ from config.model.num_classes.
  """
  from ssd_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from ssd_tf.data import prepare  # pylint: disable=g-import-not-at-top
  summary = prepare.prepare_split(coco_dir, split, data_dir, num_shards=4, num_workers=os.cpu_count() or 1,
                                  verbose=False)
  config.data.tfrecord_dir = data_dir
  num_classes = pipeline.label_map(config).num_classes
  if num_classes != config.model.num_classes:
    raise ValueError(f"config.model.num_classes={config.model.num_classes} but {coco_dir} {split} has "
                     f"{num_classes} categories")
  return summary


def time_calls(fn, warmup, steps):
  """Seconds of each of `steps` calls of fn() after `warmup` untimed ones.

  fn must return only once its work is done (TensorFlow's eager execution is synchronous
  by default: a tf.function call returns with its outputs computed).
  """
  if steps < 1 or warmup < 0:
    raise ValueError(f"--steps must be at least 1 and --warmup at least 0, got {steps} and {warmup}")
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def timing(times, batch_size):
  """Median and mean milliseconds per call, and images/s (images over total time, as the peer counts)."""
  return dict(ms_median=round(1e3 * statistics.median(times), 2), ms_mean=round(1e3 * statistics.mean(times), 2),
              images_per_s=round(batch_size * len(times) / sum(times), 3))


def forward_flops(model, image_size):
  """Floating point operations of one inference forward pass of one image, by TensorFlow's profiler.

  tf.compat.v1.profiler counts the ops of the traced graph that register FLOP statistics
  from their static shapes: Conv2D and MatMul as 2 per multiply-add (bias adds, BatchNorm
  and element-wise ops add well under 1% for these models); ops without statistics count 0.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  forward = tf.function(lambda images: model(images, training=False))
  graph = forward.get_concrete_function(tf.TensorSpec([1, image_size, image_size, 3], tf.float32)).graph
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def reproduced(reference, candidate, min_iou):
  """(how many reference detections have a candidate of the same class with IoU >= min_iou, how many
  there are). Each is a (boxes [n, 4] yxyx, classes [n]) pair."""
  (ref_boxes, ref_classes), (boxes, classes) = reference, candidate
  if not len(ref_boxes) or not len(boxes):
    return 0, len(ref_boxes)
  from ssd_tf import box_ops  # pylint: disable=g-import-not-at-top
  match = (box_ops.iou(ref_boxes, boxes).numpy() >= min_iou) & (ref_classes[:, None] == classes[None, :])
  return int(match.any(axis=1).sum()), len(ref_boxes)


def photos(coco_dir, count, height, width, split="val2017"):
  """uint8 [count, height, width, 3]: the first ``count`` JPEGs of <coco_dir>/<split> by name, decoded
  (ssd_tf.images.decode) and resized (bilinear, antialiased) to one size."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ssd_tf import images  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(coco_dir) / split
  paths = sorted(folder.glob("*.jpg"))[:count] if folder.is_dir() else []
  if len(paths) < count:
    raise FileNotFoundError(f"{folder} has {len(paths)} JPEGs, {count} are needed: point --coco_dir (or "
                            "COCO_TINY_DIR) at a COCO 2017 layout")
  decoded = [images.decode(tf.constant(p.read_bytes())) for p in paths]
  return np.stack([np.round(np.clip(tf.image.resize(tf.cast(d, tf.float32), [height, width], antialias=True),
                                    0, 255)).astype(np.uint8) for d in decoded])


def check_arguments(argv, *required):
  """ValueError on stray arguments or a required flag (absl FlagHolder) left empty."""
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
  for flag in required:
    if not flag.value:
      raise ValueError(f"--{flag.name} is required")


def read_pictures(folder, max_images=0):
  """uint8 [H, W, 3] RGB pictures of the files of ``folder``, sorted by name, the first ``max_images`` (0: all)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  paths = sorted(p for p in pathlib.Path(folder).iterdir() if p.is_file())[:max_images or None]
  return [np.asarray(Image.open(p).convert("RGB")) for p in paths]
