"""Running the torchvision peer (its own venv and scripts, outside this repository) from a benchmark.

The peer's scripts (torch_ssd_bench.py, torch_pipeline_bench.py) live in $PEER_DIR, by default
the team's peer folder beside the checkout; --peer_python is the python of its torch venv.
"""

import json
import os
import pathlib
import subprocess

PEER_DIR = pathlib.Path(os.environ.get(
    "PEER_DIR", pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "peer"))

# (backbone, image size) -> the peer's model of the same design (its README).
SSD_MODELS = {("vgg16", 300): "ssd300_vgg16", ("resnet18", 300): "ssd300_resnet18",
              ("resnet50", 300): "ssd300_resnet50", ("mobilenet_v3_large", 320): "ssdlite320_mobilenet_v3_large"}
# Models torch_ssd_bench.py does not build: timed by its code through a script of benchmarks/.
SCRIPTS = {"ssdlite320_mobilenet_v3_large": "peer_ssdlite.py"}
# Our Keras dtype policy -> the peer's torch.autocast dtype (None: no autocast).
AUTOCAST_DTYPES = {"float32": None, "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def run_json(command):
  """Runs a peer command; its last stdout line parsed as JSON."""
  result = subprocess.run([str(part) for part in command], capture_output=True, text=True, check=False)
  if result.returncode:
    raise RuntimeError(f"peer benchmark failed ({' '.join(map(str, command))}):\n{result.stderr[-2000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def ssd_model(config):
  """The peer model matching config.model (backbone, image size); ValueError when it has none."""
  key = (config.model.backbone, int(config.model.image_size))
  if key not in SSD_MODELS:
    raise ValueError(f"the peer has no SSD for backbone {key[0]} at {key[1]} px (it has "
                     f"{', '.join(SSD_MODELS.values())}): drop --peer_python for this config")
  return SSD_MODELS[key]


def run_ssd_bench(peer_python, config, mode, batch, steps, warmup, score_threshold=0.01, precision="float32"):
  """torch_ssd_bench.py --mode train|infer for the matching model, with 1 + C classes like ours.

  precision: float32 (the peer as shipped), or mixed_bfloat16 / mixed_float16: its model under
  torch.autocast in that dtype (peer_autocast.py).
  """
  if precision not in AUTOCAST_DTYPES:
    raise ValueError(f"precision must be one of {', '.join(AUTOCAST_DTYPES)}, got {precision!r}")
  model, here = ssd_model(config), pathlib.Path(__file__).resolve().parent
  if model in SCRIPTS:  # its script takes the dtype first, then the peer's arguments (--model is ignored)
    script, model = [here / SCRIPTS[model], AUTOCAST_DTYPES[precision] or "float32"], "ssd300_vgg16"
  elif precision == "float32":
    script = [PEER_DIR / "torch_ssd_bench.py"]
  else:
    script = [here / "peer_autocast.py", AUTOCAST_DTYPES[precision]]
  return run_json([peer_python, *script, "--model", model,
                   "--mode", mode, "--batch", batch, "--steps", steps, "--warmup", warmup,
                   "--num-classes", config.model.num_classes + 1, "--score-thresh", score_threshold])
