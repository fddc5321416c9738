"""Times torchvision's ssdlite320_mobilenet_v3_large with the peer's torch_ssd_bench.py timing code.

torchvision's own SSDLite (weights=None, weights_backbone=None: random weights, the reduced tail, its
defaults: 320 x 320, score 0.001, NMS 0.55, 300 per class and per image) with 1 + C classes, on the
peer's random 320 x 320 batches (train: 1-10 random boxes per image), in its venv:

  $PEER_PYTHON benchmarks/peer_ssdlite.py float32|bfloat16|float16 --mode train|infer <torch_ssd_bench.py arguments>

bfloat16 / float16: under torch.autocast as peer_autocast.py. Prints the peer's JSON line with
"model": "ssdlite320_mobilenet_v3_large".
"""

import sys

import peer_autocast

SIZE = 320


def build(num_classes, score_thresh):
  from torchvision.models.detection import ssdlite320_mobilenet_v3_large  # pylint: disable=g-import-not-at-top
  return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes,
                                       score_thresh=score_thresh)


def main(argv):
  if len(argv) < 2 or argv[1] not in ("float32", "bfloat16", "float16"):
    raise SystemExit(f"usage: {argv[0]} float32|bfloat16|float16 <torch_ssd_bench.py arguments>")
  extra = {"model": "ssdlite320_mobilenet_v3_large", **({} if argv[1] == "float32" else {"autocast": argv[1]})}
  peer_autocast.run(argv[1], argv[2:], build=build, size=SIZE, extra=extra)


if __name__ == "__main__":
  main(sys.argv)
