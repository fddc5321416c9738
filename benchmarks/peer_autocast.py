"""Runs the peer's torch_ssd_bench.py with its model under torch.autocast on the CPU.

What a PyTorch user does to train or serve in mixed precision: the model's forward pass (for
torchvision's SSD that includes the matcher, the loss and post-processing) runs inside
``torch.autocast("cpu", dtype)``; weights and optimizer stay float32. Runs in the peer's venv:

  $PEER_PYTHON benchmarks/peer_autocast.py bfloat16 <torch_ssd_bench.py arguments>

prints the peer's JSON line with "autocast": dtype added.
"""

import contextlib
import io
import json
import sys

from peer import PEER_DIR  # this script's folder is on sys.path; peer.py needs only the standard library


def main(argv):
  if len(argv) < 2 or argv[1] not in ("bfloat16", "float16"):
    raise SystemExit(f"usage: {argv[0]} bfloat16|float16 <torch_ssd_bench.py arguments>")
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(PEER_DIR))
  import torch_ssd_bench  # pylint: disable=g-import-not-at-top
  dtype = getattr(torch, argv[1])
  build = torch_ssd_bench.build

  def build_autocast(*args, **kwargs):
    model = build(*args, **kwargs)
    forward = model.forward

    def autocast_forward(*inputs, **options):
      with torch.autocast("cpu", dtype=dtype):
        return forward(*inputs, **options)

    model.forward = autocast_forward
    return model

  torch_ssd_bench.build = build_autocast
  sys.argv = [str(PEER_DIR / "torch_ssd_bench.py"), *argv[2:]]
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    torch_ssd_bench.main()
  print(json.dumps({**json.loads(stdout.getvalue().strip().splitlines()[-1]), "autocast": argv[1]}))


if __name__ == "__main__":
  main(sys.argv)
