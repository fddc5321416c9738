"""tfds coco/2017 as a source: tfds' real builder, run offline on a small COCO layout, read through the
adapter, must give what prepare + TFRecords give for the same files."""

import copy
import json
import os
import shutil
from unittest import mock
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ssd_tf import defaults
from ssd_tf.data import coco
from ssd_tf.data import pipeline
from ssd_tf.data import prepare
from ssd_tf.data import records
from ssd_tf.data import tfds_source
from ssd_tf.label_map import LabelMap

NUM_IMAGES = 6


def _subset(coco_tiny_dir, split, out_dir):
  """NUM_IMAGES images of a coco_tiny split (crowd ones first), with edge cases written in: the last
  image loses its annotations, one box is made 0.5 px wide. (Boxes past the image edge cannot be
  tested here: tfds' BBoxFeature refuses them when it builds the dataset.)"""
  with open(coco.json_path(str(coco_tiny_dir), split)) as f:
    data = json.load(f)
  crowd_ids = {a["image_id"] for a in data["annotations"] if a["iscrowd"]}
  images = sorted(data["images"], key=lambda i: (i["id"] not in crowd_ids, i["id"]))[:NUM_IMAGES]
  ids = [i["id"] for i in images]
  annotations = [copy.deepcopy(a) for a in data["annotations"] if a["image_id"] in ids[:-1]]
  annotations[0]["bbox"][2] = 0.5
  os.makedirs(os.path.join(out_dir, split), exist_ok=True)
  for info in images:
    shutil.copy(os.path.join(coco_tiny_dir, split, info["file_name"]), os.path.join(out_dir, split))
  return dict(images=images, annotations=annotations, categories=data["categories"])


@pytest.fixture(scope="module")
def sources(coco_tiny_dir, tmp_path_factory):
  """(config for tfds, config for tfrecords, the val json) over the same files."""
  root = tmp_path_factory.mktemp("tfds")
  layout = str(root / "coco")
  os.makedirs(os.path.join(layout, "annotations"))
  jsons = {}
  for split in ("train2017", "val2017"):
    jsons[split] = _subset(coco_tiny_dir, split, layout)
    with open(coco.json_path(layout, split), "w") as f:
      json.dump(jsons[split], f)
  test_info = dict(images=jsons["val2017"]["images"][:1], categories=jsons["val2017"]["categories"])
  os.makedirs(os.path.join(layout, "test2017"))
  shutil.copy(os.path.join(layout, "val2017", test_info["images"][0]["file_name"]),
              os.path.join(layout, "test2017"))
  with open(os.path.join(layout, "annotations", "image_info_test2017.json"), "w") as f:
    json.dump(test_info, f)

  # tfds' coco builder asks its download manager for the five extracted zips: hand it the layout.
  with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                         lambda self, urls: {key: layout for key in urls}):
    tfds.builder(tfds_source.NAME, data_dir=str(root / "tfds_data")).download_and_prepare()

  manual_dir = str(root / "manual")
  os.makedirs(manual_dir)
  with zipfile.ZipFile(os.path.join(manual_dir, tfds_source.ANNOTATIONS_ZIP), "w") as z:
    z.writestr("annotations/instances_val2017.json", json.dumps(jsons["val2017"]))

  tfds_config = defaults.base_config()
  tfds_config.data.update(dict(source="tfds", tfds_data_dir=str(root / "tfds_data"),
                               tfds_manual_dir=manual_dir))
  record_config = defaults.base_config()
  record_config.data.tfrecord_dir = str(root / "records")
  for split in ("train2017", "val2017"):
    prepare.prepare_split(layout, split, record_config.data.tfrecord_dir, num_shards=2, num_workers=1,
                          verbose=False)
  for config in (tfds_config, record_config):
    config.model.image_size = 96
    config.data.max_boxes = 40
    config.train.batch_size = 2
    config.eval.batch_size = 4
  return tfds_config, record_config, jsons["val2017"]


def _by_id(elements):
  return {int(e["image_id"]): {k: v.numpy() for k, v in e.items()} for e in elements}


def _sorted_rows(element):
  """Box rows in a canonical order (tfds orders an image's annotations by id, prepare as in the json)."""
  keys = np.concatenate([element["boxes"], element["labels"][:, None], element["is_crowd"][:, None]], axis=1)
  order = np.lexsort(keys.T[::-1])
  return {k: element[k][order] for k in ("boxes", "labels", "is_crowd")}


@pytest.mark.parametrize("keep_empty", [True, False])
def test_tfds_elements_equal_prepared_records(sources, keep_empty):
  tfds_config, record_config, val_json = sources
  tfds_config.data.keep_empty_images = keep_empty
  from_tfds = _by_id(tfds_source.raw_dataset(tfds_config.data, "val2017"))
  paths = records.shard_paths(record_config.data.tfrecord_dir, "val2017")
  from_records = _by_id(tf.data.TFRecordDataset(paths).map(records.parse_example))
  empty_id = val_json["images"][-1]["id"]
  if not keep_empty:
    from_records.pop(empty_id)
  assert sorted(from_tfds) == sorted(from_records) == sorted(
      i["id"] for i in val_json["images"] if keep_empty or i["id"] != empty_id)
  for image_id, ours in from_records.items():
    theirs = from_tfds[image_id]
    assert theirs["encoded"] == ours["encoded"]
    np.testing.assert_array_equal(theirs["original_size"], ours["original_size"])
    assert theirs["labels"].dtype == np.int32 and theirs["is_crowd"].dtype == bool
    theirs, ours = _sorted_rows(theirs), _sorted_rows(ours)
    np.testing.assert_allclose(theirs["boxes"], ours["boxes"], atol=1e-6)
    np.testing.assert_array_equal(theirs["labels"], ours["labels"])
    np.testing.assert_array_equal(theirs["is_crowd"], ours["is_crowd"])
  assert any(e["is_crowd"].any() for e in from_tfds.values())
  total = sum(len(a["labels"]) for a in from_tfds.values())
  assert total == len(val_json["annotations"]) - 1                       # the 0.5 px box, dropped


def test_tfds_batches_match_tfrecord_batches(sources):
  tfds_config, record_config, _ = sources
  tfds_config.data.keep_empty_images = True

  def eval_by_id(config):
    out = {}
    for batch in pipeline.eval_dataset(config):
      for i, image_id in enumerate(batch["image_id"].numpy()):
        out[int(image_id)] = {k: v[i].numpy() for k, v in batch.items()}
    return out

  a, b = eval_by_id(tfds_config), eval_by_id(record_config)
  assert sorted(a) == sorted(b)
  for image_id in a:
    np.testing.assert_allclose(a[image_id]["image"], b[image_id]["image"], atol=1e-4)
    assert sorted(a[image_id]["labels"]) == sorted(b[image_id]["labels"])

  train = next(iter(pipeline.train_dataset(tfds_config)))
  assert train["image"].shape == (2, 96, 96, 3) and train["labels"].shape == (2, 40)


def test_tfds_training_resumes_exactly(sources):
  config = sources[0].copy_and_resolve_references()
  config.data.deterministic = True
  config.model.image_size = 32
  uninterrupted = [b["image"].numpy() for b in pipeline.train_dataset(config).take(6)]  # 3 per epoch
  resumed = [b["image"].numpy() for b in pipeline.train_dataset(config, skip_batches=4).take(2)]
  np.testing.assert_array_equal(np.stack(uninterrupted[4:]), np.stack(resumed))


def test_tfds_label_map_has_coco_ids(sources, tmp_path):
  tfds_config, record_config, _ = sources
  expected = LabelMap.load(records.label_map_path(record_config.data.tfrecord_dir))
  assert pipeline.label_map(tfds_config).entries == expected.entries
  assert expected.entries[-1]["category_id"] == 90              # ids with gaps, labels 1..80
  missing = tfds_config.copy_and_resolve_references()
  missing.data.tfds_manual_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="annotations_trainval2017.zip"):
    tfds_source.label_map(missing.data)


def test_unbuilt_dataset_names_the_missing_zips(tmp_path):
  data_cfg = defaults.base_config().data
  data_cfg.update(dict(source="tfds", tfds_data_dir=str(tmp_path / "data"), tfds_manual_dir=str(tmp_path)))
  (tmp_path / "val2017.zip").write_bytes(b"")
  missing = "train2017.zip, test2017.zip, annotations_trainval2017.zip, image_info_test2017.zip"
  with pytest.raises(FileNotFoundError, match=f"lacks {missing}"):
    tfds_source.raw_dataset(data_cfg, "train2017")
