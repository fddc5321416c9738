"""The one image decoder and the one resize of the package (input pipeline, SavedModel, predict).

Decoding: JPEG (RGB, grayscale, CMYK), PNG (grayscale, RGB, with alpha), GIF (first
frame) and BMP become uint8 RGB [H, W, 3]; grey is repeated over the three channels,
alpha is dropped. JPEGs use libjpeg's accurate integer DCT, the pixels PIL and torchvision
decode (TensorFlow's default, the fast DCT, was measured up to 16 levels off on COCO images). With a pixel limit, the size the header declares is checked before
anything is decoded, so a small file that declares a huge image (a decompression bomb)
costs no memory. Resizing: the whole image to S x S (no letterbox), antialiased
bilinear, float32 in [0, 255]: the same resampling as training's augment.render.
"""

import tensorflow as tf

FORMATS = ("JPEG", "PNG", "GIF", "BMP")


def image_format(encoded):
  """tf.string scalar -> int32 index into FORMATS from the file's magic bytes, -1 if none."""
  head = tf.strings.substr(encoded, 0, 4)
  matches = tf.stack([tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff"),
                      tf.equal(head, b"\x89PNG"),
                      tf.equal(tf.strings.substr(head, 0, 3), b"GIF"),
                      tf.equal(tf.strings.substr(head, 0, 2), b"BM")])
  return tf.where(tf.reduce_any(matches), tf.argmax(tf.cast(matches, tf.int32), output_type=tf.int32), -1)


def _bytes(encoded, start, length):
  """int64 [length] of the bytes at [start, start + length) (zeros past the end)."""
  chunk = tf.strings.substr(encoded + tf.constant(b"\0" * (start + length)), start, length)
  return tf.cast(tf.io.decode_raw(chunk, tf.uint8), tf.int64)


def _unsigned(encoded, start, length, big_endian):
  digits = _bytes(encoded, start, length)
  weights = tf.constant([256**i for i in range(length)], tf.int64)
  return tf.reduce_sum(digits * (weights[::-1] if big_endian else weights))


def header_size(encoded):
  """tf.string scalar -> int64 [height, width] that the header declares, read without decoding.

  [-1, -1] for bytes that are not a JPEG, PNG, GIF or BMP; a JPEG whose header is corrupt
  raises InvalidArgumentError.
  """
  def jpeg():
    return tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.int64)

  def png():  # IHDR: width, height as big-endian uint32 at bytes 16 and 20
    return tf.stack([_unsigned(encoded, 20, 4, True), _unsigned(encoded, 16, 4, True)])

  def gif():  # logical screen: width, height as little-endian uint16 at bytes 6 and 8
    return tf.stack([_unsigned(encoded, 8, 2, False), _unsigned(encoded, 6, 2, False)])

  def bmp():  # BITMAPINFOHEADER and later: int32 width, height (negative: top-down) at 18 and 22
    height = _unsigned(encoded, 22, 4, False)
    height = tf.where(height >= 2**31, 2**32 - height, height)
    return tf.stack([height, _unsigned(encoded, 18, 4, False)])

  return tf.switch_case(image_format(encoded) + 1,
                        [lambda: tf.constant([-1, -1], tf.int64), jpeg, png, gif, bmp])


def decode(encoded, max_pixels=0, index=None):
  """tf.string scalar of an encoded image -> uint8 [H, W, 3] RGB.

  InvalidArgumentError ("image <index> ..." when ``index``, an int or int tensor, is given:
  its place in a batch) when the bytes are not an image, when the header declares more
  than ``max_pixels`` pixels (0: no limit; checked before decoding) or the image has no pixels.
  """
  name, values = ("image {}", [index]) if index is not None else ("the image", [])
  size = header_size(encoded)
  checks = [_check(tf.reduce_all(size >= 0), f"{name} is not a JPEG, PNG, GIF or BMP image", values)]
  if max_pixels:
    checks.append(_check(size[0] * size[1] <= max_pixels,
                         f"{name} declares {{}} x {{}} pixels, over the limit of {max_pixels}",
                         values + [size[0], size[1]]))
  with tf.control_dependencies(checks):
    image = tf.cond(tf.equal(image_format(encoded), FORMATS.index("JPEG")),
                    lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
                    lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
  image.set_shape([None, None, 3])
  shape = tf.shape(image)
  with tf.control_dependencies([_check(shape[0] * shape[1] > 0, f"{name} has no pixels", values)]):
    return tf.identity(image)


def _check(condition, template, values):
  """An assertion whose InvalidArgumentError reads ``template`` formatted with ``values``."""
  return tf.debugging.Assert(condition, [tf.strings.format(template, values)])


def resize(images, size, antialias=True):
  """[(B,) H, W, 3] any real dtype -> float32 [(B,) size, size, 3] in the input's value range.

  Bilinear, half-pixel centres; ``antialias`` widens the kernel when shrinking (like PIL);
  without it, the value equals PyTorch's ``interpolate(mode="bilinear", align_corners=False)``.
  """
  return tf.image.resize(images, [size, size], method="bilinear", antialias=antialias)


def resize_weights(in_size, out_size, antialias=True):
  """int scalar (a tensor may be dynamic) -> float32 [out_size, in_size]: row i holds the weights
  with which ``resize`` mixes the input pixels along one axis into output pixel i.

  TensorFlow's triangle kernel (tf.image.resize's ScaleAndTranslate): output pixel i samples at
  (i + 0.5) / scale with scale = out_size / in_size; the kernel is widened by 1 / scale when
  shrinking with ``antialias``; each row is normalized to sum 1.
  """
  in_size = tf.cast(in_size, tf.float32)
  scale = out_size / in_size
  width = tf.maximum(1.0 / scale, 1.0) if antialias else tf.constant(1.0)
  samples = (tf.range(out_size, dtype=tf.float32) + 0.5) / scale                     # [out]
  centres = tf.range(in_size) + 0.5                                                 # [in]
  weights = tf.nn.relu(1.0 - tf.abs(centres[None, :] - samples[:, None]) / width)  # [out, in]
  return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def resize_by_matmul(images, size, antialias=True):
  """uint8 or float [B, H, W, 3] -> float32 [B, size, size, 3]: ``resize`` as two matrix products
  with ``resize_weights`` (equal to float rounding), for runtimes that lack TensorFlow's
  ScaleAndTranslate (ONNX, OpenVINO). Costs size * 3 * (H * W + W * size) multiply-adds per image."""
  shape = tf.shape(images)
  channels_first = tf.transpose(tf.cast(images, tf.float32), [0, 3, 1, 2])          # [B, 3, H, W]
  rows = tf.matmul(resize_weights(shape[1], size, antialias), channels_first)       # [B, 3, S, W]
  both = tf.matmul(rows, resize_weights(shape[2], size, antialias), transpose_b=True)  # [B, 3, S, S]
  return tf.transpose(both, [0, 2, 3, 1])
