"""The one decoder and the one resize: every stored kind of image becomes the RGB PIL sees; resize keeps values."""

import io
import struct
import zlib

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
    ("RGB", "JPEG", 0), ("L", "JPEG", 0), ("CMYK", "JPEG", 0),
])
def test_decode_gives_the_rgb_pil_gives(mode, fmt, tolerance):
  """Grey repeated over three channels, alpha dropped, palettes expanded, CMYK JPEG converted like PIL."""
  stored = _encode(Image.fromarray(_picture()).convert(mode), fmt, **({"quality": 95} if fmt == "JPEG" else {}))
  expected = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"), np.int32)
  decoded = images.decode(stored).numpy()
  assert decoded.dtype == np.uint8 and decoded.shape == (30, 40, 3)
  assert np.abs(decoded.astype(np.int32) - expected).max() <= tolerance


def png_header(height, width):
  """The first 33 bytes of a PNG declaring height x width RGB: signature and IHDR (no pixel data)."""
  ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def png_bomb(height, width):
  """A complete, valid RGB PNG of height x width black pixels: a few hundred KB for 16000 x 16000."""
  compressor, row = zlib.compressobj(9), b"\0" * (1 + 3 * width)  # filter byte + pixels
  data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
  chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
  return png_header(height, width) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def test_real_coco_jpegs_decode_to_the_pixels_pil_decodes(coco_tiny_dir):
  """The accurate DCT: bit for bit what PIL (and so torchvision's published models) saw."""
  paths = sorted((coco_tiny_dir / "val2017").glob("*.jpg"))[:5]
  for path in paths:
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(images.decode(path.read_bytes()).numpy(), expected, err_msg=str(path))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_header_size_reads_what_the_image_holds(fmt):
  stored = _encode(Image.fromarray(_picture(37, 301)), fmt)
  assert images.FORMATS[int(images.image_format(stored))] == fmt
  assert images.header_size(stored).numpy().tolist() == [37, 301]


def test_header_size_of_other_bytes_is_minus_one():
  for data in (b"", b"GI", b"no image here", b"\x00" * 64):
    assert images.header_size(data).numpy().tolist() == [-1, -1]


def test_bad_bytes_and_oversized_headers_are_refused_before_decoding_naming_the_index():
  with pytest.raises(tf.errors.InvalidArgumentError, match="the image is not a JPEG, PNG, GIF or BMP image"):
    images.decode(b"no image here")
  decode = tf.function(lambda encoded, index: images.decode(encoded, 10**8, index))
  # Only the header exists: decoding it would fail otherwise, so the refusal comes before decoding.
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="image 3 declares 16000 x 16000 pixels, over the limit of 100000000"):
    decode(png_header(16000, 16000), 3)
  assert decode(_encode(Image.fromarray(_picture()), "PNG"), 0).shape == (30, 40, 3)


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


@pytest.mark.parametrize("height, width, size", [(240, 320, 192), (100, 50, 192), (192, 192, 192), (1, 7, 64),
                                                 (480, 640, 300), (3, 1000, 64)])
@pytest.mark.parametrize("antialias", [True, False], ids=["antialias", "plain"])
def test_resize_by_matmul_equals_resize(height, width, size, antialias):
  """Shrinking, growing, unchanged (exactly the input) and extreme aspect ratios: within float32 rounding."""
  pixels = np.random.RandomState(height + width).randint(0, 256, (2, height, width, 3)).astype(np.uint8)
  expected = images.resize(tf.cast(pixels, tf.float32), size, antialias).numpy()
  actual = images.resize_by_matmul(tf.constant(pixels), size, antialias).numpy()
  assert actual.shape == (2, size, size, 3)
  np.testing.assert_allclose(actual, expected, atol=0.02 if height * width > 1000 else 1e-3)
  if (height, width) == (size, size):
    np.testing.assert_array_equal(actual, pixels)


def test_resize_weights_are_the_triangle_kernel():
  """Hand-worked rows. 4 -> 2 with antialias: output 0 samples at 1.0, the kernel is 2 wide, so the pixel
  centres 0.5, 1.5, 2.5 weigh 0.75, 0.75, 0.25 (normalized: 3/7, 3/7, 1/7); without it, the kernel is 1 wide:
  pixels 0 and 1 halve. 2 -> 4: outputs sample at 0.25, 0.75, 1.25, 1.75, the first and last hold the edge."""
  np.testing.assert_allclose(images.resize_weights(4, 2, antialias=True).numpy(),
                             [[3 / 7, 3 / 7, 1 / 7, 0], [0, 1 / 7, 3 / 7, 3 / 7]], atol=1e-6)
  np.testing.assert_allclose(images.resize_weights(4, 2, antialias=False).numpy(),
                             [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]], atol=1e-6)
  np.testing.assert_allclose(images.resize_weights(2, 4).numpy(),
                             [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], atol=1e-6)
