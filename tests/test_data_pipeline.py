"""tf.data pipelines on a small prepared synthetic dataset: format, padding, determinism, resume, sharding."""

import json

import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import defaults
from ssd_tf import images
from ssd_tf.data import coco
from ssd_tf.data import pipeline
from ssd_tf.data import prepare
from ssd_tf.data import records
from ssd_tf.data import synthetic

NUM_TRAIN, NUM_VAL = 24, 8
SIZE, BATCH, MAX_BOXES = 64, 4, 8


@pytest.fixture(scope="module")
def dataset_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipeline")
  coco_dir, tfrecord_dir = str(root / "coco"), str(root / "records")
  synthetic.write_dataset(coco_dir, NUM_TRAIN, NUM_VAL, side_range=(96, 128), seed=3, verbose=False)
  prepare.prepare_split(coco_dir, "train2017", tfrecord_dir, num_shards=4, num_workers=1, verbose=False)
  prepare.prepare_split(coco_dir, "val2017", tfrecord_dir, num_shards=2, num_workers=1, verbose=False)
  return coco_dir, tfrecord_dir


def _config(tfrecord_dir, deterministic=True, seed=0):
  config = defaults.base_config()
  config.seed = seed
  config.model.image_size = SIZE
  config.data.tfrecord_dir = tfrecord_dir
  config.data.deterministic = deterministic
  config.data.max_boxes = MAX_BOXES
  config.data.shuffle_buffer = 16
  config.train.batch_size = BATCH
  config.eval.batch_size = 3
  return config


def _batches(dataset, n):
  return [{k: v.numpy() for k, v in batch.items()} for batch in dataset.take(n)]


def test_train_batches_have_the_contract_format(dataset_dirs):
  batch = _batches(pipeline.train_dataset(_config(dataset_dirs[1], deterministic=False)), 1)[0]
  assert sorted(batch) == ["boxes", "epoch", "image", "image_id", "is_crowd", "labels"]
  with open(coco.json_path(dataset_dirs[0], "train2017")) as f:
    ids = {i["id"] for i in json.load(f)["images"]}
  assert batch["image_id"].dtype == np.int64 and set(batch["image_id"]) <= ids
  assert batch["epoch"].dtype == np.int64 and list(batch["epoch"]) == [0] * BATCH
  assert batch["image"].shape == (BATCH, SIZE, SIZE, 3) and batch["image"].dtype == np.float32
  assert batch["image"].min() >= 0 and batch["image"].max() <= 255 and batch["image"].max() > 100
  assert batch["boxes"].shape == (BATCH, MAX_BOXES, 4) and batch["boxes"].dtype == np.float32
  assert batch["labels"].shape == (BATCH, MAX_BOXES) and batch["labels"].dtype == np.int32
  assert batch["is_crowd"].shape == (BATCH, MAX_BOXES) and batch["is_crowd"].dtype == bool
  padded = batch["labels"] == -1
  assert padded.any() and (~padded).any()
  assert np.all(batch["boxes"][padded] == 0) and not batch["is_crowd"][padded].any()
  real = batch["boxes"][~padded]
  assert np.all(real >= 0) and np.all(real <= 1) and np.all(real[:, 2:] > real[:, :2])
  assert set(batch["labels"][~padded]) <= set(range(1, len(synthetic.CLASSES) + 1))
  # padding rows come after the real ones
  assert all(np.array_equal(row, np.sort(row)[::-1]) for row in (batch["labels"] >= 0).astype(int))


def test_deterministic_runs_repeat_and_the_seed_matters(dataset_dirs):
  first = _batches(pipeline.train_dataset(_config(dataset_dirs[1])), 3)
  again = _batches(pipeline.train_dataset(_config(dataset_dirs[1])), 3)
  other = _batches(pipeline.train_dataset(_config(dataset_dirs[1], seed=1)), 3)
  for a, b in zip(first, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_skip_batches_resumes_where_an_uninterrupted_run_is(dataset_dirs):
  config = _config(dataset_dirs[1])
  uninterrupted = _batches(pipeline.train_dataset(config), 9)    # 6 batches per epoch: crosses into epoch 2
  resumed = _batches(pipeline.train_dataset(config, skip_batches=7), 2)
  for a, b in zip(uninterrupted[7:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  # a new epoch reshuffles: epoch 2 does not replay epoch 1's order
  assert not np.array_equal(uninterrupted[0]["image"], uninterrupted[6]["image"])


def _epoch_ids(config, input_context):
  one_epoch, size, parse = pipeline._tfrecord_epochs(config, input_context, tf.constant([0, 0], tf.int64))
  ids = [int(parse(r)["image_id"]) for r in one_epoch(tf.constant(0, tf.int64))]
  assert len(ids) == size
  return ids


@pytest.mark.parametrize("num_pipelines", [2, 6])   # whole shards each / every n-th record (4 shards)
def test_input_pipelines_split_an_epoch(dataset_dirs, num_pipelines):
  config = _config(dataset_dirs[1])
  shares = [_epoch_ids(config, tf.distribute.InputContext(num_pipelines, i, num_pipelines))
            for i in range(num_pipelines)]
  every = [i for share in shares for i in share]
  assert len(every) == len(set(every)) == NUM_TRAIN


def test_eval_batches(dataset_dirs):
  coco_dir, tfrecord_dir = dataset_dirs
  config = _config(tfrecord_dir)
  batches = _batches(pipeline.eval_dataset(config), 10)
  assert [len(b["image_id"]) for b in batches] == [3, 3, 2]
  with open(coco.json_path(coco_dir, "val2017")) as f:
    info = {i["id"]: i for i in json.load(f)["images"]}
  ids = np.concatenate([b["image_id"] for b in batches])
  assert sorted(ids) == sorted(info) and batches[0]["image_id"].dtype == np.int64
  sizes = np.concatenate([b["original_size"] for b in batches])
  np.testing.assert_array_equal(sizes, [[info[i]["height"], info[i]["width"]] for i in ids])
  assert sizes.dtype == np.int32
  assert batches[0]["image"].shape == (3, SIZE, SIZE, 3) and batches[0]["labels"].shape == (3, MAX_BOXES)

  # image: the decoded file, resized; boxes: as prepared (no augmentation)
  first_shard = records.shard_paths(tfrecord_dir, "val2017")[0]
  raw = records.parse_example(next(iter(tf.data.TFRecordDataset(first_shard))))
  assert int(raw["image_id"]) == ids[0]
  np.testing.assert_allclose(batches[0]["image"][0],
                             images.resize(pipeline.decode(raw)["image"], SIZE).numpy(), atol=1e-4)
  count = len(raw["labels"])
  np.testing.assert_array_equal(batches[0]["boxes"][0][:count], raw["boxes"].numpy())
  assert np.all(batches[0]["labels"][0][count:] == -1)

  config.eval.num_images = 5
  assert sum(len(b["image_id"]) for b in _batches(pipeline.eval_dataset(config), 10)) == 5
  config.eval.num_images = 0
  config.eval.batch_size = 4      # global: 2 per replica
  shares = [np.concatenate([b["image_id"] for b in _batches(
      pipeline.eval_dataset(config, tf.distribute.InputContext(2, i, 2)), 10)]) for i in range(2)]
  assert sorted(np.concatenate(shares)) == sorted(ids) and not set(shares[0]) & set(shares[1])


def test_pad_ground_truth_keeps_objects_before_crowd():
  element = dict(boxes=tf.constant([[0.1, 0.1, 0.2, 0.2], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.4, 0.4],
                                    [0.5, 0.5, 0.6, 0.6], [0.0, 0.0, 0.5, 0.5]]),
                 labels=tf.constant([1, 2, 3, 4, 5]), is_crowd=tf.constant([False, True, False, False, True]),
                 image_id=tf.constant(11, tf.int64))
  truncated = pipeline.pad_ground_truth(element, 3)
  np.testing.assert_array_equal(truncated["labels"].numpy(), [1, 3, 4])
  np.testing.assert_allclose(truncated["boxes"].numpy()[1], [0.3, 0.3, 0.4, 0.4])
  padded = pipeline.pad_ground_truth(element, 7)
  np.testing.assert_array_equal(padded["labels"].numpy(), [1, 3, 4, 2, 5, -1, -1])
  np.testing.assert_array_equal(padded["is_crowd"].numpy(), [False, False, False, True, True, False, False])
  np.testing.assert_array_equal(padded["boxes"].numpy()[5:], np.zeros([2, 4]))


def test_under_mirrored_strategy(dataset_dirs):
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  config = _config(dataset_dirs[1])
  batches = strategy.distribute_datasets_from_function(lambda ctx: pipeline.train_dataset(config, ctx))
  per_replica = strategy.experimental_local_results(next(iter(batches))["image"])
  assert [tuple(t.shape) for t in per_replica] == [(BATCH // 2, SIZE, SIZE, 3)] * 2


def test_configuration_errors_are_clear(dataset_dirs, tmp_path):
  config = _config(dataset_dirs[1])
  config.data.source = "files"
  with pytest.raises(ValueError, match="config.data.source='files'"):
    pipeline.train_dataset(config)
  config = _config("")
  with pytest.raises(ValueError, match="tfrecord_dir is empty"):
    pipeline.eval_dataset(config)
  config = _config(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="split 'train2017' is not prepared"):
    pipeline.train_dataset(config)
  assert pipeline.label_map(_config(dataset_dirs[1])).names() == list(synthetic.CLASSES)


def test_a_record_that_does_not_decode_is_skipped_and_counted(dataset_dirs, tmp_path, capfd):
  """A shard written by other tools may hold an undecodable image or bytes that are no Example:
  training skips those records, warns for each with the image id and the running count, and goes
  on with the others."""
  _, tfrecord_dir = dataset_dirs
  bad_dir = tmp_path / "records"
  bad_dir.mkdir()
  summary = json.load(open(records.summary_path(tfrecord_dir, "train2017")))
  json.dump(dict(summary, num_shards=1), open(records.summary_path(str(bad_dir), "train2017"), "w"))
  (bad_dir / "label_map.json").write_text(open(records.label_map_path(tfrecord_dir)).read())
  good = [r.numpy() for r in tf.data.TFRecordDataset(records.shard_paths(tfrecord_dir, "train2017"))]
  broken = records.encode_example(b"\xff\xd8\xff this is no JPEG", 999, 10, 10, np.zeros((1, 4), np.float32),
                                  np.ones(1, np.int64), np.zeros(1, bool))
  path = bad_dir / records.shard_name("train2017", 0, 1)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for serialized in good[:3] + [broken] + good[3:6] + [b"no Example"] + good[6:8]:
      writer.write(serialized)
  config = _config(str(bad_dir))
  config.data.shuffle_buffer = 1
  batches = _batches(pipeline.train_dataset(config), 4)  # 8 good images per epoch: 2 batches of 4
  assert all(b["image"].shape == (BATCH, SIZE, SIZE, 3) for b in batches)
  # Without the skip, the broken record ends the iteration with an InvalidArgumentError.
  assert len(batches) == 4 and all(b["labels"].max() >= 1 for b in batches)
  warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("ssd_tf.data: training")]
  assert "image id 999 ) does not decode: skipped; 1 record(s) skipped so far" in warnings[0]
  assert "image id -1 ) does not decode: skipped; 2 record(s) skipped so far" in warnings[1]
  # The second epoch's (read ahead, the third's may follow): the count goes on.
  assert "3 record(s)" in warnings[2] and "4 record(s)" in warnings[3] and "of epoch 1" in warnings[3]
