"""Does TensorFlow decode a JPEG to the same pixels as PIL? Run with the TensorFlow interpreter (not the torch venv):

    python3 tests/golden/check_jpeg_decode.py FILE.jpg [FILE.jpg ...]

Prints one JSON object: versions, and for each file the image size, the sha256 of PIL's RGB pixels
(``Image.open(f).convert("RGB")``) and, for each TensorFlow decoder, the largest absolute pixel difference from PIL
and the fraction of values that differ. make_golden.py calls it and keeps the result in its json files.
"""

import hashlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import PIL  # noqa: E402
from PIL import Image  # noqa: E402
import tensorflow as tf  # noqa: E402


def _compare(reference, decoded):
  decoded = np.asarray(decoded).astype(np.int32)
  if decoded.shape != reference.shape:
    return {"shape": list(decoded.shape), "same_shape": False}
  diff = np.abs(decoded - reference)
  return {"max_abs_diff": int(diff.max()), "fraction_differing": round(float((diff > 0).mean()), 6)}


def check(path):
  with Image.open(path) as image:
    pil = np.asarray(image.convert("RGB"))
  reference = pil.astype(np.int32)
  encoded = tf.io.read_file(path)
  return {
      "size_wh": [int(pil.shape[1]), int(pil.shape[0])],
      "pil_rgb_sha256": hashlib.sha256(np.ascontiguousarray(pil).tobytes()).hexdigest(),
      "tf.io.decode_jpeg(channels=3)": _compare(reference, tf.io.decode_jpeg(encoded, channels=3)),
      "tf.io.decode_jpeg(channels=3, dct_method='INTEGER_ACCURATE')": _compare(
          reference, tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")),
      "tf.io.decode_image(channels=3, expand_animations=False)": _compare(
          reference, tf.io.decode_image(encoded, channels=3, expand_animations=False)),
  }


def main(paths):
  result = {
      "tensorflow": tf.__version__,
      "pillow": PIL.__version__,
      "files": {os.path.basename(p): check(p) for p in paths},
  }
  print(json.dumps(result))


if __name__ == "__main__":
  main(sys.argv[1:])
