r"""ssd_tf command line: quickstart, prepare data, train, evaluate, predict, convert.

  python main.py       # the quickstart: synthetic data -> train -> eval -> export, on a CPU

  python main.py --mode=train --config=configs/ssd300_resnet50_coco.py --workdir=runs/r50 \
      --config.data.tfrecord_dir=/data/coco_tfrecords --config.train.batch_size=64

Every config field can be overridden with --config.<field>=value.
"""

import os

from absl import app
from absl import flags

from ssd_tf import cli

MODES = ("quickstart", "synthetic", "prepare", "train", "eval", "train_and_eval", "predict", "convert",
         "data_service")
QUICKSTART_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "quickstart.py")

# Modes that read or write a run directory: without --config they take its config.json.
RUN_MODES = ("train", "train_and_eval", "eval", "predict")

_CONFIG = flags.DEFINE_string(
    "config", None,
    "Experiment config file (configs/*.py[:argument]). Default: the run's config.json in --workdir for "
    "train (resuming), train_and_eval, eval and predict; configs/quickstart.py for the quickstart. "
    "Override fields with --config.<field>=<value>.")
_MODE = flags.DEFINE_enum(
    "mode", "quickstart", MODES,
    "quickstart: synthetic data -> prepare -> train -> eval -> export -> drawings, in --workdir "
    "(default runs/quickstart). "
    "synthetic: write the synthetic COCO-layout dataset to config.data.coco_dir. "
    "prepare: COCO json + images in config.data.coco_dir -> TFRecords in config.data.tfrecord_dir. "
    "train / eval / train_and_eval: in --workdir. predict: --images -> JSON + annotated images. "
    "convert: a published detector checkpoint (--source) -> a run directory in --workdir. "
    "data_service: serve training input (--data_service_role) until killed; trainers read it with "
    "--config.data.service_address=host:port.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory: checkpoints, TensorBoard logs, label map, metrics, exports.")
_SPLITS = flags.DEFINE_list(
    "splits", None, "prepare: splits to convert (default: config.data.train_split and eval_split).")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", os.cpu_count() or 1,
                                    "prepare: parallel image readers.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "eval/predict: a checkpoint path (default: the newest in --workdir).")
_SAVED_MODEL = flags.DEFINE_string(
    "saved_model", None, "predict: use this exported SavedModel instead of a checkpoint.")
_MODEL = flags.DEFINE_string(
    "model", None, "eval: score this exported model instead of a checkpoint: a .tflite (label_map.json "
    "beside it), an .onnx (ONNX Runtime), an OpenVINO .xml, or the folder of one; --workdir is not needed.")
_THREADS = flags.DEFINE_integer("num_threads", 2, "eval --model: the runtime's threads.")
_PRECISION = flags.DEFINE_enum("precision", "f32", ("f32", "bf16"),
                               "eval --model=<OpenVINO .xml>: the precision OpenVINO computes in.")
_IMAGES = flags.DEFINE_list("images", None, "predict: image files, folders or glob patterns.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "predict: where detections.json and annotated images go "
    "(default: <workdir>/predictions, or predictions/ beside --saved_model, never inside it).")
_SOURCE = flags.DEFINE_string(
    "source", None, "convert: the published checkpoint (.pth/.pt: torchvision SSD300-VGG16 or NVIDIA "
    "SSD300-ResNet50; reading it needs torch).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "convert: replace the run in a non-empty --workdir.")
_SERVICE_ROLE = flags.DEFINE_enum(
    "data_service_role", None, ("dispatcher", "worker"),
    "data_service: dispatcher (one per cluster) or worker (runs the training pipeline; reads the "
    "TFRecords at the paths the trainer's config names).")
_SERVICE_PORT = flags.DEFINE_integer("data_service_port", 5050, "data_service: the port to serve on.")
_SERVICE_DISPATCHER = flags.DEFINE_string(
    "data_service_dispatcher", None, "data_service worker: the dispatcher's host:port.")
_SERVICE_WORK_DIR = flags.DEFINE_string(
    "data_service_work_dir", None,
    "data_service dispatcher: a folder for its journal; restarted with the same folder and port, "
    "it takes over its jobs (without one, trainers wait for ever when it dies).")
_SERVICE_WORKER_ADDRESS = flags.DEFINE_string(
    "data_service_worker_address", None,
    "data_service worker: the host name trainers reach this worker at (default: this host's name).")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")
_VERBOSE = flags.DEFINE_bool("verbose", False, cli.VERBOSE_HELP)


def _require_workdir():
  if not _WORKDIR.value:
    raise ValueError(f"--mode={_MODE.value} needs --workdir")
  return _WORKDIR.value


def run(mode, config):
  """Dispatches one mode; TensorFlow is imported only here."""
  if mode == "predict" and not _IMAGES.value:
    raise ValueError("--mode=predict needs --images (files, folders or globs)")
  if mode == "convert" and not _SOURCE.value:
    raise ValueError("--mode=convert needs --source (a .pth checkpoint)")
  if _MODEL.value and mode != "eval":
    raise ValueError(f"--model applies to --mode=eval, not --mode={mode}")
  cli.import_tensorflow(_VERBOSE.value)
  from ssd_tf import runner  # pylint: disable=g-import-not-at-top
  if mode == "quickstart":
    return runner.quickstart(config, _WORKDIR.value or os.path.join("runs", "quickstart"))
  if mode == "synthetic":
    return runner.write_synthetic(config)
  if mode == "prepare":
    return runner.prepare_data(config, splits=_SPLITS.value, num_workers=_NUM_WORKERS.value)
  if mode == "train":
    return runner.train_run(config, _require_workdir(), evaluate=False)
  if mode == "train_and_eval":
    return runner.train_run(config, _require_workdir(), evaluate=True)
  if mode == "eval" and _MODEL.value:
    return runner.evaluate_exported(config, _MODEL.value, _THREADS.value, _PRECISION.value)
  if mode == "eval":
    return runner.evaluate_run(config, _require_workdir(), checkpoint=_CHECKPOINT.value)
  if mode == "predict":
    return runner.predict_images(config, _WORKDIR.value, _IMAGES.value, checkpoint=_CHECKPOINT.value,
                                 saved_model=_SAVED_MODEL.value, output_dir=_OUTPUT_DIR.value)
  if mode == "data_service":
    return runner.data_service(_SERVICE_ROLE.value, _SERVICE_PORT.value, _SERVICE_DISPATCHER.value,
                               _SERVICE_WORKER_ADDRESS.value, _SERVICE_WORK_DIR.value)
  if mode == "convert":
    return runner.convert_run(config, _SOURCE.value, _require_workdir(), overwrite=_OVERWRITE.value)
  raise ValueError(f"unknown --mode={mode}")


def mode_config(mode):
  """The mode's config: --config's file, else the run's config.json (RUN_MODES), else the quickstart's
  (quickstart mode); None for the modes that need none."""
  if mode == "data_service" or (mode == "predict" and _SAVED_MODEL.value and not _CONFIG.value):
    return None
  return cli.load_config(_CONFIG.value, workdir=_WORKDIR.value if mode in RUN_MODES else None,
                         default=QUICKSTART_CONFIG if mode == "quickstart" else None, needed_by=f"--mode={mode}")


def main(argv):
  with cli.user_errors(_TRACEBACK.value):
    if len(argv) > 1:
      raise ValueError(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value)")
    run(_MODE.value, mode_config(_MODE.value))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
