"""Pieces shared by the backbones: input normalization, layer-by-layer weight copies, the ImageNet download."""

import os

import keras
import numpy as np

# ImageNet statistics of RGB images, as fractions of 255 (torchvision).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
# keras.applications 'caffe' preprocessing: BGR channels minus these means (pixels).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# torchvision's SSD300-VGG16 (detection transform): RGB in [0, 1] minus these, divided by 1/255.
SSD_VGG16_MEAN_RGB = (0.48235, 0.45882, 0.40784)

# He (Kaiming) normal, fan_out, as torchvision initializes its conv nets. A config, not an
# instance: each layer deserializes its own initializer with its own seed (drawn from Python's
# `random`), whereas one shared instance gives every kernel of a shape the same values.
CONV_INIT = {"class_name": "VarianceScaling",
             "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}


@keras.saving.register_keras_serializable(package="ssd_tf")
class ImageNormalization(keras.layers.Layer):
  """RGB images in [0, 255] [..., 3] -> (x[..., order] - mean) / std, order RGB or BGR.

  ``mean`` and ``std`` are in pixels and in the output channel order.
  """

  def __init__(self, mean, std, bgr=False, **kwargs):
    super().__init__(**kwargs)
    self.mean = tuple(float(m) for m in mean)
    self.std = tuple(float(s) for s in std)
    self.bgr = bool(bgr)

  def call(self, images):
    if self.bgr:
      images = keras.ops.flip(images, axis=-1)
    mean = keras.ops.convert_to_tensor(self.mean, dtype=images.dtype)
    std = keras.ops.convert_to_tensor(self.std, dtype=images.dtype)
    return (images - mean) / std

  def get_config(self):
    return {**super().get_config(), "mean": self.mean, "std": self.std, "bgr": self.bgr}


def torch_normalization(name="torch_normalization"):
  """(x / 255 - mean) / std on RGB, the torchvision ImageNet preprocessing."""
  return ImageNormalization([255.0 * m for m in IMAGENET_MEAN_RGB], [255.0 * s for s in IMAGENET_STD_RGB],
                            name=name)


def caffe_normalization(name="caffe_normalization"):
  """RGB -> BGR minus the ImageNet mean, keras.applications' 'caffe' mode (ResNet50/101, VGG16)."""
  return ImageNormalization(CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), bgr=True, name=name)


def rgb_mean_normalization(name="rgb_mean_normalization"):
  """RGB minus torchvision SSD300-VGG16's mean pixel (123.0, 117.0, 104.0), unscaled."""
  return ImageNormalization([255.0 * m for m in SSD_VGG16_MEAN_RGB], (1.0, 1.0, 1.0), name=name)


def tf_normalization(name="tf_normalization"):
  """RGB to [-1, 1]: x / 127.5 - 1, keras.applications' 'tf' mode (torchvision's SSDLite: mean = std = 0.5)."""
  return ImageNormalization((127.5, 127.5, 127.5), (127.5, 127.5, 127.5), name=name)


NORMALIZATIONS = {"caffe": caffe_normalization, "torch": torch_normalization, "rgb_mean": rgb_mean_normalization,
                  "tf": tf_normalization}


def weighted_layer_names(model):
  """Names of the layers of ``model`` that hold weights, in model order."""
  return [layer.name for layer in model.layers if layer.weights]


def copy_layer_weights(target, source, names):
  """Sets each layer ``names`` of ``target`` to the weights of the same-named layer of ``source``.

  Raises ValueError naming the first layer that ``source`` lacks or whose weight shapes differ.
  """
  source_names = {layer.name for layer in source.layers}
  for name in names:
    if name not in source_names:
      raise ValueError(f"layer {name!r} of {target.name} not found in {source.name}")
    values = source.get_layer(name).get_weights()
    layer = target.get_layer(name)
    expected = [tuple(w.shape) for w in layer.weights]
    if [np.shape(v) for v in values] != expected:
      raise ValueError(f"layer {name!r}: {source.name} has weight shapes {[np.shape(v) for v in values]}, "
                       f"{target.name} needs {expected}")
    layer.set_weights(values)


def download_imagenet_file(name, url, md5):
  """keras.applications' ImageNet file ``name`` from ``url``: downloaded once into the Keras cache
  (``<KERAS_HOME or ~/.keras>/models``) and hash-checked, as keras.applications does; returns its path.

  A failed download (no network access) is an OSError saying where to put the file instead.
  """
  try:
    return keras.utils.get_file(name, url, cache_subdir="models", file_hash=md5)
  except Exception as error:  # pylint: disable=broad-except  (get_file raises a bare Exception for URL errors)
    folder = os.path.join(keras.src.backend.config.keras_home(), "models")  # where get_file looks first
    reason = " ".join(str(error).split(" -- ")[-1].split()) or type(error).__name__  # "URL fetch failure on ... -- "
    raise OSError(f"model.backbone_weights='imagenet' downloads {url}, which failed ({reason}); without network "
                  f"access, fetch that file on another machine and copy it to {os.path.join(folder, name)}, "
                  f"where it is found (hash-checked) instead of downloaded") from None
