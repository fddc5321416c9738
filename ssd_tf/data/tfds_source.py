"""TensorFlow Datasets ``coco/2017`` as a data source (config.data.source = "tfds").

Yields the same raw elements as the prepared TFRecords (records.parse_example),
so the rest of the pipeline cannot tell the sources apart. tfds' conventions are
mapped to the package's: its labels 0..79 (categories in id order) become 1..80,
boxes under 1 px are dropped (as prepare does; tfds itself refuses boxes outside
the image when it builds the dataset), crowd boxes keep their flag, and images
left without boxes are dropped unless config.data.keep_empty_images.

Using COCO zips you already have (tfds cannot download them here): put the five
original files ``train2017.zip val2017.zip test2017.zip annotations_trainval2017.zip
image_info_test2017.zip`` (from images.cocodataset.org, unrenamed: tfds checks
their checksums) in one folder, ``pip install importlib_resources``, and run with
``--config.data.source=tfds --config.data.tfds_manual_dir=<that folder>
--config.data.tfds_data_dir=<where tfds writes its copy, ~25 GB>``. The first use
builds the tfds dataset (an hour or more); later runs only read it. The label map's
COCO category ids are read from annotations_trainval2017.zip in the same folder.
"""

import json
import os
import zipfile

import tensorflow as tf
import tensorflow_datasets as tfds

from ssd_tf.data import coco
from ssd_tf.label_map import LabelMap

NAME = "coco/2017"
# config split names (COCO folder names) -> tfds split names; others pass through.
SPLITS = {"train2017": "train", "val2017": "validation", "test2017": "test"}
ANNOTATIONS_ZIP = "annotations_trainval2017.zip"
ZIPS = ("train2017.zip", "val2017.zip", "test2017.zip", ANNOTATIONS_ZIP, "image_info_test2017.zip")


def builder(data_cfg):
  """The coco/2017 builder, built on first use from config.data.tfds_manual_dir (or downloaded
  when that is empty)."""
  b = tfds.builder(NAME, data_dir=data_cfg.tfds_data_dir or None)
  if not b.is_prepared():
    manual_dir = data_cfg.tfds_manual_dir or None
    missing = [z for z in ZIPS if manual_dir and not os.path.isfile(os.path.join(manual_dir, z))]
    if missing:
      raise FileNotFoundError(f"tfds {NAME} is not built in {b.data_dir}, and config.data.tfds_manual_dir="
                              f"{manual_dir} lacks {', '.join(missing)} (it needs all five COCO 2017 zips)")
    try:
      b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except Exception as e:
      raise OSError(
          f"tfds {NAME} is not built in {b.data_dir} and could not be built from "
          f"config.data.tfds_manual_dir={manual_dir!r} ({type(e).__name__}: {e}). It needs the five "
          "original COCO 2017 zips in that folder and importlib_resources installed; see "
          "ssd_tf/data/tfds_source.py.") from e
  return b


def label_map(data_cfg):
  """LabelMap with COCO category ids from annotations_trainval2017.zip in tfds_manual_dir.

  Checks that its names, in label order, are tfds' ClassLabel names.
  """
  path = os.path.join(data_cfg.tfds_manual_dir, ANNOTATIONS_ZIP)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: the tfds source reads COCO category ids from it "
                            "(config.data.tfds_manual_dir)")
  with zipfile.ZipFile(path) as z:
    categories = json.loads(z.read("annotations/instances_val2017.json"))["categories"]
  result = LabelMap.from_coco_categories(categories)
  names = builder(data_cfg).info.features["objects"]["label"].names
  if result.names() != list(names):
    raise ValueError(f"{path}: category names differ from tfds {NAME}'s label names")
  return result


def _to_raw_element(example):
  """A tfds example (image not decoded) -> the package's raw element."""
  encoded = example["image"]
  size = tf.image.extract_jpeg_shape(encoded)[:2]  # coco/2017 stores the original JPEG files
  objects = example["objects"]
  boxes = objects["bbox"]
  pixels = (boxes[:, 2:] - boxes[:, :2]) * tf.cast(size, tf.float32)  # [K, 2] height, width
  keep = tf.reduce_all(pixels >= coco.MIN_BOX_PIXELS, axis=-1)
  return dict(
      encoded=encoded,
      image_id=example["image/id"],
      original_size=size,
      boxes=tf.boolean_mask(boxes, keep),
      labels=tf.cast(tf.boolean_mask(objects["label"], keep), tf.int32) + 1,
      is_crowd=tf.boolean_mask(objects["is_crowd"], keep),
  )


def raw_dataset(data_cfg, split, input_context=None):
  """Raw elements of a split in a fixed order (one pass); sharded by file per input pipeline."""
  b = builder(data_cfg)
  ds = b.as_dataset(split=SPLITS.get(split, split), shuffle_files=False,
                    decoders={"image": tfds.decode.SkipDecoding()},
                    read_config=tfds.ReadConfig(input_context=input_context))
  ds = ds.map(_to_raw_element, num_parallel_calls=tf.data.AUTOTUNE)
  if not data_cfg.keep_empty_images:
    ds = ds.filter(lambda e: tf.size(e["labels"]) > 0)
  return ds
