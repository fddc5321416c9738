r"""Where the .tflite's post-processing time goes, printed as one JSON line.

Runs the SSD of --config (random weights, or --checkpoint) on the first JPEG of <coco_dir>/<split>,
then times post-processing-only TFLite models (inputs: its box offsets and softmax scores; batch 1,
--threads threads, --warmup untimed calls, --steps timed ones):

  per_class       what the exported model runs (ssd_tf.tflite_export): one TFLite_Detection_PostProcess
                  op per pair of classes (regular NMS), the K best of all classes, clipping.
  no_candidates   the same model fed zero scores: decoding every box once per class, the score scan
                  and the merge, without NMS work; per_class - no_candidates is the NMS itself.
  per_class_1_thread  the same at 1 thread.
  one_op          one op over all classes (regular NMS), at 1 thread (with more it skips a class).

  python benchmarks/tflite_postprocess.py --config=configs/ssd300_resnet18_coco.py
"""

import json
import pathlib
import sys

from absl import app
from absl import flags

import harness
import machine

sys.path.insert(0, str(harness.REPO))
from ssd_tf import cli  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = harness.define_model_flags(
    batch_size_help="Unused (batch 1).", coco_dir_help="COCO 2017 layout with the JPEGs.",
    checkpoint_help="Checkpoint prefix (default: random weights).")
_SPLIT = flags.DEFINE_string("split", "val2017", "Split whose first JPEG is used.")
_THREADS = flags.DEFINE_integer("threads", 2, "Interpreter threads (one_op runs at 1).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls first.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed calls.")
_SCORE_THRESHOLD = flags.DEFINE_float("score_threshold", 0.01, "config.postprocess.score_threshold.")
flags.adopt_module_key_flags(harness)


def _convert(function, module):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], module)
  converter.allow_custom_ops = True
  return converter.convert()


def post_process_models(ssd, num_boxes):
  """{name: .tflite bytes} of the per_class and one_op post-processing (module docstring)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ssd_tf import tflite_export  # pylint: disable=g-import-not-at-top
  module = tflite_export.TFLiteModule(ssd)
  specs = [tf.TensorSpec([1, num_boxes, 4], tf.float32, name="loc"),
           tf.TensorSpec([1, num_boxes, ssd.num_classes + 1], tf.float32, name="scores")]
  per_class = tf.function(module.post_process, input_signature=specs)
  one_op = tflite_export.detection_op(tflite_export.op_attributes(ssd.config.postprocess, ssd.variances,
                                                                   ssd.num_classes))
  anchors = tf.constant(tflite_export.centre_size(ssd.default_boxes.numpy()))
  whole = tf.function(lambda loc, scores: one_op(loc, scores, anchors), input_signature=specs)
  return dict(per_class=_convert(per_class, module), one_op=_convert(whole, module))


def main(argv):
  with cli.user_errors(_MODEL.traceback.value):
    config = harness.config_from_flags(_MODEL, argv)
    config.postprocess.score_threshold = _SCORE_THRESHOLD.value
    config.train.mixed_precision = ""
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from ssd_tf import images  # pylint: disable=g-import-not-at-top
    tf.keras.utils.set_random_seed(0)  # the same random weights, the same candidates, every run
    ssd = harness.load_ssd(config, _MODEL.checkpoint.value)
    folder = pathlib.Path(_MODEL.coco_dir.value) / _SPLIT.value
    jpegs = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    if not jpegs:
      raise FileNotFoundError(f"{folder} has no JPEGs: point --coco_dir (or COCO_TINY_DIR) at a COCO 2017 layout")
    image = images.resize(images.decode(tf.constant(jpegs[0].read_bytes())), ssd.image_size,
                          config.model.resize_antialias)
    outputs = ssd(image[None], training=False)
    loc = outputs["loc"].numpy()
    scores = tf.nn.softmax(outputs["logits"], axis=-1).numpy()
    models = post_process_models(ssd, loc.shape[1])
    runs = {"per_class": (models["per_class"], _THREADS.value, scores),
            "per_class_1_thread": (models["per_class"], 1, scores),
            "no_candidates": (models["per_class"], _THREADS.value, np.zeros_like(scores)),
            "one_op": (models["one_op"], 1, scores)}
    report = dict(bench="ssd_tf_tflite_postprocess", **harness.model_facts(ssd), checkpoint=_MODEL.checkpoint.value,
                  score_threshold=_SCORE_THRESHOLD.value, pre_nms_top_k=int(config.postprocess.pre_nms_top_k),
                  candidates=int((scores[0, :, 1:] >= _SCORE_THRESHOLD.value).sum()), threads=_THREADS.value)
    for name, (content, threads, inputs) in runs.items():
      run = tf.lite.Interpreter(model_content=content, num_threads=threads).get_signature_runner()
      report[name] = harness.timing(harness.time_calls(lambda: run(loc=loc, scores=inputs), _WARMUP.value,  # pylint: disable=cell-var-from-loop
                                                       _STEPS.value), 1)
    report["machine"] = machine.facts(xla=False)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
