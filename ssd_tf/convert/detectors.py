"""A published detector checkpoint -> an ssd_tf SSD: torchvision's SSD300-VGG16 and SSDLite320-MobileNetV3-Large,
NVIDIA's SSD300-ResNet50."""

import tensorflow as tf

from ssd_tf import run_dir
from ssd_tf.convert import nvidia_ssd
from ssd_tf.convert import pth
from ssd_tf.convert import torchvision_ssd
from ssd_tf.convert import torchvision_ssdlite
from ssd_tf.convert import weights
from ssd_tf.ssd import SSD

# Detector formats: (name, module, the backbone its config must have, the config describing it).
DETECTORS = (
    ("torchvision SSD300-VGG16", torchvision_ssd, "vgg16", "configs/ssd300_vgg16_torchvision.py"),
    ("NVIDIA SSD300-ResNet50", nvidia_ssd, "resnet50", "configs/ssd300_resnet50_nvidia.py"),
    ("torchvision SSDLite320-MobileNetV3-Large", torchvision_ssdlite, "mobilenet_v3_large",
     "configs/ssdlite320_mobilenet_v3_large_torchvision.py"),
)


def convert_detector(config, source):
  """(SSD of ``config`` with every weight from the detector checkpoint file ``source``, its LabelMap)."""
  return load_detector(config, pth.read_state_dict(source), source)


def load_detector(config, tensors, source="state dict"):
  """(SSD of ``config`` with every weight from ``tensors``, a detector's state dict {name: array},
  its LabelMap). The format is recognized from the keys; a state dict of another architecture,
  or a config that does not describe it, is a one-line ValueError naming ``source``."""
  state = weights.StateDict(tensors, source)
  for name, module, backbone, config_file in DETECTORS:
    if module.KEY in state:
      break
  else:
    raise ValueError(f"{source} is not a checkpoint of {' or '.join(d[0] for d in DETECTORS)} "
                     f"(its first entries: {state.first()})")
  if config.model.backbone != backbone:
    raise ValueError(f"{source} is a {name} checkpoint but the config has model.backbone="
                     f"{config.model.backbone!r}: convert it with --config={config_file}")
  label_map = module.label_map()
  if config.model.num_classes != label_map.num_classes:
    raise ValueError(f"{source} is a {name} checkpoint with {label_map.num_classes} classes but the "
                     f"config has model.num_classes={config.model.num_classes}: use --config={config_file}")
  ssd = SSD(config)
  module.load(ssd, state)
  return ssd, label_map


def write_run(workdir, config, ssd, label_map):
  """Writes a run directory of a converted SSD: config.json, label_map.json, checkpoints/ckpt-0;
  returns the checkpoint path (training from it starts at step 0, as from init_from)."""
  run = run_dir.RunDir(workdir)
  run.write(config, label_map)
  return tf.train.CheckpointManager(ssd.checkpoint(), run.checkpoints,
                                    max_to_keep=1).save(checkpoint_number=0)
