"""COCO evaluation: detections -> COCO results json -> pycocotools COCOeval (bbox).

Detections arrive as post-processing outputs (boxes normalized yxyx, labels
1..C); they leave in COCO results format (``bbox`` = [x, y, w, h] in pixels of
the original image, ``category_id`` = the dataset's id from the label map).
:class:`Evaluator` runs an SSD over a config's eval split and reports.
"""

import collections
import contextlib
import copy
import io
import os
import time

from absl import logging
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
import tensorflow as tf

from ssd_tf import box_ops
from ssd_tf import files
from ssd_tf import progress
from ssd_tf import run_dir
from ssd_tf import visualize
from ssd_tf.data import pipeline
from ssd_tf.data import records
from ssd_tf.label_map import UNUSED_NAME
from ssd_tf.ssd import SSD

DRAW_SCORE_THRESHOLD = 0.3  # detections drawn on TensorBoard images

# The 12 COCOeval summary stats in pycocotools' order: (name, IoU, area, max detections).
STATS = (
    ("AP", "0.50:0.95", "all", 100),
    ("AP50", "0.50", "all", 100),
    ("AP75", "0.75", "all", 100),
    ("APs", "0.50:0.95", "small", 100),
    ("APm", "0.50:0.95", "medium", 100),
    ("APl", "0.50:0.95", "large", 100),
    ("AR1", "0.50:0.95", "all", 1),
    ("AR10", "0.50:0.95", "all", 10),
    ("AR100", "0.50:0.95", "all", 100),
    ("ARs", "0.50:0.95", "small", 100),
    ("ARm", "0.50:0.95", "medium", 100),
    ("ARl", "0.50:0.95", "large", 100),
)
STAT_NAMES = tuple(s[0] for s in STATS)


def detections_to_coco(image_ids, original_sizes, boxes, scores, labels, num_detections, label_map):
  """Batched post-processing outputs -> list of COCO result dicts.

  Args:
    image_ids: [B] int, COCO image ids.
    original_sizes: [B,2] int (height, width) of the original images; the eval
      pipeline resizes without letterboxing, so normalized coords scale by these.
    boxes: [B,K,4] normalized yxyx. scores: [B,K]. labels: [B,K] int, 1..C.
    num_detections: [B] int, valid rows per image (the first ones).
    label_map: ssd_tf.label_map.LabelMap; detections of its unused labels (named
      label_map.UNUSED_NAME: torchvision's empty COCO slots) are left out, as pycocotools
      ignores categories its ground truth lacks.
  Returns:
    [{"image_id", "category_id", "bbox": [x, y, w, h] pixels, "score"}], plain Python types,
    image by image (box conversion vectorized per image by box_ops.boxes_to_coco_xywh).
  """
  image_ids = np.asarray(image_ids)
  original_sizes = np.asarray(original_sizes)
  boxes = np.asarray(boxes)
  scores = np.asarray(scores)
  labels = np.asarray(labels)
  num_detections = np.asarray(num_detections)
  if scores.ndim != 2:
    raise ValueError(f"detections_to_coco: scores must be [B,K], got shape {scores.shape}")
  batch, k = scores.shape
  expected_shapes = (("image_ids", image_ids, (batch,)), ("original_sizes", original_sizes, (batch, 2)),
                     ("boxes", boxes, (batch, k, 4)), ("labels", labels, (batch, k)),
                     ("num_detections", num_detections, (batch,)))
  for name, array, shape in expected_shapes:
    if array.shape != shape:
      raise ValueError(f"detections_to_coco: {name} has shape {array.shape}, expected {shape}")
  if num_detections.size and (num_detections.min() < 0 or num_detections.max() > k):
    raise ValueError(f"detections_to_coco: num_detections must be in 0..{k}, got {num_detections.tolist()}")

  for image_id, size in zip(image_ids.tolist(), original_sizes.tolist()):
    if min(size) <= 0:
      raise ValueError(f"detections_to_coco: image {image_id} has original size {size}")

  unused = np.array([False] + [name == UNUSED_NAME for name in label_map.names()])
  detections = []
  for image_id, (height, width), n, image_boxes, image_scores, image_labels in zip(
      image_ids.tolist(), original_sizes.tolist(), num_detections.tolist(), boxes, scores, labels):
    keep = ~unused[np.clip(image_labels[:n], 0, label_map.num_classes)]
    xywh = box_ops.boxes_to_coco_xywh(image_boxes[:n][keep], height, width)
    category_ids = label_map.category_ids(image_labels[:n][keep].astype(np.int64))
    detections += [dict(image_id=image_id, category_id=c, bbox=b, score=s)
                   for c, b, s in zip(category_ids.tolist(), xywh.tolist(), image_scores[:n][keep].tolist())]
  return detections


def load_coco_gt(coco_gt):
  """A pycocotools COCO object, or a path to an instances json -> COCO (quietly)."""
  if isinstance(coco_gt, COCO):
    return coco_gt
  path = os.fspath(coco_gt)
  if not os.path.exists(path):
    raise FileNotFoundError(f"COCO annotation file not found: {path}")
  with contextlib.redirect_stdout(io.StringIO()):
    return COCO(path)


def _results_coco(coco_gt, detections):
  """Detections -> COCO results object. Works on copies: loadRes edits its input dicts."""
  if detections:
    return coco_gt.loadRes([dict(d) for d in detections])
  results = COCO()  # loadRes fails on an empty list; an empty result set evaluates to AP 0
  results.dataset = dict(images=list(coco_gt.dataset["images"]),
                         categories=copy.deepcopy(coco_gt.dataset["categories"]), annotations=[])
  results.createIndex()
  return results


def coco_evaluate(coco_gt, detections, image_ids=None):
  """pycocotools bbox evaluation.

  Args:
    coco_gt: pycocotools COCO ground truth, or a path to an instances json.
    detections: list of COCO result dicts (see detections_to_coco); may be empty.
    image_ids: the images that were evaluated (default: every image of coco_gt).
  Returns:
    dict: the 12 stats (STAT_NAMES), "per_class_AP" {category name: AP@[.50:.95], area all, 100 dets}
    for the classes with ground truth in the evaluated images, "num_images", "num_detections",
    "cocoeval_seconds" (time spent in pycocotools).
  """
  coco_gt = load_coco_gt(coco_gt)
  known_images = set(coco_gt.getImgIds())
  image_ids = sorted(known_images) if image_ids is None else sorted(int(i) for i in image_ids)
  for source, ids in (("image_ids", set(image_ids)), ("detections", {d["image_id"] for d in detections})):
    unknown = sorted(ids - known_images)
    if unknown:
      raise ValueError(f"{source}: image ids {unknown[:5]} are not in the ground truth annotations")
  unknown = sorted({d["category_id"] for d in detections} - set(coco_gt.getCatIds()))
  if unknown:
    raise ValueError(f"category ids {unknown[:5]} are not in the ground truth annotations "
                     "(label map and annotation file disagree)")

  start = time.perf_counter()
  with contextlib.redirect_stdout(io.StringIO()):
    evaluator = COCOeval(coco_gt, _results_coco(coco_gt, detections), iouType="bbox")
    evaluator.params.imgIds = image_ids
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  seconds = time.perf_counter() - start

  metrics = {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats)}
  precision = evaluator.eval["precision"]  # [IoU T, recall R, class K, area A, max dets M]
  all_area = evaluator.params.areaRngLbl.index("all")
  per_class = {}
  for index, category_id in enumerate(evaluator.params.catIds):
    values = precision[:, :, index, all_area, -1]
    values = values[values > -1]
    if values.size:
      per_class[coco_gt.cats[category_id]["name"]] = float(values.mean())
  metrics.update(per_class_AP=per_class, num_images=len(image_ids), num_detections=len(detections),
                 cocoeval_seconds=seconds)
  return metrics


def run_evaluation(predict_fn, dataset, coco_gt, label_map, num_images=0, report=None):
  """Predicts over eval batches and evaluates with COCOeval.

  Args:
    predict_fn: images float32 [B,S,S,3] -> dict(boxes, scores, labels, num_detections), as
      ssd_tf.postprocess returns (e.g. a tf.function wrapping model + postprocess).
    dataset: iterable of eval batches (dicts with "image", "image_id" [B], "original_size" [B,2]).
    coco_gt: pycocotools COCO or path to the split's instances json.
    label_map: LabelMap of the training labels.
    num_images: stop after this many images (0: the whole dataset).
    report: optional callable(images_done, images_total), called after each batch.
  Returns:
    (metrics, detections): coco_evaluate's metrics plus "predict_seconds" (the prediction loop,
    input pipeline included) and "images_per_second"; detections as COCO result dicts.
  """
  coco_gt = load_coco_gt(coco_gt)
  total = len(coco_gt.getImgIds())
  total = min(num_images, total) if num_images > 0 else total
  detections, image_ids = [], []
  start = time.perf_counter()
  for batch in dataset:
    take = len(batch["image_id"])
    if num_images > 0:
      take = min(take, num_images - len(image_ids))
    outputs = {key: np.asarray(value)[:take] for key, value in predict_fn(batch["image"]).items()}
    ids = np.asarray(batch["image_id"])[:take]
    detections.extend(detections_to_coco(ids, np.asarray(batch["original_size"])[:take], outputs["boxes"],
                                         outputs["scores"], outputs["labels"], outputs["num_detections"],
                                         label_map))
    image_ids.extend(ids.tolist())
    if report is not None:
      report(len(image_ids), total)
    if num_images > 0 and len(image_ids) >= num_images:
      break
  predict_seconds = time.perf_counter() - start
  if not image_ids:
    raise ValueError("run_evaluation: the eval dataset yielded no images")
  if len(set(image_ids)) != len(image_ids):
    repeated = sorted(i for i, count in collections.Counter(image_ids).items() if count > 1)
    raise ValueError(f"run_evaluation: the eval dataset repeats image ids {repeated[:5]} (is it repeated?)")

  metrics = coco_evaluate(coco_gt, detections, image_ids)
  metrics.update(predict_seconds=predict_seconds, images_per_second=len(image_ids) / predict_seconds)
  return metrics, detections


def write_results(workdir, metrics, detections):
  """Writes <workdir>/metrics.json and <workdir>/detections.json (each via a temp file + rename)."""
  workdir = os.fspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  files.write_json(os.path.join(workdir, run_dir.METRICS), metrics)
  files.write_json(os.path.join(workdir, run_dir.DETECTIONS), detections)


def format_table(backbone_name, metrics):
  """One-row markdown table: backbone and AP @ IoU 0.50:0.95, 0.50, 0.75 (3 decimals)."""
  return ("| Backbone | AP@IOU 0.50:0.95 | AP@IOU 0.50 | AP@IOU 0.75 |\n"
          "| --- | --- | --- | --- |\n"
          f"| {backbone_name} | {metrics['AP']:.3f} | {metrics['AP50']:.3f} | {metrics['AP75']:.3f} |")


def format_stats(metrics):
  """Markdown table of the 12 COCOeval stats."""
  lines = ["| Metric | IoU | Area | Max dets | Value |", "| --- | --- | --- | --- | --- |"]
  lines += [f"| {name} | {iou} | {area} | {max_dets} | {metrics[name]:.3f} |"
            for name, iou, area, max_dets in STATS]
  return "\n".join(lines)


def format_per_class(metrics):
  """Markdown table of per-class AP @ IoU 0.50:0.95 (classes with ground truth)."""
  lines = ["| Class | AP |", "| --- | --- |"]
  lines += [f"| {name} | {ap:.3f} |" for name, ap in metrics["per_class_AP"].items()]
  return "\n".join(lines)


def format_report(backbone_name, metrics):
  """What eval mode prints: the AP table, then the 12 stats, then per-class AP."""
  return "\n\n".join([format_table(backbone_name, metrics), format_stats(metrics), format_per_class(metrics)])


def ground_truth_from_dataset(dataset, label_map):
  """A pycocotools COCO built from eval batches (for sources without an instances json, e.g. tfds).

  Boxes go back to pixels of the original image; each box's area is its box area
  (COCO's own areas come from segmentations, so APs/APm/APl can differ slightly).
  """
  images, annotations = [], []
  for batch in dataset:
    for image_id, (height, width), boxes, labels, crowd in zip(
        np.asarray(batch["image_id"]), np.asarray(batch["original_size"]), np.asarray(batch["boxes"]),
        np.asarray(batch["labels"]), np.asarray(batch["is_crowd"])):
      images.append(dict(id=int(image_id), height=int(height), width=int(width)))
      keep = labels > 0
      if not keep.any():
        continue
      xywh = box_ops.boxes_to_coco_xywh(boxes[keep], height, width)
      for box, category_id, is_crowd in zip(xywh, label_map.category_ids(labels[keep]), crowd[keep]):
        annotations.append(dict(id=len(annotations) + 1, image_id=int(image_id),
                                category_id=int(category_id), bbox=[float(v) for v in box],
                                area=float(box[2] * box[3]), iscrowd=int(is_crowd)))
  coco = COCO()
  coco.dataset = dict(images=images, annotations=annotations,
                      categories=[dict(id=e["category_id"], name=e["name"]) for e in label_map.entries])
  with contextlib.redirect_stdout(io.StringIO()):
    coco.createIndex()
  return coco


def coco_ground_truth(config, dataset, label_map):
  """The instances json prepare read, or (tfds, or json gone) ground truth rebuilt from the data."""
  if config.data.source == "tfrecord":
    source = records.load_summary(config.data.tfrecord_dir, config.data.eval_split).get("source")
    if source and os.path.isfile(source):
      return load_coco_gt(source)
  logging.info("Evaluating against ground truth read from the eval data (box areas as COCO areas)")
  return ground_truth_from_dataset(dataset, label_map)


class Evaluator:
  """COCO evaluation of an SSD on config.data.eval_split; prints and writes the results to workdir.

  Also of any detector whose ``detect`` takes the eval batches' images as NumPy and returns what
  SSD.detect returns (tflite_model.TFLiteModel): called as it is, where an SSD's is a tf.function.
  """

  def __init__(self, config, workdir, label_map):
    self.config = config
    self.workdir = workdir
    self.label_map = label_map
    self.dataset = pipeline.eval_dataset(config)
    self.coco_gt = coco_ground_truth(config, self.dataset, label_map)
    self._detect = None  # one tf.function per SSD, traced once
    self._detecting = None

  def __call__(self, ssd, step=None, drawings=True):
    """Returns metrics (plus "images": uint8 drawings of the first eval images, when asked)."""
    if self._detecting is not ssd:
      self._detect, self._detecting = tf.function(ssd.detect) if isinstance(ssd, SSD) else ssd.detect, ssd
    bar = progress.Progress(None, name="eval", unit="images")

    def report(done, total):
      bar.total = total
      bar.update(done - bar.count)

    metrics, detections = run_evaluation(self._detect, self.dataset, self.coco_gt, self.label_map,
                                         self.config.eval.num_images, report)
    bar.close()
    if step is not None:
      metrics["step"] = step
    write_results(self.workdir, metrics, detections)
    print(format_report(self.config.model.backbone, metrics), flush=True)
    print(f"images/s {metrics['images_per_second']:.2f}; pycocotools {metrics['cocoeval_seconds']:.1f} s; "
          f"metrics and detections written to {self.workdir}", flush=True)
    return dict(metrics, images=self._drawings()) if drawings else metrics

  def _drawings(self):
    count = self.config.eval.num_summary_images
    if count <= 0:
      return None
    batch = next(iter(self.dataset.unbatch().take(count).batch(count)))
    detections = {k: v.numpy() for k, v in self._detect(batch["image"]).items()}
    # Scores are sorted: draw only the confident ones.
    detections["num_detections"] = (detections["scores"] >= DRAW_SCORE_THRESHOLD).sum(axis=1)
    return visualize.draw_detection_batch(batch["image"].numpy(), detections, self.label_map.names(),
                                          ground_truth=batch["boxes"].numpy())
