r"""How exactly an ONNX or OpenVINO export reproduces a SavedModel's detections, printed as one JSON line.

Every image of --images (a folder; files sorted by name, the first --max_images) goes, decoded and at its
own size, to the SavedModel's serving_images signature and to the exported model (onnx_model.load; OpenVINO
at --precision). Per image, each SavedModel detection is paired with an unpaired exported one of the same
category, score within --score_tolerance and box within --box_tolerance (normalized coordinates).

  python benchmarks/export_agreement.py --saved_model=runs/quickstart/export/saved_model_float32 \
      --model=runs/quickstart/export/openvino [--precision=bf16] --images=runs/quickstart/synthetic/val2017

Out: images, images whose detections all pair ("identical_images"), detections and paired ones, the largest
score and box differences of same-category pairs at IoU >= 0.5, and "reproduced": SavedModel detections scored
>= 0.5 with a same-category export box at IoU >= 0.9 (harness.reproduced, as tflite_agreement.py counts).
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

_SAVED_MODEL = flags.DEFINE_string("saved_model", None, "The exported SavedModel directory (float32 to compare "
                                   "float32 exports).")
_MODEL = flags.DEFINE_string("model", None, "The .onnx or OpenVINO .xml (or its folder).")
_PRECISION = flags.DEFINE_enum("precision", "f32", ("f32", "bf16"), "OpenVINO's compute precision.")
_IMAGES = flags.DEFINE_string("images", None, "A folder of images.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 200, "At most this many images (0: all).")
_SCORE_TOLERANCE = flags.DEFINE_float("score_tolerance", 1e-4, "Largest score difference of a pair.")
_BOX_TOLERANCE = flags.DEFINE_float("box_tolerance", 1e-3, "Largest box coordinate difference of a pair.")
_THREADS = flags.DEFINE_integer("num_threads", 2, "The runtime's threads.")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")


def paired(expected, actual, score_tolerance, box_tolerance):
  """How many expected detections (boxes [n, 4], scores [n], classes [n]) pair with actual ones (module docstring)."""
  unused = np.ones(len(actual[1]), bool)
  found = 0
  for box, score, category in zip(*expected):
    fits = (unused & (actual[2] == category) & (np.abs(actual[1] - score) <= score_tolerance)
            & (np.abs(actual[0] - box).max(axis=-1, initial=0) <= box_tolerance))
    if fits.any():
      unused[np.argmax(fits)] = False
      found += 1
  return found


def agreement(saved_model, model, pictures, score_tolerance=1e-4, box_tolerance=1e-3):
  """The figures of the module docstring over uint8 [H, W, 3] pictures."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ssd_tf import box_ops  # pylint: disable=g-import-not-at-top
  serve = tf.saved_model.load(saved_model).signatures["serving_images"]
  figures = dict(images=0, identical_images=0, detections=0, paired=0, confident=0, reproduced=0,
                 max_score_difference=0.0, max_box_difference=0.0)
  for picture in pictures:
    served = {k: v.numpy()[0] for k, v in serve(images=tf.constant(picture[None])).items()}
    outputs = {k: v[0] for k, v in model(picture[None]).items()}
    detections = []
    for result in (served, outputs):
      n = int(result["num_detections"])
      detections.append((result["detection_boxes"][:n], result["detection_scores"][:n],
                         result["detection_classes"][:n]))
    (boxes, scores, classes), (other_boxes, other_scores, other_classes) = detections
    found = paired(detections[0], detections[1], score_tolerance, box_tolerance)
    figures["images"] += 1
    figures["identical_images"] += int(found == len(scores) == len(other_scores))
    figures["detections"] += len(scores)
    figures["paired"] += found
    if len(scores) and len(other_scores):
      iou = box_ops.iou(boxes, other_boxes).numpy() * (classes[:, None] == other_classes[None])
      best = iou.argmax(axis=1)
      close = iou.max(axis=1) >= 0.5
      figures["max_score_difference"] = max(figures["max_score_difference"], float(
          np.abs(scores - other_scores[best])[close].max(initial=0)))
      figures["max_box_difference"] = max(figures["max_box_difference"], float(
          np.abs(boxes - other_boxes[best]).max(axis=1)[close].max(initial=0)))
    confident = scores >= 0.5
    hits, count = harness.reproduced((boxes[confident], classes[confident]),
                                     (other_boxes, other_classes), 0.9)
    figures["confident"] += count
    figures["reproduced"] += hits
  return figures


def main(argv):
  with cli.user_errors(_TRACEBACK.value):
    harness.check_arguments(argv, _SAVED_MODEL, _MODEL, _IMAGES)
    cli.import_tensorflow()
    from ssd_tf import onnx_model  # pylint: disable=g-import-not-at-top
    pictures = harness.read_pictures(_IMAGES.value, _MAX_IMAGES.value)
    model = onnx_model.load(_MODEL.value, _THREADS.value, _PRECISION.value)
    figures = agreement(_SAVED_MODEL.value, model, pictures, _SCORE_TOLERANCE.value, _BOX_TOLERANCE.value)
    print(json.dumps(dict(saved_model=_SAVED_MODEL.value, model=model.path, precision=_PRECISION.value,
                          **figures, machine=machine.facts(xla=False))), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
