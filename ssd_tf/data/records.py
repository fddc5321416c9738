"""The prepared dataset on disk: TFRecord shards of tf.train.Example, one per image.

Files in ``tfrecord_dir``: ``<split>-00000-of-00016.tfrecord`` ..., ``label_map.json``,
``<split>_summary.json`` (written last by prepare: a split without it is unfinished)
and ``<split>_skipped.json``.

Example features:
  image/encoded      bytes   the image file (JPEG or PNG; decoded to 3-channel RGB)
  image/id           int64   COCO image id
  image/height       int64   original height in pixels
  image/width        int64   original width in pixels
  image/object/bbox  float   [K*4] normalized [ymin, xmin, ymax, xmax], row-major
  image/object/label int64   [K] contiguous labels 1..C (label_map.json)
  image/object/is_crowd int64 [K] 0/1
"""

import glob
import json
import os
import re

import tensorflow as tf

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/id": tf.io.FixedLenFeature([], tf.int64),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/object/bbox": tf.io.VarLenFeature(tf.float32),
    "image/object/label": tf.io.VarLenFeature(tf.int64),
    "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
}


def shard_name(split, index, num_shards):
  return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def summary_path(tfrecord_dir, split):
  return os.path.join(tfrecord_dir, f"{split}_summary.json")


def skipped_path(tfrecord_dir, split):
  return os.path.join(tfrecord_dir, f"{split}_skipped.json")


def label_map_path(tfrecord_dir):
  return os.path.join(tfrecord_dir, "label_map.json")


def load_summary(tfrecord_dir, split):
  """The summary prepare wrote for a split; errors when the split is absent or unfinished."""
  path = summary_path(tfrecord_dir, split)
  if not os.path.isfile(path):
    found = glob.glob(os.path.join(tfrecord_dir, f"{split}-*.tfrecord"))
    state = (f"{len(found)} shard files but no {os.path.basename(path)}: an unfinished prepare"
             if found else "no shards")
    raise FileNotFoundError(f"split '{split}' is not prepared in {tfrecord_dir} ({state}); "
                            f"run main.py --mode=prepare")
  with open(path) as f:
    return json.load(f)


def shard_paths(tfrecord_dir, split):
  """Sorted shard paths of a finished split; errors name what is missing."""
  num_shards = load_summary(tfrecord_dir, split)["num_shards"]
  paths = [os.path.join(tfrecord_dir, shard_name(split, i, num_shards)) for i in range(num_shards)]
  missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"{tfrecord_dir}: {len(missing)} of {num_shards} shards of split "
                            f"'{split}' are missing (first: {missing[0]}); run prepare again")
  pattern = re.compile(rf"{re.escape(split)}-\d{{5}}-of-(\d{{5}})\.tfrecord$")
  stale = [n for n in os.listdir(tfrecord_dir) if (m := pattern.match(n)) and int(m.group(1)) != num_shards]
  if stale:
    raise ValueError(f"{tfrecord_dir}: shards of split '{split}' from another prepare run "
                     f"(e.g. {stale[0]}); run prepare again")
  return paths


def _bytes(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values):
  return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def encode_example(encoded, image_id, height, width, boxes, labels, is_crowd):
  """One image -> serialized tf.train.Example. boxes: [K, 4] normalized yxyx."""
  feature = {
      "image/encoded": _bytes(encoded),
      "image/id": _ints([image_id]),
      "image/height": _ints([height]),
      "image/width": _ints([width]),
      "image/object/bbox": _floats(boxes.reshape(-1).tolist()),
      "image/object/label": _ints(labels),
      "image/object/is_crowd": _ints(is_crowd),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse_example(serialized):
  """Serialized Example -> raw element (the format both data sources produce):

  encoded string, image_id int64, original_size int32 [2] (height, width),
  boxes float32 [K, 4] normalized yxyx, labels int32 [K], is_crowd bool [K].
  """
  f = tf.io.parse_single_example(serialized, _FEATURES)
  return dict(
      encoded=f["image/encoded"],
      image_id=f["image/id"],
      original_size=tf.cast(tf.stack([f["image/height"], f["image/width"]]), tf.int32),
      boxes=tf.reshape(tf.sparse.to_dense(f["image/object/bbox"]), [-1, 4]),
      labels=tf.cast(tf.sparse.to_dense(f["image/object/label"]), tf.int32),
      is_crowd=tf.sparse.to_dense(f["image/object/is_crowd"]) > 0,
  )
