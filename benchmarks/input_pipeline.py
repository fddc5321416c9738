"""Training input pipeline throughput: images/s with the full SSD augmentation, printed as one JSON line.

Prepares --split of a COCO 2017 layout (default: the COCO sample next to the repo) into a
temporary folder, then times ssd_tf.data.pipeline.train_dataset (interleave, shuffle, decode,
photometric distortion, expand, IoU crop, flip, resize, pad, batch, prefetch; endless) at
--image_size after --warmup batches, in --rounds rounds of --batches batches (the median is
reported). The same images repeat, as in the peer's epochs. With --peer_python, torchvision's SSD
transforms ($PEER_DIR/torch_pipeline_bench.py, 2 DataLoader workers) run right after, in the
same sitting, and the ratio is reported.

  python benchmarks/input_pipeline.py --peer_python=/tmp/peer/venv/bin/python
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import machine
import peer

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from ssd_tf import defaults  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def rate(iterator, batches, batch_size):
  """Images/s of reading ``batches`` batches of ``batch_size`` from iterator."""
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def rounds(iterator, batch_size, warmup, batches, num_rounds):
  """dict(images_per_s: the median of num_rounds rounds of ``batches`` batches after ``warmup``,
  rounds_images_per_s)."""
  rate(iterator, warmup, batch_size)
  rates = [rate(iterator, batches, batch_size) for _ in range(num_rounds)]
  return dict(images_per_s=round(statistics.median(rates), 2),
              rounds_images_per_s=[round(r, 2) for r in rates])


def prepared_config(coco_dir, split, image_size, batch_size, deterministic, workdir):
  """(base config reading ``split`` prepared into workdir at image_size, the prepare summary)."""
  from ssd_tf.data import prepare  # pylint: disable=g-import-not-at-top
  summary = prepare.prepare_split(coco_dir, split, workdir, num_shards=4, num_workers=os.cpu_count() or 1,
                                  verbose=False)
  config = defaults.base_config()
  config.model.image_size = image_size
  config.data.tfrecord_dir = workdir
  config.data.train_split = config.data.eval_split = split
  config.data.deterministic = deterministic
  config.train.batch_size = config.eval.batch_size = batch_size
  return config, summary


def measure(coco_dir, split, image_size, batch_size, warmup, batches, num_rounds, deterministic, workdir):
  """Prepares the split into workdir and times the training and evaluation pipelines."""
  from ssd_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  config, summary = prepared_config(coco_dir, split, image_size, batch_size, deterministic, workdir)
  train = rounds(iter(pipeline.train_dataset(config)), batch_size, warmup, batches, num_rounds)
  resize_only = iter(pipeline.eval_dataset(config).repeat())
  rate(resize_only, warmup, batch_size)
  return dict(**train, decode_resize_images_per_s=round(rate(resize_only, batches, batch_size), 2),
              images_in_split=summary["images"])


def run_peer(peer_python, coco_dir, split, batch_size, epochs):
  """torchvision's SSD transforms with a 2-worker DataLoader; its JSON line as a dict."""
  return peer.run_json([peer_python, peer.PEER_DIR / "torch_pipeline_bench.py", "--root", coco_dir,
                       "--split", split, "--workers", "2", "--batch", batch_size, "--epochs", epochs])


def add_input_arguments(parser):
  """The flags of what is timed: data, input size, batch, warm-up and timed batches and rounds."""
  parser.add_argument("--coco_dir", default=defaults.coco_sample_dir())
  parser.add_argument("--split", default="train2017")
  parser.add_argument("--image_size", type=int, default=300)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--warmup", type=int, default=20, help="batches before timing")
  parser.add_argument("--batches", type=int, default=100, help="batches per timed round")
  parser.add_argument("--rounds", type=int, default=3)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_input_arguments(parser)
  parser.add_argument("--deterministic", action="store_true", help="config.data.deterministic=True")
  parser.add_argument("--peer_python", default="", help="python of the torch peer venv: run it too")
  parser.add_argument("--peer_epochs", type=int, default=10)
  args = parser.parse_args()

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with tempfile.TemporaryDirectory() as workdir:
    ours = measure(args.coco_dir, args.split, args.image_size, args.batch, args.warmup, args.batches,
                   args.rounds, args.deterministic, workdir)
  report = dict(
      bench="ssd_tf_input_pipeline", augment="ssd", image_size=args.image_size, batch=args.batch,
      deterministic=args.deterministic, **ours, machine=machine.facts(xla=False))
  if args.peer_python:
    theirs = run_peer(args.peer_python, args.coco_dir, args.split, args.batch, args.peer_epochs)
    report["peer"] = theirs
    report["speedup_vs_peer"] = round(ours["images_per_s"] / theirs["images_per_s"], 2)
  print(json.dumps(report))


if __name__ == "__main__":
  main()
