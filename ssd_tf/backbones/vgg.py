"""VGG-16 as the SSD paper modifies it.

conv1_1..conv5_3 (Keras names ``block{b}_conv{i}``, so keras.applications.VGG16
weights copy by name); 2x2 stride-2 pools with "same" padding, which equals
Caffe's ceil-mode pooling (300 -> 150 -> 75 -> 38 -> 19); pool5 3x3 stride 1;
conv6 3x3 dilation 6 and conv7 1x1, both 1024 channels, in place of fc6/fc7.
Taps: conv4_3 through an L2Normalization with a learnable per-channel scale
initialized to 20 (38x38x512 at 300 px), and conv7 (19x19x1024).
Input normalization: keras.applications' 'caffe' mode.
"""

import functools

import keras
import numpy as np

from ssd_tf.backbones import layers

# (convs, channels) of blocks 1..5.
_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
TAPS = ("conv4_3", "conv7")
# keras.applications' ImageNet file with the top, as keras/src/applications/vgg16.py names and hashes it.
IMAGENET_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
IMAGENET_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/vgg16/{IMAGENET_FILE}"
IMAGENET_MD5 = "64373286793e3c8b2b4e3219cbf3544b"
CONV_LAYERS = tuple(f"block{b}_conv{i}" for b, (convs, _) in enumerate(_BLOCKS, start=1)
                    for i in range(1, convs + 1))


@keras.saving.register_keras_serializable(package="ssd_tf")
class L2Normalization(keras.layers.Layer):
  """[..., C] -> x / ||x||_2 (over channels) * scale[C], scale learnable, initialized to ``initial_scale``.

  Computes in float32 whatever the dtype policy (a float16 sum of squares overflows).
  """

  def __init__(self, initial_scale=20.0, epsilon=1e-12, **kwargs):
    super().__init__(**kwargs)
    self.initial_scale = float(initial_scale)
    self.epsilon = float(epsilon)

  def build(self, input_shape):
    self.scale = self.add_weight(shape=(input_shape[-1],), name="scale",
                                 initializer=keras.initializers.Constant(self.initial_scale))

  def call(self, x):
    x32 = keras.ops.cast(x, "float32")
    squared_norm = keras.ops.sum(keras.ops.square(x32), axis=-1, keepdims=True)
    y = x32 * keras.ops.rsqrt(keras.ops.maximum(squared_norm, self.epsilon))
    return keras.ops.cast(y * keras.ops.cast(self.scale, "float32"), self.compute_dtype)

  def get_config(self):
    return {**super().get_config(), "initial_scale": self.initial_scale, "epsilon": self.epsilon}


def build_vgg16():
  """SSD's VGG-16 as a Keras model named ``vgg16``.

  Input: images [B, H, W, 3] normalized by ``normalization()``.
  Output: [conv4_3 L2-normalized [B, ceil(H/8), ceil(W/8), 512], conv7 [B, ceil(H/16), ceil(W/16), 1024]].
  """
  conv = functools.partial(keras.layers.Conv2D, padding="same", activation="relu",
                           kernel_initializer=layers.CONV_INIT)
  images = keras.Input((None, None, 3), name="normalized_images")
  x = images
  for b, (convs, channels) in enumerate(_BLOCKS, start=1):
    for i in range(1, convs + 1):
      x = conv(channels, 3, name=f"block{b}_conv{i}")(x)
    if b == 4:
      conv4_3 = L2Normalization(name="conv4_3_norm")(x)
    if b < 5:
      x = keras.layers.MaxPooling2D(2, strides=2, padding="same", name=f"block{b}_pool")(x)
    else:
      x = keras.layers.MaxPooling2D(3, strides=1, padding="same", name="block5_pool")(x)
  x = conv(1024, 3, dilation_rate=6, name="conv6")(x)
  conv7 = conv(1024, 1, name="conv7")(x)
  return keras.Model(images, [conv4_3, conv7], name="vgg16")


def normalization():
  """The input normalization layer keras.applications' VGG16 weights expect (RGB [0, 255] in)."""
  return layers.caffe_normalization()


def copy_keras_applications_weights(model, source):
  """Copies a keras.applications VGG16 ``source`` into ``model``; returns the names of the layers set.

  conv1_1..conv5_3 copy by name. When ``source`` has its classifier top, conv6 and
  conv7 are initialized as in the SSD paper by subsampling fc6 (``fc1``) and fc7
  (``fc2``): fc6's 7x7x512x4096 kernel takes every 3rd row and column and every
  4th output (3x3x512x1024), fc7 every 4th input and output (1x1x1024x1024).
  """
  layers.copy_layer_weights(model, source, CONV_LAYERS)
  names = list(CONV_LAYERS)
  source_names = {layer.name for layer in source.layers}
  if {"fc1", "fc2"} <= source_names:
    fc6_kernel, fc6_bias = source.get_layer("fc1").get_weights()
    fc7_kernel, fc7_bias = source.get_layer("fc2").get_weights()
    fc6_kernel = np.reshape(fc6_kernel, (7, 7, 512, -1))  # Flatten order of a [7, 7, 512] map
    model.get_layer("conv6").set_weights([fc6_kernel[::3, ::3, :, ::4], fc6_bias[::4]])
    model.get_layer("conv7").set_weights([fc7_kernel[::4, ::4][None, None], fc7_bias[::4]])
    names += ["conv6", "conv7"]
  return names


def download_imagenet_weights():
  """Downloads (layers.download_imagenet_file) the file keras.applications.VGG16
  (include_top=True, 528 MB) loads for weights="imagenet"; returns its path."""
  return layers.download_imagenet_file(IMAGENET_FILE, IMAGENET_URL, IMAGENET_MD5)


def load_imagenet_weights_file(model, path):
  """Loads keras.applications' VGG16 ImageNet file ``path`` (with the top: the paper's conv6/conv7
  subsample fc6/fc7) into ``model``."""
  copy_keras_applications_weights(model, keras.applications.VGG16(include_top=True, weights=path))


def load_imagenet_weights(model):
  """Downloads keras.applications' ImageNet VGG16 with its top and copies it into ``model``."""
  load_imagenet_weights_file(model, download_imagenet_weights())
