"""Synthetic COCO-layout dataset: valid COCO json, deterministic, sizes, occlusion rule, full-object boxes."""

import contextlib
import filecmp
import io
import json
import os

import numpy as np
from pycocotools.coco import COCO
import pytest

from ssd_tf.data import coco
from ssd_tf.data import synthetic


def _load(root, split):
  with contextlib.redirect_stdout(io.StringIO()):
    return COCO(coco.json_path(root, split))


def test_valid_coco_layout_with_sizes_from_small_to_large(tmp_path):
  root = str(tmp_path / "a")
  paths = synthetic.write_dataset(root, num_train=60, num_val=6, side_range=(200, 260), seed=1, verbose=False)
  assert sorted(paths) == ["train2017", "val2017"]
  gt = _load(root, "train2017")
  assert [c["id"] for c in gt.loadCats(gt.getCatIds())] == [1, 3, 5, 7, 9, 11, 13, 15]
  assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(synthetic.CLASSES)
  assert len(gt.getImgIds()) == 60
  assert not set(gt.getImgIds()) & set(_load(root, "val2017").getImgIds())
  relative_sides, shapes = [], set()
  for image_id, info in gt.imgs.items():
    anns = gt.loadAnns(gt.getAnnIds(imgIds=image_id))
    assert 1 <= len(anns) <= 6
    assert 200 <= info["height"] <= 260 and 200 <= info["width"] <= 260
    shapes.add((info["height"], info["width"]))
    assert os.path.isfile(os.path.join(root, "train2017", info["file_name"]))
    for a in anns:
      x, y, w, h = a["bbox"]
      assert x >= 0 and y >= 0 and x + w <= info["width"] and y + h <= info["height"]
      assert 0 < a["area"] <= w * h and a["iscrowd"] == 0
      relative_sides.append(np.sqrt(w * h) / min(info["height"], info["width"]))
  relative_sides = np.array(relative_sides)
  assert relative_sides.min() >= 0.05 and relative_sides.max() <= 0.71
  assert (relative_sides < 0.12).sum() >= 10 and (relative_sides > 0.45).sum() >= 10
  assert len(shapes) > 30                                        # aspects vary
  per_class = np.bincount([a["category_id"] for a in gt.anns.values()], minlength=16)[1::2]
  assert per_class.min() >= 0.5 * per_class.mean()               # classes balanced


def test_deterministic_by_seed_and_independent_of_workers(tmp_path):
  a, b, c = (str(tmp_path / n) for n in "abc")
  synthetic.write_split(a, "val2017", 8, seed=5, verbose=False)
  synthetic.write_split(b, "val2017", 8, seed=5, num_workers=2, verbose=False)
  synthetic.write_split(c, "val2017", 8, seed=6, verbose=False)
  with open(coco.json_path(a, "val2017")) as f, open(coco.json_path(b, "val2017")) as g:
    assert json.load(f) == json.load(g)
  names = sorted(os.listdir(os.path.join(a, "val2017")))
  match, mismatch, _ = filecmp.cmpfiles(os.path.join(a, "val2017"), os.path.join(b, "val2017"), names,
                                        shallow=False)
  assert len(match) == 8 and not mismatch
  _, mismatch, _ = filecmp.cmpfiles(os.path.join(a, "val2017"), os.path.join(c, "val2017"), names,
                                    shallow=False)
  assert len(mismatch) == 8


def test_occlusion_rule_and_full_object_boxes():
  occluded = 0
  for index in range(40):
    image, objects = synthetic.render_image(seed=2, split_id=1, index=index, height=240, width=300,
                                            max_objects=6)
    assert image.shape == (240, 300, 3) and image.dtype == np.uint8
    for obj in objects:
      assert obj["area"] >= synthetic.MIN_VISIBLE * obj["full_area"]   # never more than 60% hidden
      y, x, h, w = obj["box"]
      # the box is the full shape's box: the unoccluded shape fills it edge to edge
      assert synthetic.shape_mask(synthetic.CLASSES[obj["label"] - 1], h, w).sum() == obj["full_area"]
      occluded += obj["area"] < obj["full_area"]
    assert objects[-1]["area"] == objects[-1]["full_area"]               # the top shape is whole
  assert occluded >= 10


@pytest.mark.parametrize("name", synthetic.CLASSES)
def test_every_shape_touches_all_four_sides_of_its_box(name):
  for height, width in [(8, 8), (9, 14), (41, 25), (120, 170)]:
    mask = synthetic.shape_mask(name, height, width)
    assert mask.shape == (height, width)
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
    assert 0.15 < mask.mean() <= 1.0


def test_bad_arguments_are_named(tmp_path):
  with pytest.raises(ValueError, match="synthetic split"):
    synthetic.write_split(str(tmp_path), "test2017", 1, verbose=False)
  with pytest.raises(ValueError, match="side_range"):
    synthetic.write_split(str(tmp_path), "val2017", 1, side_range=(300, 200), verbose=False)
  with pytest.raises(ValueError, match="max_objects"):
    synthetic.write_split(str(tmp_path), "val2017", 1, max_objects=9, verbose=False)
