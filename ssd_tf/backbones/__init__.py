"""Backbone registry: a name -> the feature-tap model and the input normalization it expects.

| name | variant (model.backbone_variant) | taps (300 px input) | normalization | ImageNet weights |
| --- | --- | --- | --- | --- |
| resnet18, resnet34 | "torchvision" (the only one) | conv4: 38x38x256 | torch mean/std | torchvision .pth |
| resnet50, resnet101 | "keras" (default): v1 | conv4: 38x38x1024 | caffe (BGR - mean) | "imagenet" |
| resnet50, resnet101 | "torchvision": v1.5 | conv4: 38x38x1024 | torch mean/std | torchvision .pth |
| vgg16 | "" only | conv4_3 (L2-normalized): 38x38x512, conv7: 19x19x1024 | caffe | "imagenet" |
| mobilenet_v3_large | "" (ImageNet) or "reduced_tail" | 320 px: block 13 expansion 20x20x672, last conv 10x10x960 (480) | torch mean/std | torchvision .pth |

"imagenet": keras.applications' ResNet50/101 or VGG16 (downloaded); torchvision .pth: a file of
torchvision's ImageNet ResNets or MobileNetV3-Large (``ssd_tf.convert``; reading it needs torch).

ResNets can also tap ("conv3", "conv4"): 38x38x128 and 19x19x256 (ResNet-18/34),
38x38x512 and 19x19x1024 (ResNet-50/101); see ``resnet.TAPS``.
"""

import os
from typing import NamedTuple

import keras
from absl import logging

from ssd_tf.backbones import mobilenet, resnet, vgg
from ssd_tf.convert import pth, torchvision_mobilenet, torchvision_resnet

NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "vgg16", "mobilenet_v3_large")


class Backbone(NamedTuple):
  """``model``: normalized images [B, H, W, 3] -> list of feature taps [B, h, w, c], finest first.
  ``normalization``: a layer mapping RGB images in [0, 255] to ``model``'s input.
  """
  model: keras.Model
  normalization: keras.layers.Layer

  def taps(self, images):
    """RGB images in [0, 255] [B, H, W, 3] -> list of taps (also for one tap: Keras returns a
    one-output model's eager result as a bare tensor, its symbolic result as a list)."""
    return keras.tree.flatten(self.model(self.normalization(images)))


def build_backbone(name, weights=None, batchnorm_momentum=0.99, batchnorm_synchronized=False, taps=None,
                   variant=""):
  """Builds backbone ``name`` (one of NAMES).

  ``taps``: the stages that feed the detector, finest first; None: the backbone's
  default (the table above). Only the ResNets offer a choice (``resnet.TAPS``).

  ``variant``: "" (the backbone's default) or, for the ResNets, "keras" or
  "torchvision" (``resnet.VARIANTS``), for MobileNetV3 "reduced_tail" (the table above).

  ``weights``: None or "" (random initialization), "imagenet" (keras.applications
  download; resnet50, resnet101 of variant "keras", vgg16), the path of a torchvision
  ResNet ``.pth`` / ``.pt`` file (variant "torchvision"; reading it needs torch) or of a
  ``.weights.h5`` file saved with ``build_backbone(name, variant=...).model.save_weights(path)``;
  for mobilenet_v3_large a torchvision ``.pth`` file (variant "") but not "imagenet".
  The BatchNorm arguments apply to the ResNets and MobileNetV3 (VGG-16 has no BatchNorm).
  """
  if name == "vgg16":
    if taps and tuple(taps) != vgg.TAPS:
      raise ValueError(f"vgg16 taps are fixed to {vgg.TAPS}, got {tuple(taps)}")
    if variant:
      raise ValueError(f"vgg16 has a single variant: model.backbone_variant must be '', got {variant!r}")
    model, normalization = vgg.build_vgg16(), vgg.normalization()
  elif name == "mobilenet_v3_large":
    if taps:
      raise ValueError(f"mobilenet_v3_large taps are fixed (block 13's expansion, the last conv), got {tuple(taps)}")
    model = mobilenet.build_mobilenet_v3_large(variant, batchnorm_momentum, batchnorm_synchronized)
    normalization = mobilenet.normalization()
  elif name in NAMES:
    depth = int(name[len("resnet"):])
    variant = resnet.resolve_variant(depth, variant)
    model = resnet.build_resnet(depth, taps=taps or resnet.TAPS[0], batchnorm_momentum=batchnorm_momentum,
                                batchnorm_synchronized=batchnorm_synchronized, variant=variant)
    normalization = resnet.normalization(depth, variant)
  else:
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(NAMES)}")

  if weights == "imagenet":
    if name == "mobilenet_v3_large":
      raise ValueError("mobilenet_v3_large takes torchvision's ImageNet file (mobilenet_v3_large-8738ca79.pth, "
                       "model.backbone_variant='') as model.backbone_weights, not 'imagenet'")
    if name == "vgg16":
      vgg.load_imagenet_weights(model)
    else:
      resnet.load_imagenet_weights(model, depth, variant)
  elif weights and os.fspath(weights).endswith((".pth", ".pt")):
    _load_torchvision_file(name, model, variant, os.fspath(weights))
  elif weights:
    _load_weights_file(model, os.fspath(weights))
  return Backbone(model, normalization)


def _load_torchvision_file(name, model, variant, path):
  if name == "vgg16":
    raise ValueError(f"{path}: vgg16 takes no PyTorch weights (only the torchvision ResNets and MobileNetV3 "
                     f"convert); use 'imagenet' or a .weights.h5 file")
  if name == "mobilenet_v3_large":
    unused = torchvision_mobilenet.load_mobilenet(model, pth.read_state_dict(path), source=path)
    logging.info("%s: %d classifier entries unused (SSDLite stops at the last conv)", path, len(unused))
    return
  if variant != "torchvision":
    raise ValueError(f"{path} holds torchvision ResNet weights: set model.backbone_variant='torchvision' "
                     f"for {name} (variant '{variant}' is keras.applications' ResNet)")
  unused = torchvision_resnet.load_resnet(model, pth.read_state_dict(path), int(name[len("resnet"):]), source=path)
  if unused:
    logging.info("%s: %d entries unused (the SSD backbone stops after layer3): %s", path, len(unused),
                 ", ".join(f"{prefix}* ({sum(key.startswith(prefix) for key in unused)})"
                           for prefix in torchvision_resnet.UNUSED_PREFIXES))


def _load_weights_file(model, path):
  if not os.path.isfile(path):
    raise FileNotFoundError(f"backbone weights file {path} not found (backbone_weights takes None, "
                            f"'imagenet', a torchvision .pth file or a .weights.h5 file saved from "
                            f"build_backbone('{model.name}').model)")
  try:
    model.load_weights(path)
  except ValueError as e:  # Keras lists every layer that failed: keep its summary
    summary = " ".join(str(e).split("\n\n")[:2])
    raise ValueError(f"{path}: cannot load these weights into backbone {model.name}: {summary}") from e
