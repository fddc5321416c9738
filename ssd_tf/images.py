"""The one image decoder and the one resize of the package (input pipeline, SavedModel, predict).

Decoding: JPEG (RGB, grayscale, CMYK), PNG (grayscale, RGB, with alpha), GIF (first
frame) and BMP become uint8 RGB [H, W, 3]; grey is repeated over the three channels,
alpha is dropped. Resizing: the whole image to S x S (no letterbox), antialiased
bilinear, float32 in [0, 255]: the same resampling as training's augment.render.
"""

import tensorflow as tf


def decode(encoded):
  """tf.string scalar of an encoded image -> uint8 [H, W, 3] RGB (InvalidArgument if not an image)."""
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def resize(images, size):
  """[(B,) H, W, 3] any real dtype -> float32 [(B,) size, size, 3] in the input's value range."""
  return tf.image.resize(images, [size, size], method="bilinear", antialias=True)
