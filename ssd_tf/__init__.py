"""ssd_tf: SSD (Single Shot MultiBox Detector) in TensorFlow 2 / Keras 3.

  import ssd_tf
  detector = ssd_tf.load("runs/quickstart")        # a run directory or an exported SavedModel
  detections = detector.detect("photo.jpg", min_score=0.3)

  ssd = ssd_tf.SSD(config)                         # network, default boxes, matching, loss, detection

Conventions held everywhere in the package (see README "Conventions"):

* Boxes are ``[ymin, xmin, ymax, xmax]`` float32, normalized to [0, 1] of the
  network input. COCO ``[x, y, w, h]`` pixel boxes exist only where annotations
  are read and where detections are written; ``ssd_tf.load(...).detect`` returns
  ``(xmin, ymin, xmax, ymax)`` pixels of the image given.
* Labels: 0 is background, 1..C are the foreground classes in contiguous order;
  ``label_map.json`` maps them to the dataset's category ids. Padded ground-truth
  rows carry label -1.
* Model inputs are RGB images in [0, 255] (any float dtype); each backbone's
  pretraining normalization is the first layer of the model.

Importing this package does not import TensorFlow; ``load`` and ``SSD`` do.
"""

__version__ = "0.2.0"

_API = {"load": "ssd_tf.api", "Detector": "ssd_tf.api", "Detection": "ssd_tf.api", "SSD": "ssd_tf.ssd"}


def __getattr__(name):
  """ssd_tf.load, ssd_tf.SSD...: imported on first use (they import TensorFlow)."""
  if name not in _API:
    raise AttributeError(f"module 'ssd_tf' has no attribute {name!r}")
  import importlib  # pylint: disable=g-import-not-at-top
  return getattr(importlib.import_module(_API[name]), name)
