"""Runs the peer's torch_ssd_bench.py with its model under torch.autocast on the CPU.

What a PyTorch user does to train or serve in mixed precision: the model's forward pass (for
torchvision's SSD that includes the matcher, the loss and post-processing) runs inside
``torch.autocast("cpu", dtype)``; weights and optimizer stay float32. Runs in the peer's venv:

  $PEER_PYTHON benchmarks/peer_autocast.py bfloat16 <torch_ssd_bench.py arguments>

prints the peer's JSON line with "autocast": dtype added. ``run`` also serves peer_ssdlite.py,
which times another torchvision model with the peer's own timing code.
"""

import contextlib
import io
import json
import sys

from peer import PEER_DIR  # this script's folder is on sys.path; peer.py needs only the standard library


def run(dtype_name, arguments, build=None, size=None, extra=None):
  """torch_ssd_bench.main() on ``arguments`` under autocast ``dtype_name`` ("float32": none), with its
  model builder replaced by ``build(num_classes, score_thresh)`` and its image side by ``size`` when
  given; prints its JSON line with ``extra`` added."""
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(PEER_DIR))
  import torch_ssd_bench  # pylint: disable=g-import-not-at-top
  peer_build = torch_ssd_bench.build
  if size:
    torch_ssd_bench.SIZE = size

  def build_model(name, num_classes, score_thresh):
    model = build(num_classes, score_thresh) if build else peer_build(name, num_classes, score_thresh)
    if dtype_name == "float32":
      return model
    forward = model.forward

    def autocast_forward(*inputs, **options):
      with torch.autocast("cpu", dtype=getattr(torch, dtype_name)):
        return forward(*inputs, **options)

    model.forward = autocast_forward
    return model

  torch_ssd_bench.build = build_model
  sys.argv = [str(PEER_DIR / "torch_ssd_bench.py"), *arguments]
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    torch_ssd_bench.main()
  print(json.dumps({**json.loads(stdout.getvalue().strip().splitlines()[-1]), **(extra or {})}))


def main(argv):
  if len(argv) < 2 or argv[1] not in ("bfloat16", "float16"):
    raise SystemExit(f"usage: {argv[0]} bfloat16|float16 <torch_ssd_bench.py arguments>")
  run(argv[1], argv[2:], extra={"autocast": argv[1]})


if __name__ == "__main__":
  main(sys.argv)
