"""Calibration images for full-integer quantization, drawn from prepared TFRecords."""

import os

import numpy as np
import tensorflow as tf

from ssd_tf import images
from ssd_tf.data import pipeline
from ssd_tf.data import records


def calibration_images(tfrecord_dir, split, count, size, antialias=True):
  """The first ``count`` images of a prepared split, read from all its shards in turn, decoded and
  resized as the eval pipeline does (no augmentation), rounded: a list of uint8 [size, size, 3].

  A split that is not prepared is a FileNotFoundError naming the prepare command.
  """
  if count < 1:
    raise ValueError(f"--calibration_images={count}: give at least 1")
  if not tfrecord_dir or not os.path.isfile(records.summary_path(tfrecord_dir, split)):
    raise FileNotFoundError(
        f"--quantize=int8 calibrates on the prepared '{split}' records, but config.data.tfrecord_dir="
        f"{tfrecord_dir or '(empty)'} has none: run python main.py --mode=prepare --config=<config> "
        "--config.data.coco_dir=<coco> --config.data.tfrecord_dir=<dir> (or the quickstart, python main.py)")
  paths = records.shard_paths(tfrecord_dir, split)
  ds = tf.data.Dataset.from_tensor_slices(paths).interleave(tf.data.TFRecordDataset, cycle_length=len(paths))

  def load(serialized):
    image = images.resize(pipeline.decode(records.parse_example(serialized))["image"], size, antialias)
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)

  return [np.asarray(image) for image in ds.take(count).map(load)]
