"""What each main.py / export_savedmodel.py mode does, on top of the library modules.

The run directory's layout is ssd_tf/run_dir.py's.
"""

import contextlib
import json
import os
import shutil
import socket
import time

from ssd_tf import api
from ssd_tf import distribute
from ssd_tf import files
from ssd_tf import onnx_export
from ssd_tf import onnx_model
from ssd_tf import run_dir
from ssd_tf import run_lock
from ssd_tf import tflite_export
from ssd_tf import tflite_model
from ssd_tf.convert import detectors
from ssd_tf.data import calibration
from ssd_tf.data import pipeline
from ssd_tf.data import records
from ssd_tf.data import service
from ssd_tf.data import synthetic
from ssd_tf.data.prepare import prepare_split
from ssd_tf.evaluate import Evaluator, format_table
from ssd_tf.export import export_saved_model
from ssd_tf.label_map import LabelMap
from ssd_tf.predict import predict
from ssd_tf.progress import format_duration
from ssd_tf.ssd import SSD
from ssd_tf.train import Trainer


def write_synthetic(config):
  """Writes the synthetic COCO-layout dataset (train2017, val2017) to config.data.coco_dir."""
  if not config.data.coco_dir:
    raise ValueError("--mode=synthetic writes to config.data.coco_dir, which is empty")
  s = config.data.synthetic
  paths = synthetic.write_dataset(config.data.coco_dir, num_train=s.num_train, num_val=s.num_val,
                                  side_range=tuple(s.side_range), seed=s.seed,
                                  max_objects=s.max_objects, num_workers=os.cpu_count() or 1)
  for split, path in paths.items():
    print(f"synthetic {split}: {path}")
  return paths


def prepare_data(config, splits=None, num_workers=2):
  """COCO json + images in config.data.coco_dir -> TFRecords in config.data.tfrecord_dir."""
  data = config.data
  if not data.coco_dir or not data.tfrecord_dir:
    raise ValueError("--mode=prepare reads config.data.coco_dir and writes config.data.tfrecord_dir; "
                     "set both (e.g. --config.data.coco_dir=/data/coco --config.data.tfrecord_dir=/data/tfr)")
  files.check_writable(data.tfrecord_dir)
  return {split: prepare_split(data.coco_dir, split, data.tfrecord_dir, data.num_shards, num_workers,
                               data.keep_empty_images, data.max_image_pixels)
          for split in dict.fromkeys(splits or [data.train_split, data.eval_split])}


def train_run(config, workdir, evaluate=False):
  """Trains (and evaluates every config.eval.every_steps and at the end, when asked) in workdir.

  config.json and label_map.json are written with the first checkpoint; a start that fails
  before it leaves the run directory as it was (RunDir.undo_on_failure).
  """
  strategy = distribute.make_strategy(config.train.strategy, config.train.devices)
  chief = distribute.is_chief(strategy)
  label_map = pipeline.label_map(config)
  if label_map.num_classes != config.model.num_classes:
    raise ValueError(f"config.model.num_classes={config.model.num_classes} but the data's label map "
                     f"has {label_map.num_classes} classes")
  run = run_dir.RunDir(workdir)
  lock = None
  try:
    with run.undo_on_failure() if chief else contextlib.nullcontext():
      if chief:
        files.check_writable(workdir)
        run.check_config(config, label_map)  # resuming: the same architecture and classes
        lock = run_lock.acquire(workdir)  # one writer per run directory
      trainer = Trainer(config, workdir, strategy, label_map if chief else None)
      evaluator = Evaluator(config, workdir, label_map) if evaluate and chief else None
      losses = trainer.fit(evaluator)
  finally:
    if lock:
      lock.close()
  print(f"Training done at step {trainer.step}; checkpoints in {run.checkpoints}", flush=True)
  return losses


def data_service(role, port, dispatcher_address="", worker_address="", work_dir=""):
  """Serves one tf.data service role until killed (ssd_tf.data.service): the dispatcher on ``port``
  (journal in ``work_dir``, if given), or a data worker on ``port`` registered with the dispatcher at
  ``dispatcher_address``, which trainers reach at ``worker_address`` (default: this host's name)."""
  if role == "dispatcher":
    if work_dir:
      files.check_writable(work_dir)
    server = service.dispatcher(port, work_dir)
    journal = f"journal in {work_dir}" if work_dir else "no journal: a restart loses the jobs"
    print(f"tf.data service dispatcher serving on port {port} ({journal}): train with "
          f"--config.data.service_address={socket.gethostname()}:{port}", flush=True)
  elif role == "worker":
    if not dispatcher_address:
      raise ValueError("--data_service_role=worker needs --data_service_dispatcher=host:port")
    worker_address = worker_address or socket.gethostname()
    server = service.worker(dispatcher_address, port, worker_address)
    print(f"tf.data service data worker serving at {worker_address} port {port} for the dispatcher "
          f"{dispatcher_address}", flush=True)
  else:
    raise ValueError(f"--mode=data_service needs --data_service_role=dispatcher or worker (not {role})")
  server.join()


def evaluate_run(config, workdir, checkpoint=None):
  """Evaluates the checkpoint workdir means (best, else newest; or the given one); writes the results to workdir, or,
  while a training holds workdir (run_lock), to workdir/eval/step-<N>, never over the training's."""
  run = run_dir.RunDir(workdir)
  label_map = run.load_label_map()
  path = checkpoint or run.checkpoint()
  step = run_dir.checkpoint_step(path)
  output_dir = workdir
  training = run_lock.holder(workdir)
  if training:
    output_dir = run.eval_dir(step)
    print(f"A training is running in {workdir} ({training}): results go to {output_dir}", flush=True)
  files.check_writable(output_dir)
  ssd = SSD.from_run(workdir, path, config)
  return Evaluator(config, output_dir, label_map)(ssd, step, drawings=False)


def evaluate_exported(config, path, num_threads=2, precision="f32"):
  """Scores an exported detector on the config's eval split: a .tflite (tflite_export; one image per
  call, the label map beside it), an .onnx in ONNX Runtime or an OpenVINO .xml at ``precision``
  (onnx_export; the batches of the eval pipeline, the label map inside), or the folder of one. Results go
  to <its folder>/eval."""
  if os.path.isfile(os.path.join(path, "model.tflite")):  # a folder holding a .tflite
    path = os.path.join(path, "model.tflite")
  if path.endswith(".tflite"):
    model = tflite_model.TFLiteModel(path, num_threads)
    label_map = LabelMap.load(os.path.join(os.path.dirname(path), "label_map.json"))
  else:
    model = onnx_model.load(path, num_threads, precision)
    label_map = model.label_map
  if model.image_size != config.model.image_size:
    raise ValueError(f"{model.path} takes {model.image_size} px images but config.model.image_size is "
                     f"{config.model.image_size}: give the config it was exported from")
  output_dir = os.path.join(os.path.dirname(os.path.abspath(model.path)), "eval")
  files.check_writable(output_dir)
  return Evaluator(config, output_dir, label_map)(model, drawings=False)


def convert_run(config, source, workdir, overwrite=False):
  """A published detector checkpoint (convert.DETECTORS) -> a run directory: checkpoints/ckpt-0,
  config.json, label_map.json, which eval, predict, export, training (init_from) and
  ssd_tf.load use as they use a trained run."""
  if os.path.isdir(workdir) and os.listdir(workdir) and not overwrite:
    raise ValueError(f"--workdir={workdir} is not empty: give a new directory, or --overwrite to "
                     "replace its config, label map and checkpoints")
  ssd, label_map = detectors.convert_detector(config, source)  # before writing anything
  files.check_writable(workdir)
  lock = run_lock.acquire(workdir)  # one writer per run directory
  try:
    run = run_dir.RunDir(workdir)
    for folder in (run.checkpoints, run.best):
      shutil.rmtree(folder, ignore_errors=True)
    path = detectors.write_run(workdir, config, ssd, label_map)
  finally:
    lock.close()
  print(f"Converted {source} into {workdir} (checkpoint {path})", flush=True)
  return path


def export_run(config, workdir, checkpoint=None, export_dir=None):
  """Checkpoint -> SavedModel (serving_default: encoded bytes; serving_images: uint8)."""
  run = run_dir.RunDir(workdir)
  label_map = run.load_label_map()
  export_dir = export_dir or run.export_dir("saved_model")
  files.check_writable(os.path.dirname(os.path.normpath(export_dir)) or ".")
  ssd = SSD.from_run(workdir, checkpoint, config)
  export_saved_model(ssd, label_map, run.label_map_json, export_dir)
  print(f"SavedModel written to {export_dir}", flush=True)
  return export_dir


def export_tflite_run(config, workdir, quantize, checkpoint=None, export_dir=None, calibration_images=300):
  """Checkpoint -> <export_dir>/model.tflite + label_map.json + labels.txt (tflite_export), built in
  float32 whatever the run's precision; int8 calibrates on the first ``calibration_images`` prepared
  training images (config.data.tfrecord_dir, else the run's own)."""
  run = run_dir.RunDir(workdir)
  label_map = run.load_label_map()
  name = {"none": "float32"}.get(quantize, quantize)
  export_dir = export_dir or run.export_dir(f"tflite_{name}")
  files.check_writable(os.path.dirname(os.path.normpath(export_dir)) or ".")
  images = None
  if quantize == "int8":  # before the slow part: missing records stop the export at once
    records_dir = config.data.tfrecord_dir or run.load_config().data.tfrecord_dir
    images = calibration.calibration_images(records_dir, config.data.train_split, calibration_images,
                                            config.model.image_size, config.model.resize_antialias)
  ssd = _float32_ssd(config, workdir, checkpoint)
  path = tflite_export.write(tflite_export.convert(ssd, quantize, images), label_map, export_dir)
  print(f"TFLite model ({name}) written to {path}", flush=True)
  return path


def export_onnx_run(config, workdir, export_format, checkpoint=None, export_dir=None):
  """Checkpoint -> <export_dir>/model.onnx, or model.xml + model.bin (``export_format`` "onnx" or
  "openvino"; onnx_export), with label_map.json beside; float32 whatever the run's precision."""
  run = run_dir.RunDir(workdir)
  label_map = run.load_label_map()
  export_dir = export_dir or run.export_dir(export_format)
  files.check_writable(os.path.dirname(os.path.normpath(export_dir)) or ".")
  onnx_export.require("tf2onnx", export_format)  # before the slow part
  if export_format == "openvino":
    onnx_export.require("openvino", export_format)
  model = onnx_export.to_onnx(_float32_ssd(config, workdir, checkpoint), label_map)
  if export_format == "openvino":
    model = onnx_export.to_openvino(model)
  path = onnx_export.write(model, label_map, export_dir)
  print(f"{'ONNX' if export_format == 'onnx' else 'OpenVINO'} model written to {path}", flush=True)
  return path


def _float32_ssd(config, workdir, checkpoint=None):
  """The run's SSD built in float32 whatever its train.mixed_precision (what the TFLite, ONNX and OpenVINO
  converters take)."""
  config = config.copy_and_resolve_references()
  config.train.mixed_precision = ""
  return SSD.from_run(workdir, checkpoint, config)


def predict_images(config, workdir, patterns, checkpoint=None, saved_model=None, output_dir=None):
  """Detections of image files (predict.predict) from a SavedModel or a run's checkpoint."""
  if saved_model:
    detector = api.load(saved_model)
  elif workdir:
    detector = api.load(workdir, checkpoint, config)
  else:
    raise ValueError("--mode=predict needs --workdir (checkpoint) or --saved_model")
  # By default beside a SavedModel, never inside it.
  default_dir = run_dir.RunDir(workdir or os.path.dirname(os.path.normpath(saved_model))).predictions
  return predict(detector, patterns, output_dir or default_dir)


def quickstart(config, workdir, num_drawings=4):
  """The main job end to end: synthetic data -> prepare -> train (+eval) -> export -> drawings.

  Data goes to config.data.coco_dir / tfrecord_dir, or under workdir when those are
  empty; steps already done (data written, split prepared) are not repeated. A
  coco_dir given in the config is read, never written: it must hold both splits.
  """
  start = time.time()
  data = config.data
  run = run_dir.RunDir(workdir)
  given_coco_dir = data.coco_dir
  data.coco_dir = data.coco_dir or run.synthetic
  data.tfrecord_dir = data.tfrecord_dir or run.tfrecords
  splits = (data.train_split, data.eval_split)
  missing = [s for s in splits
             if not os.path.isfile(os.path.join(data.coco_dir, "annotations", f"instances_{s}.json"))]
  if missing and given_coco_dir:
    raise FileNotFoundError(f"config.data.coco_dir={given_coco_dir} has no annotations/instances_"
                            f"{missing[0]}.json (leave coco_dir empty to generate the synthetic dataset)")
  if missing:
    _stage(f"1/5 writing the synthetic dataset to {data.coco_dir}")
    write_synthetic(config)
  if not all(os.path.isfile(records.summary_path(data.tfrecord_dir, s)) for s in splits):
    _stage(f"2/5 preparing TFRecords in {data.tfrecord_dir}")
    prepare_data(config, num_workers=os.cpu_count() or 1)
  _stage(f"3/5 training {config.model.backbone} SSD{config.model.image_size} for "
         f"{config.train.steps} steps in {workdir}")
  train_run(config, workdir, evaluate=True)
  _stage("4/5 exporting the SavedModel")
  export_dir = export_run(config, workdir)
  _stage("5/5 drawing detections of val images")
  val_dir = os.path.join(data.coco_dir, data.eval_split)
  images = [os.path.join(val_dir, n) for n in sorted(os.listdir(val_dir))[:num_drawings]]
  predict_images(config, workdir, images, saved_model=export_dir, output_dir=run.predictions)
  with open(run.metrics) as f:
    metrics = json.load(f)
  print("\n" + format_table(config.model.backbone, metrics))
  print(f"\nQuickstart done in {format_duration(time.time() - start)}.\n"
        f"  checkpoints   {run.checkpoints}\n"
        f"  TensorBoard   tensorboard --logdir {workdir}\n"
        f"  metrics       {run.metrics}\n"
        f"  SavedModel    {export_dir}\n"
        f"  drawings      {run.predictions}", flush=True)
  return metrics


def _stage(message):
  print(f"\n== {message}", flush=True)

