r"""How much a training recipe depends on its seed: one config trained over N seeds, JSON out.

  python benchmarks/seeds.py --config=configs/coco_tiny_overfit.py --seeds=0,1,2,3,4 --root=/tmp/seeds
  python benchmarks/seeds.py --config=configs/quickstart.py --seeds=0,1,2 --config.train.warmup_steps=200

Every seed is a fresh `main.py --mode=train_and_eval` process in <root>/seed-<s> with
--config.seed=<s> and --config.data.deterministic=True: the initial weights and the data order
(shuffles and augmentation) vary with the seed, and a run of the same seed repeats. The data is made
once and shared: the config's data.coco_dir prepared into <root>/tfrecords (configs without one, the
quickstart's, first write their synthetic dataset to <root>/synthetic: the same images for every
seed). --config.<field>=<value> overrides go to every run. A run directory that already holds a
metrics.json is read, not trained again.

Per run: wall time of the training process (training and the final evaluation), AP, AP50, AP75, the
final logged loss and the loss curve (train.log_every means) with the gradient norm and learning
rate, read from the run's TensorBoard events. Then the spread over seeds (min, median, max, standard
deviation) of AP, AP50, the final loss and the wall time. One JSON line on stdout (and --output); the runs' output
goes to <root>/seed-<s>.log.
"""

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import machine  # pylint: disable=g-import-not-at-top,wrong-import-position
from ssd_tf import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = flags.DEFINE_string("config", str(REPO / "configs" / "quickstart.py"), "Config file (configs/*.py).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "config.seed of each run.")
_ROOT = flags.DEFINE_string("root", None, "Folder for the shared data and the runs (default: a new temp folder).")
_OUTPUT = flags.DEFINE_string("output", None, "Also append the JSON line to this file.")
_CURVE = flags.DEFINE_bool("curve", True, "Include each run's logged loss / gradient norm / lr per step.")

MAIN = str(REPO / "main.py")
SUMMARIES = {"loss/loss": "loss", "loss/cls_loss": "cls_loss", "loss/loc_loss": "loc_loss",
             "gradient_norm": "grad_norm", "learning_rate": "lr"}


def _main_py(args, log_path):
  """Runs main.py with args, its output appended to log_path; RuntimeError naming the log on failure."""
  with open(log_path, "a") as log:
    log.write(f"$ python main.py {' '.join(args)}\n")
    log.flush()
    code = subprocess.call([sys.executable, MAIN, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  if code:
    tail = pathlib.Path(log_path).read_text().strip().splitlines()[-1:]
    raise RuntimeError(f"main.py {args[0]} failed (exit {code}), see {log_path}: {' '.join(tail)}")


def shared_data(config, config_flag, overrides, root):
  """The data flags every run gets: TFRecords prepared once in root (synthetic data written first when
  the config has no data.coco_dir)."""
  from ssd_tf.data import records  # pylint: disable=g-import-not-at-top
  tfrecord_dir = os.path.join(root, "tfrecords")
  data = [f"--config.data.tfrecord_dir={tfrecord_dir}"]
  if not config.data.coco_dir:
    data.append(f"--config.data.coco_dir={os.path.join(root, 'synthetic')}")
  splits = sorted({config.data.train_split, config.data.eval_split})
  if not all(os.path.isfile(records.summary_path(tfrecord_dir, s)) for s in splits):
    log = os.path.join(root, "data.log")
    if not config.data.coco_dir:
      _main_py(["--mode=synthetic", config_flag, *data, *overrides], log)
    _main_py(["--mode=prepare", config_flag, *data, *overrides], log)
  return data


def read_curve(train_dir):
  """{step: {"loss", "cls_loss", "loc_loss", "grad_norm", "lr"}} from the TensorBoard events in train_dir."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  curve = {}
  for path in sorted(pathlib.Path(train_dir).glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag in SUMMARIES:
          number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
          curve.setdefault(int(event.step), {})[SUMMARIES[value.tag]] = round(number, 5)
  return dict(sorted(curve.items()))


def run_seed(seed, config_flag, data, overrides, root):
  """One seed's figures (trains it unless its run directory already holds metrics.json)."""
  workdir = os.path.join(root, f"seed-{seed}")
  metrics_path = os.path.join(workdir, "metrics.json")
  seconds = None
  if not os.path.isfile(metrics_path):
    start = time.monotonic()
    _main_py(["--mode=train_and_eval", config_flag, f"--workdir={workdir}", f"--config.seed={seed}",
              "--config.data.deterministic=True", *data, *overrides], os.path.join(root, f"seed-{seed}.log"))
    seconds = round(time.monotonic() - start, 1)
  with open(metrics_path) as f:
    metrics = json.load(f)
  curve = read_curve(os.path.join(workdir, "train"))
  losses = [point["loss"] for point in curve.values() if "loss" in point]
  return dict(seed=int(seed), workdir=workdir, seconds=seconds,
              **{k: round(metrics[k], 4) for k in ("AP", "AP50", "AP75")},
              final_loss=losses[-1] if losses else None, max_loss=max(losses) if losses else None,
              curve={str(step): point for step, point in curve.items()})


def spread(values):
  values = [v for v in values if v is not None]
  if not values:
    return None
  return dict(min=min(values), median=round(statistics.median(values), 5), max=max(values),
              std=round(statistics.pstdev(values), 4), n=len(values))


def main(argv):
  with cli.user_errors(False):
    if len(argv) > 1:
      raise ValueError(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
    cli.import_tensorflow()  # TensorFlow's C++ log lines off the terminal, as in main.py
    overrides = cli.config_overrides()
    config = cli.load_config(_CONFIG.value)
    root = os.path.abspath(_ROOT.value or tempfile.mkdtemp(prefix="seeds-"))
    os.makedirs(root, exist_ok=True)
    config_flag = f"--config={os.path.abspath(_CONFIG.value)}"
    data = shared_data(config, config_flag, overrides, root)
    runs = []
    for seed in _SEEDS.value:
      runs.append(run_seed(seed, config_flag, data, overrides, root))
      print(f"seed {seed}: AP {runs[-1]['AP']:.3f}  AP50 {runs[-1]['AP50']:.3f}  final loss "
            f"{runs[-1]['final_loss']}  {runs[-1]['seconds']} s", file=sys.stderr, flush=True)
    if not _CURVE.value:
      for run in runs:
        del run["curve"]
    record = dict(benchmark="seeds", config=config.name, config_file=_CONFIG.value, overrides=overrides,
                  root=root, runs=runs, spread={key: spread([r[key] for r in runs])
                                                for key in ("AP", "AP50", "final_loss", "seconds")},
                  machine=machine.facts(xla=bool(config.train.jit_compile)))
    line = json.dumps(record)
    print(line, flush=True)
    if _OUTPUT.value:
      with open(_OUTPUT.value, "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
