"""COCO 2017 layout -> sharded TFRecords + label_map.json + a summary (main.py --mode=prepare).

Worker processes read every image, make it RGB where TensorFlow would not read it right
(coco.check_image, with PIL), then decode the bytes to be stored with the decoder training
uses (images.decode), so an image TensorFlow cannot decode is skipped and listed here,
not found in the middle of training; the parent process writes the examples,
image i going to shard i % num_shards. Everything is written into a hidden
``.<split>.partial-<pid>`` folder and moved into place at the end; the split's
``<split>_summary.json`` is written last, and the pipeline refuses a split
without it, so an interrupted run never leaves a dataset that looks finished.
"""

import collections
import contextlib
import os
import shutil
import sys
import time

import tensorflow as tf

from ssd_tf import files
from ssd_tf import images
from ssd_tf import progress
from ssd_tf.data import coco
from ssd_tf.data import parallel
from ssd_tf.data import records
from ssd_tf.label_map import LabelMap

_COUNTS = ("images", "background_images", "images_converted", "images_skipped_undecodable",
           "images_skipped_too_large", "images_skipped_empty", "boxes", "crowd_boxes", "boxes_clipped", "boxes_dropped",
           "max_boxes_per_image")


def _write_label_map(label_map, output_dir, json_path):
  """Writes label_map.json, or checks that an existing one (from another split) agrees."""
  path = records.label_map_path(output_dir)
  if os.path.exists(path):
    if LabelMap.load(path).entries != label_map.entries:
      raise ValueError(f"{path} was written from other categories than {json_path}; "
                       "use a fresh output folder")
    return
  label_map.save(path)


def _move_into_place(partial_dir, output_dir, split):
  """Replaces the split's old shards and reports by the new ones."""
  old_summary = records.summary_path(output_dir, split)
  if os.path.exists(old_summary):
    os.remove(old_summary)  # first: from here on the split reads as unfinished
  for name in os.listdir(output_dir):
    if name.startswith(f"{split}-") and name.endswith(".tfrecord"):
      os.remove(os.path.join(output_dir, name))
  for name in sorted(os.listdir(partial_dir)):
    os.replace(os.path.join(partial_dir, name), os.path.join(output_dir, name))


def check_image(task):
  """coco.check_image (task: image_id, path, height, width, max_pixels), then the bytes it keeps
  decoded by images.decode: (image_id, encoded bytes or None, status or the reason it is skipped)."""
  image_id, encoded, status = coco.check_image(task)
  if encoded is None:
    return image_id, encoded, status
  try:
    images.decode(encoded)
  except tf.errors.OpError as e:
    return image_id, None, f"TensorFlow cannot decode it: {e.message.splitlines()[0]}"
  return image_id, encoded, status


def _write_shards(data, partial_dir, num_shards, num_workers, keep_empty_images, max_pixels, bar):
  """Checks every image and writes the kept ones; returns the counts for the summary."""
  counts = collections.Counter()
  per_class = collections.Counter()
  shard_sizes = [0] * num_shards
  skipped = []
  tasks = [(r.image_id, r.path, r.height, r.width, max_pixels) for r in data.images]
  with contextlib.ExitStack() as stack:
    writers = [stack.enter_context(tf.io.TFRecordWriter(
        os.path.join(partial_dir, records.shard_name(data.split, i, num_shards)))) for i in range(num_shards)]
    for record, (image_id, encoded, status) in zip(
        data.images, parallel.ordered_map(check_image, tasks, num_workers)):
      if bar:
        bar.update()
      if encoded is None:
        skipped.append(dict(image_id=image_id, file_name=record.file_name, reason=status))
        counts["images_skipped_too_large" if status.startswith(coco.TOO_LARGE)
               else "images_skipped_undecodable"] += 1
        continue
      ann = coco.image_annotations(record, data.label_map)
      counts["boxes_clipped"] += ann["num_clipped"]
      counts["boxes_dropped"] += ann["num_dropped"]
      num_boxes = len(ann["labels"])
      if num_boxes == 0 and not keep_empty_images:
        counts["images_skipped_empty"] += 1
        continue
      shard = counts["images"] % num_shards
      writers[shard].write(records.encode_example(
          encoded, image_id, record.height, record.width, ann["boxes"], ann["labels"], ann["is_crowd"]))
      shard_sizes[shard] += 1
      counts["images"] += 1
      counts["background_images"] += num_boxes == 0
      counts["images_converted"] += status == "converted"
      counts["boxes"] += num_boxes
      counts["crowd_boxes"] += int(ann["is_crowd"].sum())
      counts["max_boxes_per_image"] = max(counts["max_boxes_per_image"], num_boxes)
      per_class.update(ann["labels"].tolist())
  if bar:
    bar.close()
  return counts, per_class, shard_sizes, skipped


def _remove_leftovers(output_dir, split):
  """Removes the partial folders of prepares of ``split`` that were killed (their process is gone)."""
  for name in os.listdir(output_dir):
    prefix = f".{split}.partial-"
    if not (name.startswith(prefix) and name[len(prefix):].isdigit()):
      continue
    try:
      os.kill(int(name[len(prefix):]), 0)  # a running prepare (this host): leave its folder alone
    except ProcessLookupError:
      shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
    except PermissionError:
      pass  # alive, another user's


def prepare_split(coco_dir, split, output_dir, num_shards=16, num_workers=2, keep_empty_images=True,
                  max_image_pixels=0, verbose=True):
  """Converts one split; returns the summary dict (also saved as <split>_summary.json).

  Args:
    coco_dir: COCO 2017 layout root (annotations/instances_<split>.json, <split>/).
    split: e.g. "train2017".
    output_dir: config.data.tfrecord_dir; created if needed.
    num_shards: number of TFRecord files.
    num_workers: processes that read and decode images (<= 1: in this process).
    keep_empty_images: write images without boxes as background-only examples.
    max_image_pixels: images whose header declares more pixels are skipped (0: no limit).
    verbose: print a progress line and the summary.
  """
  if num_shards < 1:
    raise ValueError(f"num_shards must be at least 1, got {num_shards}")
  start = time.time()
  data = coco.read_split(coco_dir, split)  # raises before anything is written
  os.makedirs(output_dir, exist_ok=True)
  _write_label_map(data.label_map, output_dir, data.json_path)
  bar = progress.Progress(len(data.images), name=f"prepare {split}", unit="images",
                        stream=sys.stderr) if verbose else None
  _remove_leftovers(output_dir, split)
  partial_dir = os.path.join(output_dir, f".{split}.partial-{os.getpid()}")
  os.makedirs(partial_dir)
  try:
    counts, per_class, shard_sizes, skipped = _write_shards(data, partial_dir, num_shards, num_workers,
                                                            keep_empty_images, max_image_pixels, bar)
    summary = dict(
        split=split, source=data.json_path, images_in_json=len(data.images),
        **{key: counts[key] for key in _COUNTS},
        boxes_per_class={data.label_map.name(label): per_class[label]
                         for label in range(1, data.label_map.num_classes + 1)},
        num_shards=num_shards, shard_sizes=shard_sizes, keep_empty_images=keep_empty_images,
        seconds=round(time.time() - start, 1))
    _move_into_place(partial_dir, output_dir, split)
    files.write_json(records.skipped_path(output_dir, split), skipped, indent=1)
    files.write_json(records.summary_path(output_dir, split), summary, indent=1)  # last: marks the split finished
  finally:
    shutil.rmtree(partial_dir, ignore_errors=True)
  if verbose:
    print(format_summary(summary, output_dir))
  return summary


def format_summary(summary, output_dir):
  """A few readable lines from a prepare summary."""
  s = summary
  lines = [
      f"{s['split']}: {s['images']} images written to {output_dir} ({s['num_shards']} shards, "
      f"{s['seconds']} s), {s['background_images']} background-only, {s['images_converted']} "
      "re-encoded to RGB",
      f"  skipped: {s['images_skipped_undecodable']} undecodable, {s['images_skipped_too_large']} over the "
      f"pixel limit (ids in {s['split']}_skipped.json), {s['images_skipped_empty']} without boxes",
      f"  boxes: {s['boxes']} ({s['crowd_boxes']} crowd), {s['boxes_clipped']} clipped to the image, "
      f"{s['boxes_dropped']} dropped (under {coco.MIN_BOX_PIXELS:g} px); at most "
      f"{s['max_boxes_per_image']} per image",
  ]
  per_class = sorted(s["boxes_per_class"].items(), key=lambda kv: -kv[1])
  lines.append("  per class: " + ", ".join(f"{name} {n}" for name, n in per_class))
  return "\n".join(lines)
