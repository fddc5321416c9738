"""Contiguous training labels <-> dataset category ids and names.

Label 0 is background; foreground labels 1..C follow the dataset's categories
sorted by id. Stored as ``label_map.json``: a list ordered by label of
``{"label": 1, "category_id": 1, "name": "person"}``.
"""

import json

import numpy as np

from ssd_tf import files

# COCO 2017's 80 object categories (id, name), as in its instances json; ids 1..90 with 10 unused.
COCO_CATEGORIES = (
    (1, 'person'), (2, 'bicycle'), (3, 'car'), (4, 'motorcycle'), (5, 'airplane'), (6, 'bus'), (7, 'train'),
    (8, 'truck'), (9, 'boat'), (10, 'traffic light'), (11, 'fire hydrant'), (13, 'stop sign'),
    (14, 'parking meter'), (15, 'bench'), (16, 'bird'), (17, 'cat'), (18, 'dog'), (19, 'horse'),
    (20, 'sheep'), (21, 'cow'), (22, 'elephant'), (23, 'bear'), (24, 'zebra'), (25, 'giraffe'),
    (27, 'backpack'), (28, 'umbrella'), (31, 'handbag'), (32, 'tie'), (33, 'suitcase'), (34, 'frisbee'),
    (35, 'skis'), (36, 'snowboard'), (37, 'sports ball'), (38, 'kite'), (39, 'baseball bat'),
    (40, 'baseball glove'), (41, 'skateboard'), (42, 'surfboard'), (43, 'tennis racket'), (44, 'bottle'),
    (46, 'wine glass'), (47, 'cup'), (48, 'fork'), (49, 'knife'), (50, 'spoon'), (51, 'bowl'),
    (52, 'banana'), (53, 'apple'), (54, 'sandwich'), (55, 'orange'), (56, 'broccoli'), (57, 'carrot'),
    (58, 'hot dog'), (59, 'pizza'), (60, 'donut'), (61, 'cake'), (62, 'chair'), (63, 'couch'),
    (64, 'potted plant'), (65, 'bed'), (67, 'dining table'), (70, 'toilet'), (72, 'tv'), (73, 'laptop'),
    (74, 'mouse'), (75, 'remote'), (76, 'keyboard'), (77, 'cell phone'), (78, 'microwave'), (79, 'oven'),
    (80, 'toaster'), (81, 'sink'), (82, 'refrigerator'), (84, 'book'), (85, 'clock'), (86, 'vase'),
    (87, 'scissors'), (88, 'teddy bear'), (89, 'hair drier'), (90, 'toothbrush'),
)
# The name of a label a model has but no dataset category (torchvision's unused COCO slots):
# its detections are drawn but not scored.
UNUSED_NAME = "N/A"


class LabelMap:
  """Maps contiguous labels 1..C to category ids and names, and back."""

  def __init__(self, entries):
    entries = sorted(entries, key=lambda e: e["label"])
    labels = [e["label"] for e in entries]
    if labels != list(range(1, len(entries) + 1)):
      raise ValueError(f"label map labels must be 1..{len(entries)} without gaps, got {labels[:10]}...")
    ids = [e["category_id"] for e in entries]
    if len(set(ids)) != len(ids):
      raise ValueError("label map has duplicate category ids")
    self.entries = [dict(label=int(e["label"]), category_id=int(e["category_id"]), name=str(e["name"]))
                    for e in entries]
    self._label_of_id = {e["category_id"]: e["label"] for e in self.entries}

  @classmethod
  def from_coco_categories(cls, categories):
    """From the ``categories`` list of a COCO json: labels follow sorted ids."""
    ordered = sorted(categories, key=lambda c: c["id"])
    return cls([dict(label=i + 1, category_id=c["id"], name=c["name"]) for i, c in enumerate(ordered)])

  @classmethod
  def coco(cls):
    """COCO 2017's 80 categories as labels 1..80 (sorted ids: the order prepare gives them)."""
    return cls.from_coco_categories([dict(id=i, name=n) for i, n in COCO_CATEGORIES])

  @classmethod
  def load(cls, path):
    with open(path) as f:
      try:
        return cls(json.load(f))
      except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a valid label_map.json ({e})") from e

  def save(self, path):
    """Writes label_map.json atomically."""
    files.write_json(path, self.entries, indent=1)

  @property
  def num_classes(self):
    return len(self.entries)

  def category_ids(self, labels):
    """int array of labels 1..C -> int64 array of category ids."""
    table = np.array([0] + [e["category_id"] for e in self.entries], dtype=np.int64)
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 1 or labels.max() > self.num_classes):
      raise ValueError(f"labels must be in 1..{self.num_classes}, got {labels.min()}..{labels.max()}")
    return table[labels]

  def labels(self, category_ids):
    """Iterable of category ids -> int32 array of labels 1..C (KeyError names an unknown id)."""
    try:
      return np.array([self._label_of_id[int(i)] for i in category_ids], dtype=np.int32)
    except KeyError as e:
      raise KeyError(f"category id {e.args[0]} is not in the label map") from None

  def name(self, label):
    return self.entries[int(label) - 1]["name"]

  def names(self):
    """Names in label order, index 0 = label 1."""
    return [e["name"] for e in self.entries]
