"""A synthetic detection dataset in the COCO 2017 layout: the quickstart's and the tests' data.

Each image (sides drawn from ``side_range``, so aspects vary) has a textured,
noisy background (smooth low-saturation colour noise, thin muted lines, pixel
noise) and 1..max_objects shapes of eight classes. A shape's colour is drawn
from a palette independently of its class (shapes of one image never share a
colour), so the class must be read from the shape: filled and outlined versions
of one outline (circle / ring, square / frame) are different classes. Box sides
run from 6% to 70% of the short image side (log-uniform, so small objects are
common), stretched to aspects 2:3..3:2.

Occlusion rule: shapes are drawn in order, each on top of the earlier ones, and
a shape is only placed if every earlier shape keeps at least 40% of its pixels
visible (so nothing is more than 60% hidden); otherwise another position is
tried, and after 20 tries the shape is left out. The ground-truth box is the
full shape's box, hidden parts included; ``area`` is the visible pixel count
(COCO's area is that of the visible segmentation).

Deterministic: image i of a split depends only on (seed, split, i).
Category ids are odd numbers (1, 3, ..., 15) so that, as in COCO, they differ
from the contiguous labels.
"""

import io
import json
import os
import sys

import numpy as np
from PIL import Image
from PIL import ImageDraw

from ssd_tf import progress
from ssd_tf.data import parallel

CLASSES = ("circle", "ring", "square", "frame", "triangle", "star", "cross", "diamond")
PALETTE = ((230, 40, 40), (40, 190, 60), (40, 80, 230), (240, 200, 30),
           (200, 50, 210), (30, 200, 210), (250, 130, 20), (245, 245, 245))
SIZE_RANGE = (0.06, 0.70)     # box side / short image side
ASPECT_RANGE = (2 / 3, 3 / 2)
MIN_VISIBLE = 0.4             # an earlier shape must keep this fraction of its pixels visible
PLACEMENT_TRIES = 20
_SPLIT_IDS = {"train2017": 1, "val2017": 2}
_IMAGE_ID_STRIDE = 10_000_000  # image ids of split s start at s * stride


def category_id(label):
  """Contiguous label 1..8 -> category id (odd numbers)."""
  return 2 * label - 1


def _star(points=5, inner=0.45):
  """A star's outline, stretched to touch all four sides of the unit square."""
  angles = np.pi / points * np.arange(2 * points) - np.pi / 2
  radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
  xy = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=-1)
  xy = (xy - xy.min(axis=0)) / (xy.max(axis=0) - xy.min(axis=0))
  return [tuple(p) for p in xy]


_POLYGONS = {  # in the unit square, x right, y down
    "triangle": [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)],
    "star": _star(),
    "cross": [(0.35, 0.0), (0.65, 0.0), (0.65, 0.35), (1.0, 0.35), (1.0, 0.65), (0.65, 0.65),
              (0.65, 1.0), (0.35, 1.0), (0.35, 0.65), (0.0, 0.65), (0.0, 0.35), (0.35, 0.35)],
    "diamond": [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)],
}


def shape_mask(name, height, width):
  """bool [height, width] mask of a class's shape filling that box (touching all four sides)."""
  mask = Image.new("L", (width, height), 0)
  draw = ImageDraw.Draw(mask)
  box = (0, 0, width - 1, height - 1)
  thickness = max(2, round(0.17 * min(height, width)))
  if name in ("circle", "ring"):
    draw.ellipse(box, fill=255)
    if name == "ring":
      draw.ellipse((thickness, thickness, width - 1 - thickness, height - 1 - thickness), fill=0)
  elif name in ("square", "frame"):
    draw.rectangle(box, fill=255)
    if name == "frame":
      draw.rectangle((thickness, thickness, width - 1 - thickness, height - 1 - thickness), fill=0)
  else:
    draw.polygon([(x * (width - 1), y * (height - 1)) for x, y in _POLYGONS[name]], fill=255)
  return np.asarray(mask) > 0


def _background(rng, height, width):
  """float32 [H, W, 3]: smooth low-saturation colour noise plus thin muted lines."""
  grid = rng.integers(4, 12)
  base = rng.uniform(60, 190)
  coarse = base + rng.normal(0, 25, (grid, grid, 1)) + rng.normal(0, 12, (grid, grid, 3))
  coarse = np.clip(coarse, 0, 255).astype(np.uint8)
  image = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
  draw = ImageDraw.Draw(image)
  for _ in range(rng.integers(3, 10)):
    grey = rng.uniform(base - 50, base + 50)
    colour = tuple(int(np.clip(grey + rng.normal(0, 15), 0, 255)) for _ in range(3))
    points = [tuple(int(v) for v in rng.uniform(0, [width, height])) for _ in range(2)]
    draw.line(points, fill=colour, width=int(rng.integers(1, 4)))
  return np.asarray(image, np.float32)


def _place(rng, name, height, width, owner, areas):
  """Position and full mask (y, x, bool [h, w]) of a new shape obeying the occlusion rule, or None."""
  short = min(height, width)
  visible = np.bincount(owner.ravel(), minlength=len(areas) + 1)[1:]
  for _ in range(PLACEMENT_TRIES):
    side = short * np.exp(rng.uniform(*np.log(SIZE_RANGE)))
    aspect = np.exp(rng.uniform(*np.log(ASPECT_RANGE)))
    h = int(np.clip(round(side / np.sqrt(aspect)), 8, height))
    w = int(np.clip(round(side * np.sqrt(aspect)), 8, width))
    y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    mask = shape_mask(name, h, w)
    hidden = np.bincount(owner[y:y + h, x:x + w][mask], minlength=len(areas) + 1)[1:]
    if np.all(visible - hidden >= MIN_VISIBLE * np.asarray(areas)):
      return y, x, mask
  return None


def render_image(seed, split_id, index, height, width, max_objects):
  """One image: (uint8 [H, W, 3], objects: list of dict(label, box, area, full_area)).

  box: (y, x, h, w) pixels, the full shape's tight box; area: its visible pixel
  count; full_area: its pixel count if nothing covered it.
  """
  rng = np.random.default_rng([seed, split_id, index])
  image = _background(rng, height, width)
  owner = np.zeros([height, width], np.int32)  # 1 + index of the top shape per pixel, 0: background
  objects = []
  free_colours = list(range(len(PALETTE)))  # shapes of one image have different colours
  for _ in range(int(rng.integers(1, max_objects + 1))):
    label = int(rng.integers(1, len(CLASSES) + 1))
    placed = _place(rng, CLASSES[label - 1], height, width, owner, [o["full_area"] for o in objects])
    if placed is None:
      continue
    y, x, mask = placed
    h, w = mask.shape
    colour = np.clip(np.array(PALETTE[free_colours.pop(rng.integers(len(free_colours)))]) +
                     rng.normal(0, 12, 3), 0, 255)
    gradient = 1.0 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, w)[None, :, None]
    region = image[y:y + h, x:x + w]
    region[mask] = (colour * gradient * np.ones([h, 1, 1]))[mask]
    owner[y:y + h, x:x + w][mask] = len(objects) + 1
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    objects.append(dict(label=label, box=(y + rows[0], x + cols[0], rows[-1] + 1 - rows[0],
                                          cols[-1] + 1 - cols[0]), full_area=int(mask.sum())))
  image += rng.normal(0, rng.uniform(3, 10), image.shape)
  counts = np.bincount(owner.ravel(), minlength=len(objects) + 1)[1:]
  for obj, visible in zip(objects, counts):
    obj["area"] = int(visible)
  return np.clip(image, 0, 255).astype(np.uint8), objects


def _write_image(task):
  """Renders and saves one image; runs in a worker process. Returns (image json, annotations)."""
  seed, split_id, index, directory, sides, max_objects = task
  rng = np.random.default_rng([seed, split_id, index, 1])
  height, width = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
  image, objects = render_image(seed, split_id, index, height, width, max_objects)
  image_id = split_id * _IMAGE_ID_STRIDE + index + 1
  file_name = f"{image_id:012d}.jpg"
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "JPEG", quality=92)
  with open(os.path.join(directory, file_name), "wb") as f:
    f.write(buffer.getvalue())
  annotations = [dict(image_id=image_id, category_id=category_id(o["label"]), iscrowd=0, area=o["area"],
                      bbox=[int(o["box"][1]), int(o["box"][0]), int(o["box"][3]), int(o["box"][2])])
                 for o in objects]
  return dict(id=image_id, file_name=file_name, height=height, width=width), annotations


def write_split(output_dir, split, num_images, side_range=(256, 320), seed=0, max_objects=6, num_workers=1,
                verbose=True):
  """Writes <output_dir>/<split>/*.jpg, then annotations/instances_<split>.json; returns the json path.

  split: "train2017" or "val2017"; side_range: (min side, max side) in pixels.
  """
  if split not in _SPLIT_IDS:
    raise ValueError(f"synthetic split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
  if not 0 < side_range[0] <= side_range[1]:
    raise ValueError(f"side_range must be (min side, max side) with 0 < min <= max, got {side_range}")
  if not 1 <= max_objects <= len(PALETTE):
    raise ValueError(f"max_objects must be in 1..{len(PALETTE)} (one palette colour each), got {max_objects}")
  directory = os.path.join(output_dir, split)
  os.makedirs(directory, exist_ok=True)
  os.makedirs(os.path.join(output_dir, "annotations"), exist_ok=True)
  path = os.path.join(output_dir, "annotations", f"instances_{split}.json")
  if os.path.exists(path):
    os.remove(path)  # an interrupted rewrite must not leave the old json over new images
  tasks = [(seed, _SPLIT_IDS[split], i, directory, tuple(side_range), max_objects) for i in range(num_images)]
  bar = progress.Progress(num_images, name=f"synthetic {split}", unit="images",
                              stream=sys.stderr) if verbose else None
  images, annotations = [], []
  for info, anns in parallel.ordered_map(_write_image, tasks, num_workers):
    images.append(info)
    annotations.extend(anns)
    if bar:
      bar.update()
  if bar:
    bar.close()
  for i, ann in enumerate(annotations):
    ann["id"] = i + 1
  categories = [dict(id=category_id(label), name=name, supercategory="shape")
                for label, name in enumerate(CLASSES, start=1)]
  with open(path + ".partial", "w") as f:
    json.dump(dict(info=dict(description=f"ssd_tf synthetic shapes, seed {seed}"), images=images,
                   annotations=annotations, categories=categories), f)
  os.replace(path + ".partial", path)  # last: prepare finds a split only once it is complete
  return path


def write_dataset(output_dir, num_train=2000, num_val=200, side_range=(256, 320), seed=0, max_objects=6,
                  num_workers=1, verbose=True):
  """Writes train2017 and val2017 splits (COCO 2017 layout) under output_dir.

  Returns {split: instances json path}. Train and val images differ (split in their seeds).
  """
  return {split: write_split(output_dir, split, n, side_range, seed, max_objects, num_workers, verbose)
          for split, n in (("train2017", num_train), ("val2017", num_val))}
