r"""How many of a SavedModel's confident detections a .tflite reproduces, printed as one JSON line.

For every image of --images (a folder; files sorted by name, the first --max_images), the
SavedModel's serving_images signature gets the decoded image, the .tflite the same image resized
to its input (tflite_export.resize_image). A SavedModel detection scored >= --min_score is
reproduced when the .tflite has a detection of the same category with IoU >= --min_iou (any score).

  python benchmarks/tflite_agreement.py --saved_model=runs/quickstart/export/saved_model \
      --tflite=runs/quickstart/export/tflite_int8/model.tflite --images=runs/quickstart/synthetic/val2017
"""

import json
import sys

from absl import app
from absl import flags
import numpy as np

import harness
import machine

sys.path.insert(0, str(harness.REPO))
from ssd_tf import cli  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

_SAVED_MODEL = flags.DEFINE_string("saved_model", None, "The exported SavedModel directory.")
_TFLITE = flags.DEFINE_string("tflite", None, "The .tflite (label_map.json beside it).")
_IMAGES = flags.DEFINE_string("images", None, "A folder of images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 100, "At most this many images (0: all).")
_MIN_SCORE = flags.DEFINE_float("min_score", 0.5, "SavedModel detections scored at least this count.")
_MIN_IOU = flags.DEFINE_float("min_iou", 0.9, "IoU a reproduction needs.")
_THREADS = flags.DEFINE_integer("num_threads", 2, "TFLite interpreter threads.")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")


def agreement(saved_model, tflite, pictures, min_score=0.5, min_iou=0.9, num_threads=2):
  """(reproduced, total) over uint8 [H, W, 3] pictures (module docstring)."""
  import os  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ssd_tf import tflite_export  # pylint: disable=g-import-not-at-top
  from ssd_tf import tflite_model  # pylint: disable=g-import-not-at-top
  from ssd_tf.label_map import LabelMap  # pylint: disable=g-import-not-at-top
  serve = tf.saved_model.load(saved_model).signatures["serving_images"]
  model = tflite_model.TFLiteModel(tflite, num_threads)
  label_map = LabelMap.load(os.path.join(os.path.dirname(tflite), "label_map.json"))
  found = total = 0
  for picture in pictures:
    served = {k: v.numpy()[0] for k, v in serve(images=tf.constant(picture[None])).items()}
    confident = served["detection_scores"] >= min_score
    outputs = model(tflite_export.resize_image(picture, model.image_size))
    n = int(outputs["num_detections"][0])
    category_ids = label_map.category_ids(outputs["detection_classes"][0, :n].astype(np.int64) + 1)
    hits, count = harness.reproduced((served["detection_boxes"][confident], served["detection_classes"][confident]),
                             (outputs["detection_boxes"][0, :n], category_ids), min_iou)
    found, total = found + hits, total + count
  return found, total


def main(argv):
  with cli.user_errors(_TRACEBACK.value):
    harness.check_arguments(argv, _SAVED_MODEL, _TFLITE, _IMAGES)
    pictures = harness.read_pictures(_IMAGES.value, _MAX_IMAGES.value)
    found, total = agreement(_SAVED_MODEL.value, _TFLITE.value, pictures, _MIN_SCORE.value, _MIN_IOU.value,
                             _THREADS.value)
    print(json.dumps(dict(bench="ssd_tf_tflite_agreement", saved_model=_SAVED_MODEL.value, tflite=_TFLITE.value,
                          images=len(pictures), min_score=_MIN_SCORE.value, min_iou=_MIN_IOU.value,
                          num_threads=_THREADS.value, reproduced=found, confident=total,
                          fraction=round(found / max(total, 1), 4), machine=machine.facts(xla=False))), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
