"""Real COCO 2017 sample: prepare both splits; every annotation round-trips against pycocotools."""

import contextlib
import importlib
import io
import sys

import numpy as np
from pycocotools.coco import COCO
import pytest
import tensorflow as tf

from ssd_tf.data import coco
from ssd_tf.data import prepare
from ssd_tf.data import records
from ssd_tf.label_map import LabelMap


@pytest.fixture(scope="module")
def prepared(coco_tiny_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("coco_tiny_records"))
  summaries = {split: prepare.prepare_split(str(coco_tiny_dir), split, out, num_shards=3, num_workers=2,
                                            verbose=False)
               for split in ("train2017", "val2017")}
  return out, summaries


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_every_annotation_round_trips(coco_tiny_dir, prepared, split):
  out, summaries = prepared
  with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(coco.json_path(str(coco_tiny_dir), split))
  label_map = LabelMap.load(records.label_map_path(out))
  examples = {}
  for path in records.shard_paths(out, split):
    for serialized in tf.data.TFRecordDataset(path):
      element = records.parse_example(serialized)
      examples[int(element["image_id"])] = {k: v.numpy() for k, v in element.items()}

  assert sorted(examples) == sorted(gt.getImgIds())
  assert summaries[split]["images_skipped_undecodable"] == 0 and summaries[split]["boxes_dropped"] == 0
  num_boxes = 0
  for image_id, example in examples.items():
    info = gt.imgs[image_id]
    anns = gt.loadAnns(gt.getAnnIds(imgIds=image_id))
    height, width = example["original_size"]
    assert (height, width) == (info["height"], info["width"])
    assert len(example["labels"]) == len(anns), image_id
    ymin, xmin, ymax, xmax = example["boxes"].astype(np.float64).T
    xywh = np.stack([xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height], axis=-1)
    np.testing.assert_allclose(xywh, [a["bbox"] for a in anns], atol=1e-3, rtol=0)
    np.testing.assert_array_equal(label_map.category_ids(example["labels"]), [a["category_id"] for a in anns])
    np.testing.assert_array_equal(example["is_crowd"], [bool(a["iscrowd"]) for a in anns])
    with open(coco_tiny_dir / split / info["file_name"], "rb") as f:
      assert example["encoded"] == f.read()   # RGB JPEGs are stored as they are
    num_boxes += len(anns)
  assert summaries[split]["boxes"] == num_boxes == len(gt.anns)
  assert summaries[split]["crowd_boxes"] == sum(a["iscrowd"] for a in gt.anns.values())
  names = {c["id"]: c["name"] for c in gt.loadCats(gt.getCatIds())}
  assert [e["name"] for e in label_map.entries] == [names[i] for i in sorted(names)]


def test_overfit_config_reads_the_sample_and_scores_its_training_images(coco_tiny_dir, monkeypatch):
  """configs/coco_tiny_overfit.py: COCO_TINY_DIR is honoured; 80 classes as in the sample's json."""
  monkeypatch.setenv("COCO_TINY_DIR", str(coco_tiny_dir))
  sys.modules.pop("configs.coco_tiny_overfit", None)
  config = importlib.import_module("configs.coco_tiny_overfit").get_config()
  assert config.data.coco_dir == str(coco_tiny_dir)
  assert config.data.eval_split == config.data.train_split == "train2017"
  assert coco.read_split(str(coco_tiny_dir), "train2017").label_map.num_classes == config.model.num_classes
  assert all(config.data.augment[key] == 0.0
             for key in ("photometric_prob", "expand_prob", "crop_prob", "flip_prob"))
