"""COCO 2017 layout on disk: instances json reading, validation, box clean-up, image checks.

Layout: ``<coco_dir>/annotations/instances_<split>.json`` and ``<coco_dir>/<split>/<file_name>``.
COCO boxes are ``[x, y, w, h]`` in pixels of the original image; they leave this module as
normalized ``[ymin, xmin, ymax, xmax]`` float32 (the package convention).

No TensorFlow here: :func:`check_image` runs in prepare's worker processes.
"""

import dataclasses
import io
import json
import os

import numpy as np
from PIL import Image

from ssd_tf.label_map import LabelMap

# Boxes narrower or shorter than this (pixels, after clipping to the image) are dropped.
MIN_BOX_PIXELS = 1.0
# A coordinate moved by more than this (pixels) when clipped counts as a clipped box.
_CLIP_TOLERANCE = 1e-3
# Image formats tf.io.decode_image reads correctly as stored (16-bit PNGs: the high byte of each
# sample; PIL's RGB conversion would clip them to white); anything else is re-encoded.
_KEEP_AS_IS = {("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "L"), ("PNG", "I;16"),
               ("PNG", "I;16B"), ("PNG", "I")}
# check_image's reason for an image over the pixel limit starts with this.
TOO_LARGE = "too large"


@dataclasses.dataclass
class ImageRecord:
  """One image of the json: id, file path, size, and its raw annotations."""
  image_id: int
  file_name: str
  path: str
  height: int
  width: int
  annotations: list


@dataclasses.dataclass
class CocoSplit:
  """A validated split: images in json order, with their annotations, and the label map."""
  split: str
  json_path: str
  images: list
  label_map: LabelMap


def json_path(coco_dir, split):
  return os.path.join(coco_dir, "annotations", f"instances_{split}.json")


def read_split(coco_dir, split):
  """Reads and validates ``instances_<split>.json`` and the image files it lists.

  Raises FileNotFoundError (naming the count and the first few) when images listed in
  the json are missing on disk, before anything is written; ValueError for
  annotations that point at unknown images or categories.
  """
  path = json_path(coco_dir, split)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"COCO annotations not found: {path} (expected the COCO 2017 layout "
                            f"<coco_dir>/annotations/instances_<split>.json)")
  image_dir = os.path.join(coco_dir, split)
  if not os.path.isdir(image_dir):
    raise FileNotFoundError(f"COCO image folder not found: {image_dir}")
  with open(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from e
  for key in ("images", "categories"):
    if key not in data:
      raise ValueError(f"{path}: no '{key}' list")
  label_map = LabelMap.from_coco_categories(data["categories"])
  known_categories = {c["id"] for c in data["categories"]}

  images, by_id = [], {}
  for info in data["images"]:
    record = ImageRecord(int(info["id"]), info["file_name"], os.path.join(image_dir, info["file_name"]),
                         int(info["height"]), int(info["width"]), [])
    if record.image_id in by_id:
      raise ValueError(f"{path}: image id {record.image_id} is listed twice")
    by_id[record.image_id] = record
    images.append(record)
  for ann in data.get("annotations", []):
    record = by_id.get(ann["image_id"])
    if record is None:
      raise ValueError(f"{path}: annotation {ann.get('id')} refers to image id {ann['image_id']}, "
                       "which is not in 'images'")
    if ann["category_id"] not in known_categories:
      raise ValueError(f"{path}: annotation {ann.get('id')} has category id {ann['category_id']}, "
                       "which is not in 'categories'")
    record.annotations.append(ann)

  missing = [r.file_name for r in images if not os.path.isfile(r.path)]
  if missing:
    raise FileNotFoundError(f"{len(missing)} of {len(images)} images listed in {path} are missing "
                            f"from {image_dir}; first: {', '.join(missing[:5])}")
  return CocoSplit(split, path, images, label_map)


def clean_boxes(xywh, height, width):
  """COCO ``[x, y, w, h]`` pixel boxes [K, 4] -> kept normalized yxyx boxes.

  Boxes are clipped to the image; those narrower or shorter than MIN_BOX_PIXELS
  afterwards (including boxes wholly outside) are dropped.
  Returns (boxes float32 [K', 4], keep int indices [K'], num_clipped among the kept).
  """
  xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
  x0, y0 = xywh[:, 0], xywh[:, 1]
  x1, y1 = x0 + xywh[:, 2], y0 + xywh[:, 3]
  corners = np.stack([y0, x0, y1, x1], axis=-1)
  clipped = np.clip(corners, 0.0, [height, width, height, width])
  sizes_ok = ((clipped[:, 2] - clipped[:, 0] >= MIN_BOX_PIXELS) &
              (clipped[:, 3] - clipped[:, 1] >= MIN_BOX_PIXELS))  # False for NaN too
  keep = np.flatnonzero(sizes_ok)
  moved = np.abs(clipped - corners).max(axis=-1) > _CLIP_TOLERANCE
  boxes = clipped[keep] / np.array([height, width, height, width], np.float64)
  return boxes.astype(np.float32), keep, int(moved[keep].sum())


def image_annotations(record, label_map):
  """An image's annotations -> dict(boxes [K,4] normalized, labels int32 [K] 1..C,
  is_crowd bool [K], num_clipped, num_dropped)."""
  anns = record.annotations
  xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
  boxes, keep, num_clipped = clean_boxes(xywh, record.height, record.width)
  labels = label_map.labels([anns[i]["category_id"] for i in keep])
  is_crowd = np.array([bool(anns[i].get("iscrowd", 0)) for i in keep], bool)
  return dict(boxes=boxes, labels=labels, is_crowd=is_crowd, num_clipped=num_clipped,
              num_dropped=len(anns) - len(keep))


def check_image(task):
  """Reads and fully decodes one image file; runs in a worker process.

  task: (image_id, path, expected height, expected width, max_pixels (0: no limit)).
  Returns (image_id, encoded bytes or None, status): status is "ok" (bytes as
  stored: RGB or grey JPEG / PNG, 8 or 16 bits), "converted" (made RGB and re-encoded:
  CMYK JPEGs as JPEG quality 95; palette and alpha PNGs and other formats as PNG)
  or the reason the image is skipped (one over max_pixels: before it is decoded).
  """
  image_id, path, height, width, max_pixels = task
  try:
    with open(path, "rb") as f:
      data = f.read()
    image = Image.open(io.BytesIO(data))  # reads the header only
    image_format, mode, size = image.format, image.mode, image.size
    if max_pixels and size[0] * size[1] > max_pixels:
      return image_id, None, (f"{TOO_LARGE}: {size[1]}x{size[0]} is over data.max_image_pixels="
                              f"{max_pixels}")
    if image_format == "JPEG":
      # DCT-scaled decoding: much less work, but still reads (and checks) all the data
      image.draft(mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
    image.load()
  except Exception as e:  # noqa: BLE001  (PIL raises many types for corrupt files)
    return image_id, None, f"cannot decode: {type(e).__name__}: {e}"
  if size != (width, height):
    return image_id, None, f"size {size[1]}x{size[0]} differs from the json's {height}x{width}"
  if (image_format, mode) in _KEEP_AS_IS:
    return image_id, data, "ok"
  with Image.open(io.BytesIO(data)) as full:
    rgb = full.convert("RGB")
  out = io.BytesIO()
  if image_format == "JPEG":
    rgb.save(out, "JPEG", quality=95)
  else:
    rgb.save(out, "PNG")  # lossless for lossless sources
  return image_id, out.getvalue(), "converted"
