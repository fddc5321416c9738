"""tf.data input pipelines: training (SSD augmentations) and evaluation (resize only).

Batches are dicts:
  image     float32 [B, S, S, 3] RGB in [0, 255] (the model normalizes for its backbone)
  boxes     float32 [B, M, 4] normalized [ymin, xmin, ymax, xmax], M = config.data.max_boxes
  labels    int32 [B, M], 1..C, -1 on padded rows
  is_crowd  bool [B, M], False on padded rows
  image_id  int64 [B], the COCO image id
  training only: epoch int64 [B], the epoch the image was drawn in (a batch may span two)
  eval only: original_size int32 [B, 2] (height, width)
B is config.train.batch_size / config.eval.batch_size (global); with an input
context, the per-replica size, and each input pipeline reads its own share.

Sources (config.data.source): "tfrecord" (prepared shards in config.data.tfrecord_dir)
or "tfds" (coco/2017); both give the same raw elements (records.parse_example).

Training data comes epoch after epoch: each epoch shuffles the shard order (TFRecord
source; tfds reads its files in a fixed order) and the elements (buffer
config.data.shuffle_buffer) with seeds derived from the base seed and the epoch
number, and each element is augmented with a seed derived from (epoch, position).
With config.data.deterministic the base seed is config.seed and every parallel
stage keeps its order, so a run is repeatable, and ``skip_batches`` resumes
exactly where an uninterrupted run would be; otherwise the base seed is fresh
each run and parallel stages may reorder for speed.

A training record that does not parse or whose image does not decode (prepare writes
none; another tool or a damaged copy might) is skipped, not fatal: tf.data logs the
error and a line on stderr names the record with the count skipped so far.
"""

import os
import sys

import numpy as np
import tensorflow as tf

from ssd_tf import images
from ssd_tf.data import augment
from ssd_tf.data import records
from ssd_tf.data import tfds_source
from ssd_tf.label_map import LabelMap

_SOURCES = ("tfrecord", "tfds")
_MAX_EPOCHS = 2**62


def _check_source(data_cfg):
  if data_cfg.source not in _SOURCES:
    raise ValueError(f"config.data.source={data_cfg.source!r}: choose one of {_SOURCES}")
  if data_cfg.source == "tfrecord" and not data_cfg.tfrecord_dir:
    raise ValueError("config.data.tfrecord_dir is empty: point it at the output of --mode=prepare")


def label_map(config):
  """The LabelMap of the configured source (label_map.json of the prepared data, or tfds')."""
  _check_source(config.data)
  if config.data.source == "tfds":
    return tfds_source.label_map(config.data)
  path = records.label_map_path(config.data.tfrecord_dir)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config.data.tfrecord_dir={config.data.tfrecord_dir} holds no prepared data (no "
                            "label_map.json): prepare it with python main.py --mode=prepare --config=... "
                            "--config.data.coco_dir=... --config.data.tfrecord_dir=...")
  return LabelMap.load(path)


def _pipelines(input_context):
  """(number of input pipelines, this pipeline's id)."""
  if input_context is None:
    return 1, 0
  return input_context.num_input_pipelines, input_context.input_pipeline_id


def _parallel(data_cfg):
  calls = data_cfg.num_parallel_calls
  return tf.data.AUTOTUNE if calls is None or calls < 0 else calls


def decode(raw):
  """Raw element -> element with ``image`` uint8 [H, W, 3] instead of ``encoded``."""
  element = {k: v for k, v in raw.items() if k != "encoded"}
  element["image"] = images.decode(raw["encoded"])
  return element


def _placeholder():
  """A decoded element's structure with no image and no boxes (stands for a record that failed)."""
  return dict(image_id=tf.constant(-1, tf.int64), original_size=tf.zeros([2], tf.int32),
              boxes=tf.zeros([0, 4]), labels=tf.zeros([0], tf.int32), is_crowd=tf.zeros([0], tf.bool),
              image=tf.zeros([0, 0, 3], tf.uint8))


def _first_or(ds, fallback):
  """The first element of ``ds`` that raises no error, else the first of the dataset ``fallback``
  (only then computed); usable inside tf.data."""
  return ds.ignore_errors(log_warning=True).concatenate(fallback).take(1).get_single_element()


def _decoded_or_flagged(item, parse):
  """A source item -> (decoded element, True), or (placeholder, False) when the record does not
  parse or its image does not decode (tf.data logs the error). The placeholder keeps the image id of
  a record that parses (-1 otherwise), for the warning; it is only built for a failed record."""
  one = tf.data.Dataset.from_tensors(item)

  def flagged(raw):
    image_id = _first_or(one.map(lambda r: parse(r)["image_id"]),
                         tf.data.Dataset.from_tensors(tf.constant(-1, tf.int64)))
    return dict(_placeholder(), image_id=image_id), False

  return _first_or(one.map(lambda raw: (decode(parse(raw)), True)), one.map(flagged))


def _count_skipped(skipped, item):
  """tf.data scan: counts the records that failed and warns on stderr for each, with the count."""
  position, element, ok = item
  skipped += tf.cast(tf.logical_not(ok), tf.int64)

  def warn():
    return tf.print("ssd_tf.data: training record", position[1], "of epoch", position[0], "(image id",
                    element["image_id"], ") does not decode: skipped;", skipped,
                    "record(s) skipped so far by this input pipeline", output_stream=sys.stderr)

  with tf.control_dependencies([tf.cond(ok, tf.no_op, warn)]):
    return skipped, (tf.identity(position), element, ok)


def pad_ground_truth(element, max_boxes):
  """Pads boxes/labels/is_crowd to max_boxes rows (label -1, box 0, crowd False).

  Crowd rows are moved after the others, so an image with more than max_boxes
  boxes (reported on stderr) loses crowd boxes first.
  """
  labels, is_crowd = element["labels"], element["is_crowd"]
  count = tf.shape(labels)[0]

  def report():
    with tf.control_dependencies([tf.print("ssd_tf.data: image", element.get("image_id", -1), "has", count,
                                           "boxes; kept", max_boxes, "(config.data.max_boxes)",
                                           output_stream=sys.stderr)]):
      return tf.identity(count)

  count = tf.cond(count > max_boxes, report, lambda: count)
  order = tf.argsort(tf.cast(is_crowd, tf.int32), stable=True)[:max_boxes]
  pad = max_boxes - tf.minimum(count, max_boxes)
  out = dict(element)
  out["boxes"] = tf.pad(tf.gather(element["boxes"], order), [[0, pad], [0, 0]])
  out["labels"] = tf.pad(tf.gather(labels, order), [[0, pad]], constant_values=-1)
  out["is_crowd"] = tf.pad(tf.gather(is_crowd, order), [[0, pad]], constant_values=False)
  out["boxes"].set_shape([max_boxes, 4])
  out["labels"].set_shape([max_boxes])
  out["is_crowd"].set_shape([max_boxes])
  return out


def _options(data_cfg):
  options = tf.data.Options()
  options.deterministic = data_cfg.deterministic
  options.experimental_optimization.map_fusion = True
  return options


def _base_seed(config):
  if config.data.deterministic:
    return int(config.seed)
  return int(np.random.SeedSequence().generate_state(1)[0])


def _epoch_seed(seed, epoch):
  """A stateless seed [2] and a scalar shuffle seed for one epoch."""
  pair = tf.random.experimental.stateless_fold_in(seed, epoch)
  return pair, tf.random.stateless_uniform([], pair, minval=None, maxval=None, dtype=tf.int64)


def _interleave(files, deterministic):
  """Shard paths (string tensor) -> serialized records, read from up to 8 shards at a time."""
  return tf.data.Dataset.from_tensor_slices(files).interleave(
      tf.data.TFRecordDataset, cycle_length=min(int(files.shape[0]), 8),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def _tfrecord_epochs(config, input_context, seed):
  """(epoch -> serialized records of this pipeline, elements per epoch, parse function).

  Pipelines take whole shards when there are enough; otherwise every n-th record
  of the shards read in a fixed order (so the pipelines' shares never overlap).
  """
  data_cfg = config.data
  files = records.shard_paths(data_cfg.tfrecord_dir, data_cfg.train_split)
  sizes = records.load_summary(data_cfg.tfrecord_dir, data_cfg.train_split)["shard_sizes"]
  num_pipelines, pipeline_id = _pipelines(input_context)
  by_file = len(files) >= num_pipelines
  if by_file:
    files, sizes = files[pipeline_id::num_pipelines], sizes[pipeline_id::num_pipelines]
    epoch_size = sum(sizes)
  else:
    epoch_size = len(range(pipeline_id, sum(sizes), num_pipelines))
  files = tf.constant(files)

  def one_epoch(epoch):
    pair, shuffle_seed = _epoch_seed(seed, epoch)
    if by_file:
      ds = _interleave(tf.gather(files, tf.argsort(tf.random.stateless_uniform(files.shape, pair))),
                       data_cfg.deterministic)
    else:
      ds = _interleave(files, True).shard(num_pipelines, pipeline_id)
    return ds.shuffle(data_cfg.shuffle_buffer, seed=shuffle_seed)

  return one_epoch, epoch_size, records.parse_example


def _tfds_epochs(config, input_context, seed):
  data_cfg = config.data
  base = tfds_source.raw_dataset(data_cfg, data_cfg.train_split, input_context)

  def one_epoch(epoch):
    return base.shuffle(data_cfg.shuffle_buffer, seed=_epoch_seed(seed, epoch)[1])

  return one_epoch, None, lambda raw: raw


def _count(ds):
  return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def train_dataset(config, input_context=None, skip_batches=0):
  """Endless augmented training batches (see the module docstring for the format).

  skip_batches: global batches already consumed (the step a run resumes from);
  honoured exactly when config.data.deterministic, ignored otherwise (a fresh seed
  already gives new data). Skipped elements are read but not decoded.
  """
  data_cfg = config.data
  _check_source(data_cfg)
  num_pipelines, pipeline_id = _pipelines(input_context)
  global_batch = config.train.batch_size
  batch = input_context.get_per_replica_batch_size(global_batch) if input_context else global_batch
  size = config.model.image_size
  seed = tf.constant([_base_seed(config), 0], tf.int64)
  augment_seed = tf.random.experimental.stateless_fold_in(seed, pipeline_id)
  epochs_of = _tfds_epochs if data_cfg.source == "tfds" else _tfrecord_epochs
  one_epoch, epoch_size, parse = epochs_of(config, input_context, seed)

  skip = skip_batches * (global_batch // num_pipelines) if data_cfg.deterministic else 0
  if skip and epoch_size is None:
    epoch_size = _count(one_epoch(tf.constant(0, tf.int64)))
  if skip and epoch_size == 0:
    raise ValueError(f"split '{data_cfg.train_split}' has no images for input pipeline {pipeline_id}")
  start_epoch, offset = divmod(skip, epoch_size) if skip else (0, 0)

  def numbered_epoch(epoch):
    ds = one_epoch(epoch).enumerate()
    return ds.map(lambda index, raw: (tf.stack([epoch, index]), raw))

  def transform(position, element):
    element_seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(augment_seed, position[0]), position[1])
    element = augment.train_transform(element, element_seed, data_cfg.augment, size, data_cfg.mean_rgb)
    element = pad_ground_truth(element, data_cfg.max_boxes)
    keep = ("image", "boxes", "labels", "is_crowd", "image_id")
    return dict({k: element[k] for k in keep}, epoch=position[0])

  ds = tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(numbered_epoch)
  if offset:
    ds = ds.skip(offset)
  parallel = dict(num_parallel_calls=_parallel(data_cfg), deterministic=data_cfg.deterministic)
  ds = ds.map(lambda position, item: (position, *_decoded_or_flagged(item, parse)), **parallel)
  ds = ds.scan(tf.constant(0, tf.int64), _count_skipped).filter(lambda position, element, ok: ok)
  ds = ds.map(lambda position, element, ok: transform(position, element), **parallel)
  ds = ds.batch(batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(data_cfg))


def eval_dataset(config, input_context=None):
  """One pass over config.data.eval_split, resized only, in a fixed order.

  config.eval.num_images > 0 keeps the first that many images. With an input
  context each pipeline takes every n-th image. The last batch may be smaller.
  """
  data_cfg = config.data
  _check_source(data_cfg)
  num_pipelines, pipeline_id = _pipelines(input_context)
  batch = config.eval.batch_size
  if input_context:
    batch = input_context.get_per_replica_batch_size(batch)
  if data_cfg.source == "tfds":
    ds, parse = tfds_source.raw_dataset(data_cfg, data_cfg.eval_split), lambda raw: raw
  else:
    ds = _interleave(tf.constant(records.shard_paths(data_cfg.tfrecord_dir, data_cfg.eval_split)), True)
    parse = records.parse_example
  if config.eval.num_images > 0:
    ds = ds.take(config.eval.num_images)
  if num_pipelines > 1:
    ds = ds.shard(num_pipelines, pipeline_id)
  size = config.model.image_size

  def transform(item):
    element = decode(parse(item))
    element["image"] = images.resize(element["image"], size, config.model.resize_antialias)
    return pad_ground_truth(element, data_cfg.max_boxes)

  ds = ds.map(transform, num_parallel_calls=_parallel(data_cfg), deterministic=True)
  eval_options = _options(data_cfg)
  eval_options.deterministic = True
  return ds.batch(batch).prefetch(tf.data.AUTOTUNE).with_options(eval_options)
