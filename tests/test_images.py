"""The one decoder and the one resize: every stored kind of image becomes the RGB PIL sees; resize keeps values."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from ssd_tf import images


def _picture(height=30, width=40):
  """uint8 [H, W, 3]: smooth gradients, so JPEG stays close to it."""
  y, x = np.mgrid[0:height, 0:width]
  base = (255 * (x / (width - 1) + y / (height - 1)) / 2).astype(np.uint8)
  return np.stack([base, 255 - base, base // 2], axis=-1)


def _encode(pil_image, fmt, **kwargs):
  buffer = io.BytesIO()
  pil_image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


@pytest.mark.parametrize("mode, fmt, tolerance", [
    ("RGB", "PNG", 0), ("L", "PNG", 0), ("RGBA", "PNG", 0), ("P", "GIF", 0), ("RGB", "BMP", 0),
    ("RGB", "JPEG", 4), ("L", "JPEG", 4), ("CMYK", "JPEG", 4),  # JPEG: decoders upsample chroma differently
])
def test_decode_gives_the_rgb_pil_gives(mode, fmt, tolerance):
  """Grey repeated over three channels, alpha dropped, palettes expanded, CMYK JPEG converted like PIL."""
  stored = _encode(Image.fromarray(_picture()).convert(mode), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
  expected = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"), np.int32)
  decoded = images.decode(stored).numpy()
  assert decoded.dtype == np.uint8 and decoded.shape == (30, 40, 3)
  assert np.abs(decoded.astype(np.int32) - expected).max() <= tolerance


def test_decode_of_bytes_that_are_not_an_image_is_invalid_argument():
  with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
    images.decode(b"no image here")


def test_resize_keeps_constants_and_means_and_batches_like_single_images():
  constant = np.full((37, 53, 3), 200.0, np.float32)
  np.testing.assert_allclose(images.resize(constant, 16).numpy(), 200.0, rtol=1e-6)
  picture = _picture(64, 64).astype(np.float32)
  halved = images.resize(picture, 32).numpy()
  # Antialiased 2x downsampling of a linear ramp: each output pixel is the mean of its 2x2 input block.
  blocks = picture.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
  np.testing.assert_allclose(halved[1:-1, 1:-1], blocks[1:-1, 1:-1], atol=1.0)
  batch = images.resize(np.stack([picture, picture[::-1]]), 24).numpy()
  np.testing.assert_allclose(batch[1], images.resize(picture[::-1], 24).numpy(), atol=1e-4)
  assert batch.dtype == np.float32 and batch.shape == (2, 24, 24, 3)
