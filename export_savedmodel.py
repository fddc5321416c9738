r"""Exports a trained ssd_tf checkpoint as a SavedModel for TF Serving, or as a TFLite, ONNX or OpenVINO model.

  python export_savedmodel.py --workdir=runs/r50 \
      [--checkpoint=runs/r50/best/ckpt-40000] [--export_dir=runs/r50/export/saved_model]
  python export_savedmodel.py --workdir=runs/r50 --format=onnx|openvino [--export_dir=runs/r50/export/<format>]
  python export_savedmodel.py --workdir=runs/r50 --format=tflite --quantize=none|float16|int8 [--calibration_images=300] \
      [--export_dir=runs/r50/export/tflite_<float32|float16|int8>]

SavedModel signatures: serving_default (tf.string [B] encoded JPEG/PNG bytes) and
serving_images (uint8 [B, H, W, 3]); outputs detection_boxes, detection_scores,
detection_classes (dataset category ids), num_detections. See README "Serving".
TFLite: <export_dir>/model.tflite (uint8 [1, S, S, 3] in; boxes, class indices 0..C-1,
scores, count out), label_map.json and labels.txt beside it. See README "Edge".
ONNX / OpenVINO: <export_dir>/model.onnx, or model.xml + model.bin: serving_images as one model (uint8
[B, H, W, 3] in, the same four outputs), label_map.json beside; needs `pip install tf2onnx` (and
`openvino`). See README "Serving on CPUs".
The config is the run's config.json unless --config names the file (fields that change what
the weights mean must agree with config.json); --config.<field>=<value> overrides either.
"""

from absl import app
from absl import flags

from ssd_tf import cli

_CONFIG = flags.DEFINE_string("config", None, "The config the model was trained with (default: the run's "
                              "config.json); override fields with --config.<field>=<value>.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory (checkpoints, label_map.json).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint path (default: newest in --workdir).")
_EXPORT_DIR = flags.DEFINE_string("export_dir", None,
                                  "Output directory (default: <workdir>/export/saved_model, or "
                                  "<workdir>/export/tflite_<float32|float16|int8>, <workdir>/export/onnx, "
                                  "<workdir>/export/openvino).")
_FORMAT = flags.DEFINE_enum("format", "saved_model", ("saved_model", "tflite", "onnx", "openvino"), "What to export.")
_QUANTIZE = flags.DEFINE_enum("quantize", "none", ("none", "float16", "int8"),
                              "tflite: none (float32), float16 weights, or int8 (full integer, uint8 input, "
                              "calibrated on the prepared training records).")
_CALIBRATION_IMAGES = flags.DEFINE_integer("calibration_images", 300,
                                           "tflite int8: how many training images calibrate it.")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")
_VERBOSE = flags.DEFINE_bool("verbose", False, cli.VERBOSE_HELP)


def main(argv):
  with cli.user_errors(_TRACEBACK.value):
    if len(argv) > 1:
      raise ValueError(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
    if not _WORKDIR.value:
      raise ValueError("--workdir is required: the training run directory")
    if _FORMAT.value != "tflite" and _QUANTIZE.value != "none":
      raise ValueError(f"--quantize={_QUANTIZE.value} applies to --format=tflite only")
    if _CALIBRATION_IMAGES.value < 1:
      raise ValueError(f"--calibration_images={_CALIBRATION_IMAGES.value}: give at least 1")
    config = cli.load_config(_CONFIG.value, workdir=_WORKDIR.value, needed_by="export_savedmodel.py")
    cli.import_tensorflow(_VERBOSE.value)
    from ssd_tf import runner  # pylint: disable=g-import-not-at-top
    if _FORMAT.value in ("onnx", "openvino"):
      runner.export_onnx_run(config, _WORKDIR.value, _FORMAT.value, _CHECKPOINT.value, _EXPORT_DIR.value)
    elif _FORMAT.value == "tflite":
      runner.export_tflite_run(config, _WORKDIR.value, _QUANTIZE.value, _CHECKPOINT.value, _EXPORT_DIR.value,
                               _CALIBRATION_IMAGES.value)
    else:
      runner.export_run(config, _WORKDIR.value, _CHECKPOINT.value, _EXPORT_DIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
