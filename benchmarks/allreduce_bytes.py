"""Gradient all-reduce traffic of SSD configs, one JSON line each: trainable parameters, the bytes each
replica sends (and receives) per training step, and the link rate that takes at a given steps/s.

A ring all-reduce of G bytes over n replicas moves 2 (n - 1) / n * G bytes out of (and into) each
replica: a reduce-scatter, then an all-gather. NCCL's hierarchical all-reduce across machines puts about
the same volume on each machine's network link. G is 4 bytes per trainable parameter: gradients are
float32 under every train.mixed_precision (Keras keeps float32 variables). The loss normalizer and
synchronized BatchNorm statistics add a few KB per step and are left out.

  python benchmarks/allreduce_bytes.py --replicas=8 --steps_per_s=10
"""

import argparse
import importlib.util
import json
import pathlib
import sys

import machine

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CONFIGS = ("ssd300_resnet18_coco", "ssd300_resnet50_coco", "ssd512_resnet50_coco", "ssd300_vgg16_coco")


def traffic(config_name, replicas, steps_per_s):
  """The JSON fields of one config (random weights: only the shapes matter)."""
  from ssd_tf.ssd import SSD  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(config_name, REPO / "configs" / f"{config_name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.model.backbone_weights = None
  parameters = sum(int(v.shape.num_elements()) for v in SSD(config).network.trainable_variables)
  gradient_bytes = 4 * parameters
  per_step = 2 * (replicas - 1) / replicas * gradient_bytes
  return dict(bench="ssd_tf_allreduce_bytes", config=config_name, trainable_parameters=parameters,
              gradient_mib=round(gradient_bytes / 2**20, 1), replicas=replicas,
              bytes_per_replica_per_step=round(per_step), steps_per_s=steps_per_s,
              gbit_per_s_per_replica=round(8 * per_step * steps_per_s / 1e9, 2))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names in configs/")
  parser.add_argument("--replicas", type=int, default=8)
  parser.add_argument("--steps_per_s", type=float, default=10.0)
  args = parser.parse_args()
  for name in args.configs.split(","):
    print(json.dumps(dict(traffic(name, args.replicas, args.steps_per_s), machine=machine.facts(False))),
          flush=True)


if __name__ == "__main__":
  main()
