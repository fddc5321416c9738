"""COCO evaluation on the real val2017 sample: conversion, COCOeval wrapper, eval loop, result files."""

import contextlib
import io
import json
import types

import numpy as np
import pytest
import tensorflow as tf
from pycocotools.cocoeval import COCOeval

from ssd_tf import evaluate
from ssd_tf.label_map import LabelMap


@pytest.fixture(scope="module")
def val(coco_tiny_dir):
  path = coco_tiny_dir / "annotations" / "instances_val2017.json"
  with open(path) as f:
    data = json.load(f)
  return types.SimpleNamespace(path=path, data=data, images=sorted(data["images"], key=lambda im: im["id"]),
                               coco=evaluate.load_coco_gt(path),
                               label_map=LabelMap.from_coco_categories(data["categories"]))


def ground_truth_records(data):
  """Non-crowd annotations as hand-written COCO results (xywh pixels, score 1)."""
  return [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=list(a["bbox"]), score=1.0)
          for a in data["annotations"] if not a["iscrowd"]]


def to_arrays(records, images, label_map):
  """COCO results (xywh pixels) -> padded post-processing arrays: normalized yxyx boxes, labels 1..C.

  Padding rows hold a plausible box, label 1 and a high score: they must be ignored.
  """
  per_image = {im["id"]: [] for im in images}
  for r in records:
    per_image[r["image_id"]].append(r)
  k = max(len(rows) for rows in per_image.values())
  b = len(images)
  boxes = np.tile(np.array([0.25, 0.25, 0.75, 0.75], np.float32), (b, k, 1))
  scores = np.full((b, k), 0.99, np.float32)
  classes = np.ones((b, k), np.int32)
  for i, im in enumerate(images):
    rows = per_image[im["id"]]
    if rows:
      x, y, w, h = np.array([r["bbox"] for r in rows], np.float64).T
      height, width = im["height"], im["width"]
      boxes[i, :len(rows)] = np.stack([y / height, x / width, (y + h) / height, (x + w) / width], axis=-1)
      scores[i, :len(rows)] = [r["score"] for r in rows]
      classes[i, :len(rows)] = label_map.labels([r["category_id"] for r in rows])
  return dict(image_ids=np.array([im["id"] for im in images], np.int64),
              original_sizes=np.array([[im["height"], im["width"]] for im in images], np.int32),
              boxes=boxes, scores=scores, labels=classes,
              num_detections=np.array([len(per_image[im["id"]]) for im in images], np.int32))


def through_package(val, records, image_ids=None):
  """Records -> arrays -> detections_to_coco -> coco_evaluate."""
  arrays = to_arrays(records, val.images, val.label_map)
  detections = evaluate.detections_to_coco(**arrays, label_map=val.label_map)
  return evaluate.coco_evaluate(val.coco, detections, image_ids), detections


def shifted_records(data):
  """GT shifted right by 5-30% of its width (IoU .90/.82/.67/.54), varied scores, plus false positives."""
  rng = np.random.default_rng(0)
  fractions = (0.05, 0.1, 0.2, 0.3)
  records = []
  for i, r in enumerate(ground_truth_records(data)):
    x, y, w, h = r["bbox"]
    score = float(np.float32(rng.uniform(0.2, 1.0)))
    records.append(dict(r, bbox=[x + fractions[i % 4] * w, y, w, h], score=score))
  for im in data["images"][::3]:
    records.append(dict(image_id=im["id"], category_id=data["categories"][im["id"] % 80]["id"],
                        bbox=[0.1 * im["width"], 0.2 * im["height"], 0.3 * im["width"], 0.25 * im["height"]],
                        score=float(np.float32(rng.uniform(0.2, 1.0)))))
  return records


def test_detections_to_coco_hand_values():
  label_map = LabelMap([dict(label=1, category_id=5, name="a"), dict(label=2, category_id=9, name="b")])
  boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]],
                    [[0.5, 0.5, 1.0, 0.75], [0.3, 0.3, 0.4, 0.4]]], np.float32)
  detections = evaluate.detections_to_coco(
      image_ids=np.array([7, 8]), original_sizes=np.array([[100, 200], [40, 80]]), boxes=boxes,
      scores=np.array([[0.875, 0.5], [0.25, 0.125]], np.float32), labels=np.array([[2, 1], [1, 2]]),
      num_detections=np.array([1, 2]), label_map=label_map)
  assert [(d["image_id"], d["category_id"], d["score"]) for d in detections] == [(7, 9, 0.875), (8, 5, 0.25),
                                                                                 (8, 9, 0.125)]
  np.testing.assert_allclose([d["bbox"] for d in detections],
                             [[40, 10, 80, 40], [40, 20, 20, 20], [24, 12, 8, 4]], atol=1e-4)
  assert json.loads(json.dumps(detections)) == detections  # plain Python types


def test_detections_of_unused_labels_are_left_out():
  """torchvision's COCO model has 90 labels, 10 of them unused slots named N/A: not scored."""
  label_map = LabelMap([dict(label=1, category_id=11, name="fire hydrant"), dict(label=2, category_id=12, name="N/A"),
                        dict(label=3, category_id=13, name="stop sign")])
  detections = evaluate.detections_to_coco(
      image_ids=np.array([7]), original_sizes=np.array([[100, 100]]),
      boxes=np.array([[[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6], [0.3, 0.3, 0.7, 0.7]]], np.float32),
      scores=np.array([[0.9, 0.8, 0.7]], np.float32), labels=np.array([[1, 2, 3]]),
      num_detections=np.array([3]), label_map=label_map)
  assert [(d["category_id"], d["score"]) for d in detections] == [(11, np.float32(0.9)), (13, np.float32(0.7))]
  np.testing.assert_allclose(detections[1]["bbox"], [30, 30, 40, 40], atol=1e-4)


def test_detections_to_coco_rejects_bad_shapes():
  label_map = LabelMap([dict(label=1, category_id=1, name="a")])
  args = dict(image_ids=np.array([1]), original_sizes=np.array([[10, 10]]), boxes=np.zeros((1, 3, 4)),
              scores=np.zeros((1, 2)), labels=np.ones((1, 2), np.int32), num_detections=np.array([1]))
  with pytest.raises(ValueError, match="boxes"):
    evaluate.detections_to_coco(**args, label_map=label_map)
  args.update(boxes=np.zeros((1, 2, 4)), num_detections=np.array([3]))
  with pytest.raises(ValueError, match="num_detections"):
    evaluate.detections_to_coco(**args, label_map=label_map)
  args.update(num_detections=np.array([1]), original_sizes=np.array([[0, 10]]))
  with pytest.raises(ValueError, match=r"image 1 has original size \[0, 10\]"):
    evaluate.detections_to_coco(**args, label_map=label_map)


def test_ground_truth_as_detections_scores_one(val):
  metrics, detections = through_package(val, ground_truth_records(val.data))
  assert len(detections) == sum(1 for a in val.data["annotations"] if not a["iscrowd"])
  for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100", "ARs", "ARm", "ARl"):
    assert metrics[name] == pytest.approx(1.0), name
  assert metrics["AR1"] < 1.0  # images with several objects
  assert metrics["num_images"] == 80 and metrics["cocoeval_seconds"] > 0


def coco_eval_stats(coco, records):
  """The independent path: pycocotools directly on hand-written results."""
  with contextlib.redirect_stdout(io.StringIO()):
    evaluator = COCOeval(coco, coco.loadRes([dict(r) for r in records]), iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return evaluator.stats


def test_shifted_detections_match_pycocotools_directly(val):
  records = shifted_records(val.data)
  metrics, _ = through_package(val, records)
  expected = coco_eval_stats(val.coco, records)
  assert 0.2 < expected[0] < 0.8  # a partial score, so the comparison means something
  np.testing.assert_allclose([metrics[name] for name in evaluate.STAT_NAMES], expected, rtol=0, atol=1e-12)
  # Every class with ground truth has all T x R precision entries, so AP is the mean of per-class AP.
  assert np.mean(list(metrics["per_class_AP"].values())) == pytest.approx(metrics["AP"], abs=1e-12)


def test_empty_detections_score_zero(val):
  metrics = evaluate.coco_evaluate(val.path, [])
  assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0 and metrics["AR100"] == 0.0
  assert metrics["num_detections"] == 0
  assert set(metrics["per_class_AP"].values()) == {0.0}


def test_per_class_ap_follows_classes_present(val):
  names = {c["id"]: c["name"] for c in val.data["categories"]}
  subset = [im["id"] for im in val.images[:10]]
  present = {names[a["category_id"]] for a in val.data["annotations"]
             if a["image_id"] in subset and not a["iscrowd"]}
  records = ground_truth_records(val.data)
  dropped = sorted(present)[0]  # its detections removed: AP 0, the others stay 1
  records = [r for r in records if names[r["category_id"]] != dropped]
  metrics, _ = through_package(val, records, image_ids=subset)
  assert metrics["num_images"] == 10
  assert set(metrics["per_class_AP"]) == present
  assert metrics["per_class_AP"][dropped] == 0.0
  assert all(ap == pytest.approx(1.0) for name, ap in metrics["per_class_AP"].items() if name != dropped)
  assert metrics["AP"] == pytest.approx(1.0 - 1.0 / len(present))


def test_unknown_ids_are_named(val):
  record = dict(image_id=123, category_id=1, bbox=[0, 0, 1, 1], score=1.0)
  with pytest.raises(ValueError, match=r"detections: image ids \[123\]"):
    evaluate.coco_evaluate(val.coco, [record])
  with pytest.raises(ValueError, match=r"image_ids: image ids \[123\]"):
    evaluate.coco_evaluate(val.coco, [], image_ids=[123])
  with pytest.raises(ValueError, match=r"category ids \[91\]"):
    evaluate.coco_evaluate(val.coco, [dict(record, image_id=val.images[0]["id"], category_id=91)])


def eval_dataset_and_predict_fn(val, records, batch_size):
  """A tf.data eval dataset from the json whose images carry their row index, and a predict_fn
  returning that row's detections (a stand-in for model + postprocess)."""
  arrays = to_arrays(records, val.images, val.label_map)
  n = len(val.images)
  images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 4, 4, 3))
  dataset = tf.data.Dataset.from_tensor_slices(dict(
      image=images, image_id=arrays["image_ids"], original_size=arrays["original_sizes"])).batch(batch_size)
  outputs = {key: tf.constant(arrays[key]) for key in ("boxes", "scores", "labels", "num_detections")}

  @tf.function
  def predict_fn(batch_images):
    rows = tf.cast(batch_images[:, 0, 0, 0], tf.int32)
    return {key: tf.gather(value, rows) for key, value in outputs.items()}

  return dataset, predict_fn


def test_run_evaluation_matches_direct_evaluation(val):
  records = ground_truth_records(val.data)
  expected, expected_detections = through_package(val, records)
  dataset, predict_fn = eval_dataset_and_predict_fn(val, records, batch_size=12)
  calls = []
  metrics, detections = evaluate.run_evaluation(predict_fn, dataset, val.path, val.label_map,
                                                report=lambda done, total: calls.append((done, total)))
  for name in evaluate.STAT_NAMES + ("per_class_AP", "num_images", "num_detections"):
    assert metrics[name] == expected[name], name
  assert detections == expected_detections
  assert calls == [(12 * i, 80) for i in range(1, 7)] + [(80, 80)]
  assert metrics["predict_seconds"] > 0 and metrics["images_per_second"] > 0


def test_run_evaluation_stops_at_num_images(val):
  dataset, predict_fn = eval_dataset_and_predict_fn(val, ground_truth_records(val.data), batch_size=12)
  calls = []
  metrics, detections = evaluate.run_evaluation(predict_fn, dataset, val.coco, val.label_map, num_images=30,
                                                report=lambda done, total: calls.append((done, total)))
  first = {im["id"] for im in val.images[:30]}
  assert calls == [(12, 30), (24, 30), (30, 30)]
  assert metrics["num_images"] == 30 and {d["image_id"] for d in detections} <= first
  assert len(detections) == sum(1 for a in val.data["annotations"]
                                if a["image_id"] in first and not a["iscrowd"])
  assert metrics["AP"] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="repeats image ids"):
    evaluate.run_evaluation(predict_fn, dataset.repeat(2), val.coco, val.label_map)


def test_write_results_round_trips(tmp_path, val):
  metrics, detections = through_package(val, shifted_records(val.data)[:50])
  workdir = tmp_path / "eval"
  evaluate.write_results(workdir, metrics, detections)
  evaluate.write_results(workdir, metrics, detections)  # overwrites in place
  assert sorted(p.name for p in workdir.iterdir()) == ["detections.json", "metrics.json"]
  assert json.loads((workdir / "metrics.json").read_text()) == metrics
  assert json.loads((workdir / "detections.json").read_text()) == detections


def test_formatting():
  values = (0.2514, 0.4236, 0.25749, 0.1, 0.2, 0.3, 0.21, 0.31, 0.3333, 0.12, 0.35, 0.45)
  metrics = dict(zip(evaluate.STAT_NAMES, values), per_class_AP={"person": 0.4567, "bicycle": 0.0})
  table = evaluate.format_table("resnet50", metrics)
  assert table.splitlines() == ["| Backbone | AP@IOU 0.50:0.95 | AP@IOU 0.50 | AP@IOU 0.75 |",
                                "| --- | --- | --- | --- |",
                                "| resnet50 | 0.251 | 0.424 | 0.257 |"]
  stats = evaluate.format_stats(metrics)
  assert len(stats.splitlines()) == 2 + 12
  assert "| AR1 | 0.50:0.95 | all | 1 | 0.210 |" in stats
  assert "| AR100 | 0.50:0.95 | all | 100 | 0.333 |" in stats
  assert "| APs | 0.50:0.95 | small | 100 | 0.100 |" in stats
  report = evaluate.format_report("resnet50", metrics)
  order = [report.index(part) for part in (table, stats, "| person | 0.457 |", "| bicycle | 0.000 |")]
  assert order == sorted(order)
