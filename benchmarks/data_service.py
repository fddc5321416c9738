"""Training input through tf.data service: images/s of the augmenting pipeline in-process and read from
1 and from 2 local data worker processes, in one run, printed as one JSON line.

Prepares --split of a COCO 2017 layout (default: the COCO sample next to the repo) into a
temporary folder, then times ssd_tf.data.pipeline.train_dataset (SSD augmentation at
--image_size, batches of --batch) as input_pipeline.py does: in this process, then through
ssd_tf.data.service.train_dataset with a dispatcher and 1, then 2, data workers started as
separate processes (main.py --mode=data_service on 127.0.0.1). The data workers and this
process share the machine's cores: the figures say what the service costs and gains here,
not what workers on other machines add.

  python benchmarks/data_service.py
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile

import input_pipeline
import local_service
import machine

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def measure(args, workdir):
  """{"in_process": rates, "service_1_worker": rates, "service_2_workers": rates} and the split's size."""
  from ssd_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  from ssd_tf.data import service  # pylint: disable=g-import-not-at-top
  config, summary = input_pipeline.prepared_config(args.coco_dir, args.split, args.image_size, args.batch,
                                                   False, os.path.join(workdir, "records"))
  timed = dict(warmup=args.warmup, batches=args.batches, num_rounds=args.rounds, batch_size=args.batch)
  results = dict(in_process=input_pipeline.rounds(iter(pipeline.train_dataset(config)), **timed))
  for num_workers, name in ((1, "service_1_worker"), (2, "service_2_workers")):
    with local_service.cluster(tempfile.mkdtemp(dir=workdir), num_workers) as (address, _):
      config.data.service_address = address
      dataset = service.train_dataset(config, None, f"benchmark-{num_workers}")
      results[name] = input_pipeline.rounds(iter(dataset), **timed)
  return results, summary["images"]


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  input_pipeline.add_input_arguments(parser)
  args = parser.parse_args()

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  with tempfile.TemporaryDirectory() as workdir:
    results, images = measure(args, workdir)
  print(json.dumps(dict(
      bench="ssd_tf_data_service", augment="ssd", image_size=args.image_size, batch=args.batch,
      images_in_split=images, **results,
      service_2_workers_vs_in_process=round(results["service_2_workers"]["images_per_s"]
                                            / results["in_process"]["images_per_s"], 2),
      machine=machine.facts(xla=False))))


if __name__ == "__main__":
  main()
