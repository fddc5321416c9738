"""What each main.py / export_savedmodel.py mode does, on top of the library modules.

A run directory (``--workdir``) holds: config.json, label_map.json, checkpoints/,
best/, train/ (TensorBoard events), metrics.json, detections.json, export/,
predictions/.
"""

import glob
import json
import os
import re
import sys
import time

from absl import logging
import numpy as np
import tensorflow as tf

from ssd_tf import distribute
from ssd_tf import evaluate as evaluate_lib
from ssd_tf import export as export_lib
from ssd_tf import postprocess
from ssd_tf import progress as progress_lib
from ssd_tf import train as train_lib
from ssd_tf import visualize
from ssd_tf.data import pipeline
from ssd_tf.data import prepare as prepare_lib
from ssd_tf.data import records
from ssd_tf.data import synthetic
from ssd_tf.label_map import LabelMap

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
DRAW_SCORE_THRESHOLD = 0.3  # detections drawn on images (TensorBoard, predict)


# --- data -----------------------------------------------------------------------------------------

def write_synthetic(config):
  """Writes the synthetic COCO-layout dataset (train2017, val2017) to config.data.coco_dir."""
  if not config.data.coco_dir:
    raise ValueError("--mode=synthetic writes to config.data.coco_dir, which is empty")
  s = config.data.synthetic
  paths = synthetic.write_dataset(config.data.coco_dir, num_train=s.num_train, num_val=s.num_val,
                                  image_size=tuple(s.image_size), seed=s.seed,
                                  max_objects=s.max_objects, num_workers=os.cpu_count() or 1)
  for split, path in paths.items():
    print(f"synthetic {split}: {path}")
  return paths


def prepare(config, splits=None, num_workers=2):
  """COCO json + images in config.data.coco_dir -> TFRecords in config.data.tfrecord_dir."""
  data = config.data
  if not data.coco_dir or not data.tfrecord_dir:
    raise ValueError("--mode=prepare reads config.data.coco_dir and writes config.data.tfrecord_dir; "
                     "set both (e.g. --config.data.coco_dir=/data/coco --config.data.tfrecord_dir=/data/tfr)")
  return {split: prepare_lib.prepare_split(data.coco_dir, split, data.tfrecord_dir, data.num_shards,
                                           num_workers, data.keep_empty_images)
          for split in dict.fromkeys(splits or [data.train_split, data.eval_split])}


# --- run directory --------------------------------------------------------------------------------

def _label_map_path(workdir):
  return os.path.join(workdir, "label_map.json")


def _init_workdir(config, workdir, chief):
  """Copies the data's label map and the config into the run directory (chief only)."""
  label_map = pipeline.label_map(config)
  if label_map.num_classes != config.model.num_classes:
    raise ValueError(f"config.model.num_classes={config.model.num_classes} but the data's label map "
                     f"has {label_map.num_classes} classes")
  if chief:
    os.makedirs(workdir, exist_ok=True)
    label_map.save(_label_map_path(workdir))
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1))
  return label_map


def load_label_map(workdir):
  path = _label_map_path(workdir)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} a training run directory?")
  return LabelMap.load(path)


# --- evaluation -----------------------------------------------------------------------------------

def coco_ground_truth(config, dataset, label_map):
  """The instances json prepare read, or (tfds, or json gone) ground truth rebuilt from the data."""
  if config.data.source == "tfrecord":
    source = records.load_summary(config.data.tfrecord_dir, config.data.eval_split).get("source")
    if source and os.path.isfile(source):
      return evaluate_lib.load_coco_gt(source)
  logging.info("Evaluating against ground truth read from the eval data (box areas as COCO areas)")
  return evaluate_lib.ground_truth_from_dataset(dataset, label_map)


class Evaluator:
  """COCO evaluation of a model on config.data.eval_split; prints and writes the results."""

  def __init__(self, config, workdir, label_map):
    self.config = config
    self.workdir = workdir
    self.label_map = label_map
    self.dataset = pipeline.eval_dataset(config)
    self.coco_gt = coco_ground_truth(config, self.dataset, label_map)
    self._predict_fn = None  # one tf.function per model, traced once
    self._predicted_model = None

  def __call__(self, model, step=None, drawings=True):
    """Returns metrics (plus "images": uint8 drawings of the first eval images, when asked)."""
    if self._predicted_model is not model:
      self._predict_fn = tf.function(postprocess.Detector(model, self.config))
      self._predicted_model = model
    predict_fn = self._predict_fn
    bar = progress_lib.Progress(None, name="eval", unit="images")

    def report(done, total):
      bar.total = total
      bar.update(done - bar.count)

    metrics, detections = evaluate_lib.run_evaluation(
        predict_fn, self.dataset, self.coco_gt, self.label_map, self.config.eval.num_images, report)
    bar.close()
    if step is not None:
      metrics["step"] = step
    evaluate_lib.write_results(self.workdir, metrics, detections)
    print(evaluate_lib.format_report(self.config.model.backbone, metrics), flush=True)
    print(f"images/s {metrics['images_per_second']:.2f}; pycocotools {metrics['cocoeval_seconds']:.1f} s; "
          f"metrics and detections written to {self.workdir}", flush=True)
    return dict(metrics, images=self._drawings(predict_fn)) if drawings else metrics

  def _drawings(self, predict_fn):
    count = self.config.eval.num_summary_images
    if count <= 0:
      return None
    batch = next(iter(self.dataset.unbatch().take(count).batch(count)))
    detections = {k: v.numpy() for k, v in predict_fn(batch["image"]).items()}
    # Scores are sorted: draw only the confident ones.
    detections["num_detections"] = (detections["scores"] >= DRAW_SCORE_THRESHOLD).sum(axis=1)
    return visualize.draw_detection_batch(batch["image"].numpy(), detections, self.label_map.names(),
                                          ground_truth=batch["boxes"].numpy())


# --- modes ----------------------------------------------------------------------------------------

def train(config, workdir, evaluate=False):
  """Trains (and evaluates every config.eval.every_steps when asked) in workdir."""
  strategy = distribute.make_strategy(config.train.strategy, config.train.devices)
  chief = distribute.is_chief(strategy)
  label_map = _init_workdir(config, workdir, chief)
  trainer = train_lib.Trainer(config, workdir, strategy)
  evaluator = Evaluator(config, workdir, label_map) if evaluate and chief else None
  losses = trainer.fit(evaluator)
  print(f"Training done at step {trainer.step}; checkpoints in {os.path.join(workdir, 'checkpoints')}",
        flush=True)
  return losses


def evaluate(config, workdir, checkpoint=None):
  """Evaluates the newest checkpoint of workdir (or the given one)."""
  label_map = load_label_map(workdir)
  model, path = train_lib.restore_model(config, workdir, checkpoint)
  step = int(path.rsplit("-", 1)[-1]) if path.rsplit("-", 1)[-1].isdigit() else None
  return Evaluator(config, workdir, label_map)(model, step, drawings=False)


def export(config, workdir, checkpoint=None, export_dir=None):
  """Checkpoint -> SavedModel (serving_default: encoded bytes; serving_images: uint8)."""
  label_map_path = _label_map_path(workdir)
  label_map = load_label_map(workdir)
  model, _ = train_lib.restore_model(config, workdir, checkpoint)
  export_dir = export_dir or os.path.join(workdir, "export", "saved_model")
  export_lib.export_saved_model(model, config, label_map, label_map_path, export_dir)
  print(f"SavedModel written to {export_dir}", flush=True)
  return export_dir


def find_images(patterns):
  """Files, folders (their images, sorted) and glob patterns -> sorted unique paths."""
  paths = []
  for pattern in patterns:
    if os.path.isdir(pattern):
      paths += [os.path.join(pattern, n) for n in sorted(os.listdir(pattern))
                if n.lower().endswith(IMAGE_EXTENSIONS)]
    elif any(ch in pattern for ch in "*?["):
      paths += sorted(glob.glob(pattern)) or [pattern]  # no match: reported like a missing file
    else:
      paths.append(pattern)
  return list(dict.fromkeys(paths))


def _detector(config, workdir, checkpoint, saved_model):
  """(callable encoded bytes [1] -> output dict, LabelMap) from a SavedModel or a checkpoint."""
  if saved_model:
    loaded = tf.saved_model.load(saved_model)
    label_map = LabelMap.load(export_lib.asset_label_map_path(saved_model))
    signature = loaded.signatures["serving_default"]
    return lambda encoded: signature(images=encoded), label_map
  if not workdir:
    raise ValueError("--mode=predict needs --workdir (checkpoint) or --saved_model")
  label_map = load_label_map(workdir)
  model, _ = train_lib.restore_model(config, workdir, checkpoint)
  module = export_lib.DetectionModule(model, config, label_map, _label_map_path(workdir))
  # A closure: tf.function methods hold their instance weakly, the module must stay alive.
  return lambda encoded: module.serve_encoded(encoded), label_map


def _unreadable_reason(error):
  """Why an image file could not be read, on one line (without TensorFlow's op names)."""
  if isinstance(error, OSError):
    return error.strerror or str(error)
  return re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", error.message).strip()


def predict(config, workdir, patterns, checkpoint=None, saved_model=None, output_dir=None,
            score_threshold=DRAW_SCORE_THRESHOLD):
  """Detects objects in image files: detections.json and annotated PNGs in output_dir.

  An unreadable file is reported by name and the other images are still processed.
  Returns the list of per-image results.
  """
  paths = find_images(patterns)
  if not paths:
    raise FileNotFoundError(f"no images found in {', '.join(patterns)}")
  detector, label_map = _detector(config, workdir, checkpoint, saved_model)
  output_dir = output_dir or os.path.join(workdir or saved_model, "predictions")
  os.makedirs(output_dir, exist_ok=True)
  names = {e["category_id"]: e["name"] for e in label_map.entries}
  labels = {e["category_id"]: e["label"] for e in label_map.entries}
  results, failures, used_stems = [], [], set()
  for path in paths:
    try:
      with open(path, "rb") as f:
        encoded = f.read()
      image = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
      outputs = {k: v.numpy()[0] for k, v in detector(tf.constant([encoded])).items()}
    except (OSError, tf.errors.InvalidArgumentError) as error:
      message = _unreadable_reason(error)
      print(f"predict: skipping {path}: {message}", file=sys.stderr)
      failures.append(dict(file=path, error=message))
      continue
    height, width = image.shape[:2]
    count = int(outputs["num_detections"])
    keep = outputs["detection_scores"][:count] >= score_threshold
    boxes = outputs["detection_boxes"][:count][keep]
    classes = outputs["detection_classes"][:count][keep].astype(int)
    scores = outputs["detection_scores"][:count][keep]
    pixel = boxes * np.array([height, width, height, width], np.float32)
    detections = [dict(bbox=[round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2),
                             round(float(y1 - y0), 2)],
                       category_id=int(c), name=names[int(c)], score=round(float(s), 4))
                  for (y0, x0, y1, x1), c, s in zip(pixel, classes, scores)]
    drawn = visualize.draw_detections(image, boxes, np.array([labels[c] for c in classes], int),
                                      scores, label_map.names())
    stem = os.path.splitext(os.path.basename(path))[0]
    out_path = os.path.join(output_dir, f"{stem}.png" if stem not in used_stems else f"{stem}_{len(results)}.png")
    used_stems.add(stem)
    visualize.save_png(out_path, drawn)
    results.append(dict(file=path, width=width, height=height, annotated=out_path,
                        detections=detections))
  with open(os.path.join(output_dir, "detections.json"), "w") as f:
    json.dump(dict(images=results, failed=failures, score_threshold=score_threshold), f, indent=1)
  print(f"predict: {len(results)} images, {sum(len(r['detections']) for r in results)} detections "
        f"(score >= {score_threshold}), {len(failures)} unreadable; written to {output_dir}", flush=True)
  return results


def quickstart(config, workdir, num_drawings=4):
  """The main job end to end: synthetic data -> prepare -> train (+eval) -> export -> drawings.

  Data goes to config.data.coco_dir / tfrecord_dir, or under workdir when those are
  empty; steps already done (data written, split prepared) are not repeated. A
  coco_dir given in the config is read, never written: it must hold both splits.
  """
  start = time.time()
  data = config.data
  given_coco_dir = data.coco_dir
  data.coco_dir = data.coco_dir or os.path.join(workdir, "synthetic")
  data.tfrecord_dir = data.tfrecord_dir or os.path.join(workdir, "tfrecords")
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
    prepare(config, num_workers=os.cpu_count() or 1)
  _stage(f"3/5 training {config.model.backbone} SSD{config.model.image_size} for "
         f"{config.train.steps} steps in {workdir}")
  train(config, workdir, evaluate=True)
  _stage("4/5 exporting the SavedModel")
  export_dir = export(config, workdir)
  _stage("5/5 drawing detections of val images")
  val_dir = os.path.join(data.coco_dir, data.eval_split)
  images = [os.path.join(val_dir, n) for n in sorted(os.listdir(val_dir))[:num_drawings]]
  predict(config, workdir, images, saved_model=export_dir,
          output_dir=os.path.join(workdir, "predictions"))
  with open(os.path.join(workdir, "metrics.json")) as f:
    metrics = json.load(f)
  print("\n" + evaluate_lib.format_table(config.model.backbone, metrics))
  print(f"\nQuickstart done in {progress_lib.format_duration(time.time() - start)}.\n"
        f"  checkpoints   {os.path.join(workdir, 'checkpoints')}\n"
        f"  TensorBoard   tensorboard --logdir {workdir}\n"
        f"  metrics       {os.path.join(workdir, 'metrics.json')}\n"
        f"  SavedModel    {export_dir}\n"
        f"  drawings      {os.path.join(workdir, 'predictions')}", flush=True)
  return metrics


def _stage(message):
  print(f"\n== {message}", flush=True)

