"""COCO layout -> TFRecords: validation, clean-up counts, image formats, atomic output, progress line."""

import io
import json
import os
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from ssd_tf import images
from ssd_tf import progress
from ssd_tf.data import coco
from ssd_tf.data import pipeline
from ssd_tf.data import prepare
from ssd_tf.data import records
from ssd_tf.label_map import LabelMap

SPLIT = "train2017"
HEIGHT, WIDTH = 60, 80
CATEGORIES = [dict(id=9, name="kite"), dict(id=3, name="car"), dict(id=7, name="train")]


def _photo(seed):
  """A smooth random RGB image (JPEG keeps it within a few levels)."""
  coarse = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.BILINEAR))


def _encode(image, fmt, **kwargs):
  out = io.BytesIO()
  image.save(out, fmt, **kwargs)
  return out.getvalue()


def _write_layout(root, split, files, annotations, categories=CATEGORIES):
  """files: {image_id: (file name, bytes or None for a missing file)}."""
  os.makedirs(os.path.join(root, split), exist_ok=True)
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  images = []
  for image_id, (name, data) in files.items():
    images.append(dict(id=image_id, file_name=name, height=HEIGHT, width=WIDTH))
    if data is not None:
      with open(os.path.join(root, split, name), "wb") as f:
        f.write(data)
  for i, ann in enumerate(annotations):
    ann.setdefault("iscrowd", 0)
    ann["id"] = i + 1
  with open(coco.json_path(root, split), "w") as f:
    json.dump(dict(images=images, annotations=annotations, categories=categories), f)


@pytest.fixture()
def crafted(tmp_path):
  """Six images exercising every prepare rule; returns (coco_dir, source RGB arrays by id)."""
  rgb = {i: _photo(i) for i in range(1, 7)}
  grey = Image.fromarray(rgb[2]).convert("L")
  rgb[2] = np.repeat(np.asarray(grey)[..., None], 3, axis=-1)
  rgba = np.concatenate([rgb[4], np.full((HEIGHT, WIDTH, 1), 128, np.uint8)], axis=-1)
  jpeg1 = _encode(Image.fromarray(rgb[1]), "JPEG", quality=95)
  files = {
      1: ("rgb.jpg", jpeg1),
      2: ("grey.jpg", _encode(grey, "JPEG", quality=95)),
      3: ("cmyk.jpg", _encode(Image.fromarray(rgb[3]).convert("CMYK"), "JPEG", quality=95)),
      4: ("rgba.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG")),
      5: ("empty.jpg", _encode(Image.fromarray(rgb[5]), "JPEG", quality=95)),
      6: ("broken.jpg", jpeg1[:len(jpeg1) // 2]),
  }
  annotations = [
      dict(image_id=1, category_id=3, bbox=[10.5, 5.25, 20.0, 30.0]),
      dict(image_id=1, category_id=9, bbox=[0, 0, 40, 40], iscrowd=1),
      dict(image_id=1, category_id=7, bbox=[70.0, 50.0, 20.0, 20.0]),   # past the right and bottom edges
      dict(image_id=1, category_id=7, bbox=[30.0, 30.0, 0.5, 10.0]),    # under 1 px wide
      dict(image_id=1, category_id=7, bbox=[100.0, 10.0, 5.0, 5.0]),    # wholly outside
      dict(image_id=2, category_id=9, bbox=[1, 2, 3, 4]),
      dict(image_id=3, category_id=9, bbox=[5, 5, 10, 10]),
      dict(image_id=4, category_id=7, bbox=[0, 0, 80, 60]),
      dict(image_id=6, category_id=3, bbox=[1, 1, 5, 5]),
  ]
  root = str(tmp_path / "coco")
  _write_layout(root, SPLIT, files, annotations)
  return root, rgb


def _read_split(tfrecord_dir, split=SPLIT):
  """All examples of a prepared split as NumPy dicts keyed by image id (image decoded)."""
  out = {}
  for path in records.shard_paths(tfrecord_dir, split):
    for serialized in tf.data.TFRecordDataset(path):
      element = pipeline.decode(records.parse_example(serialized))
      out[int(element["image_id"])] = {k: v.numpy() for k, v in element.items()}
  return out


def test_prepare_counts_cleans_and_converts(crafted, tmp_path):
  coco_dir, rgb = crafted
  out = str(tmp_path / "records")
  summary = prepare.prepare_split(coco_dir, SPLIT, out, num_shards=2, num_workers=1, verbose=False)

  assert summary["images"] == 5 and summary["images_in_json"] == 6
  assert summary["images_skipped_undecodable"] == 1 and summary["images_skipped_empty"] == 0
  assert summary["background_images"] == 1
  assert summary["images_converted"] == 2          # CMYK JPEG and RGBA PNG; grey JPEG kept as is
  assert summary["boxes"] == 6 and summary["crowd_boxes"] == 1
  assert summary["boxes_clipped"] == 1 and summary["boxes_dropped"] == 2
  assert summary["boxes_per_class"] == {"car": 1, "train": 2, "kite": 3}
  assert summary["shard_sizes"] == [3, 2] and summary["max_boxes_per_image"] == 3
  assert json.load(open(records.summary_path(out, SPLIT))) == summary
  skipped = json.load(open(records.skipped_path(out, SPLIT)))
  assert [s["image_id"] for s in skipped] == [6] and "cannot decode" in skipped[0]["reason"]

  label_map = LabelMap.load(records.label_map_path(out))
  assert [(e["label"], e["category_id"], e["name"]) for e in label_map.entries] == [
      (1, 3, "car"), (2, 7, "train"), (3, 9, "kite")]

  examples = _read_split(out)
  assert sorted(examples) == [1, 2, 3, 4, 5]
  first = examples[1]
  np.testing.assert_allclose(first["boxes"], [
      [5.25 / 60, 10.5 / 80, 35.25 / 60, 30.5 / 80],
      [0.0, 0.0, 40 / 60, 0.5],
      [50 / 60, 70 / 80, 1.0, 1.0]], atol=1e-7)
  np.testing.assert_array_equal(first["labels"], [1, 3, 2])
  np.testing.assert_array_equal(first["is_crowd"], [False, True, False])
  np.testing.assert_array_equal(first["original_size"], [HEIGHT, WIDTH])
  assert examples[5]["labels"].shape == (0,) and examples[5]["boxes"].shape == (0, 4)

  for image_id, example in examples.items():
    assert example["image"].shape == (HEIGHT, WIDTH, 3) and example["image"].dtype == np.uint8
  np.testing.assert_array_equal(examples[4]["image"], rgb[4])    # PNG: lossless, alpha dropped
  grey = examples[2]["image"].astype(int)
  assert np.abs(grey[..., 0] - grey[..., 1]).max() == 0 and np.abs(grey - rgb[2]).mean() < 1.5
  assert np.abs(examples[3]["image"].astype(int) - rgb[3]).mean() < 3   # CMYK: colours right


def test_16_bit_grey_pngs_keep_their_high_byte_and_oversized_images_are_skipped(tmp_path):
  """A 16-bit grey PNG becomes its high byte (PIL's RGB conversion would clip it to white), as
  serving and predict decode it; an image over the pixel limit is skipped before it is decoded."""
  deep = (np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) * 13 % 65536).astype(np.uint16)
  files = {1: ("deep.png", _encode(Image.fromarray(deep), "PNG")),
           2: ("big.jpg", _encode(Image.fromarray(_photo(2)), "JPEG", quality=95))}
  root = str(tmp_path / "coco")
  _write_layout(root, SPLIT, files, [dict(image_id=1, category_id=3, bbox=[1, 1, 5, 5])])
  out = str(tmp_path / "records")
  summary = prepare.prepare_split(root, SPLIT, out, num_shards=1, num_workers=1,
                                  max_image_pixels=HEIGHT * WIDTH - 1, verbose=False)
  assert summary["images"] == 0 and summary["images_skipped_too_large"] == 2
  summary = prepare.prepare_split(root, SPLIT, out, num_shards=1, num_workers=1,
                                  max_image_pixels=HEIGHT * WIDTH, verbose=False)
  assert summary["images"] == 2 and summary["images_skipped_too_large"] == 0
  image = _read_split(out)[1]["image"]
  np.testing.assert_array_equal(image, np.repeat((deep >> 8).astype(np.uint8)[..., None], 3, axis=-1))
  assert images.decode(files[1][1]).numpy().tolist() == image.tolist()  # serving and predict decode alike
  skipped = json.load(open(records.skipped_path(out, SPLIT)))
  assert skipped == []


def test_exif_rotated_jpegs_and_transparent_palettes_decode_alike_in_prepare_and_serving(tmp_path):
  """EXIF orientation is ignored everywhere (COCO's boxes are on the stored pixels); a palette PNG
  with a transparent entry becomes its palette colours: prepare's record and images.decode (serving,
  predict) give the same pixels."""
  photo = Image.fromarray(_photo(3))
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: rotate 90 degrees on display
  palette = Image.fromarray(_photo(4)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
  palette.info["transparency"] = 0
  files = {1: ("rotated.jpg", _encode(photo, "JPEG", quality=95, exif=exif.tobytes())),
           2: ("palette.png", _encode(palette, "PNG", transparency=0))}
  root = str(tmp_path / "coco")
  _write_layout(root, SPLIT, files, [])
  out = str(tmp_path / "records")
  prepare.prepare_split(root, SPLIT, out, num_shards=1, num_workers=1, verbose=False)
  examples = _read_split(out)
  for image_id, (name, data) in files.items():
    decoded = images.decode(data).numpy()
    assert decoded.shape == (HEIGHT, WIDTH, 3), name  # not rotated
    np.testing.assert_array_equal(examples[image_id]["image"], decoded, err_msg=name)
  np.testing.assert_array_equal(examples[2]["image"], np.asarray(palette.convert("RGB")))


def test_prepare_skips_images_over_the_pixel_limit_by_name(tmp_path):
  files = {1: ("small.jpg", _encode(Image.fromarray(_photo(1)), "JPEG", quality=95))}
  root = str(tmp_path / "coco")
  _write_layout(root, SPLIT, files, [])
  out = str(tmp_path / "records")
  prepare.prepare_split(root, SPLIT, out, num_shards=1, num_workers=1, max_image_pixels=100, verbose=False)
  skipped = json.load(open(records.skipped_path(out, SPLIT)))
  assert skipped == [dict(image_id=1, file_name="small.jpg",
                          reason=f"too large: {HEIGHT}x{WIDTH} is over data.max_image_pixels=100")]


def test_an_image_pil_reads_but_tensorflow_does_not_is_skipped_by_prepare(tmp_path):
  """A PNG whose pixel chunk (IDAT) has a wrong checksum: PIL decodes it (it does not check that
  checksum), TensorFlow's decoder refuses it. prepare decodes with training's decoder, so the image
  is skipped and listed, and every record written decodes in the training pipeline."""
  png = bytearray(_encode(Image.fromarray(_photo(1)), "PNG"))
  idat = png.find(b"IDAT")
  png[idat + 4 + int.from_bytes(png[idat - 4:idat], "big")] ^= 0xFF  # first byte of the IDAT checksum
  Image.open(io.BytesIO(bytes(png))).load()  # PIL: fine
  files = {1: ("bad_crc.png", bytes(png)), 2: ("good.png", _encode(Image.fromarray(_photo(2)), "PNG"))}
  root = str(tmp_path / "coco")
  _write_layout(root, SPLIT, files, [])
  out = str(tmp_path / "records")
  summary = prepare.prepare_split(root, SPLIT, out, num_shards=1, num_workers=2, verbose=False)
  assert summary["images"] == 1 and summary["images_skipped_undecodable"] == 1
  [skipped] = json.load(open(records.skipped_path(out, SPLIT)))
  assert skipped["image_id"] == 1 and skipped["reason"].startswith("TensorFlow cannot decode it:")
  assert "Invalid PNG data" in skipped["reason"]
  assert list(_read_split(out)) == [2]


def test_prepare_can_drop_empty_images(crafted, tmp_path):
  coco_dir, _ = crafted
  out = str(tmp_path / "records")
  summary = prepare.prepare_split(coco_dir, SPLIT, out, num_shards=1, num_workers=1, keep_empty_images=False,
                                  verbose=False)
  assert summary["images"] == 4 and summary["images_skipped_empty"] == 1
  assert sorted(_read_split(out)) == [1, 2, 3, 4]


def test_missing_images_fail_before_writing(crafted, tmp_path):
  coco_dir, _ = crafted
  os.remove(os.path.join(coco_dir, SPLIT, "grey.jpg"))
  os.remove(os.path.join(coco_dir, SPLIT, "rgba.png"))
  out = str(tmp_path / "records")
  with pytest.raises(FileNotFoundError, match=r"2 of 6 images .* missing .*grey\.jpg, rgba\.png"):
    prepare.prepare_split(coco_dir, SPLIT, out, num_shards=1, num_workers=1, verbose=False)
  assert not os.path.exists(out)


def test_bad_annotations_are_named(tmp_path):
  root = str(tmp_path / "coco")
  data = _encode(Image.fromarray(_photo(0)), "JPEG")
  _write_layout(root, SPLIT, {1: ("a.jpg", data)}, [dict(image_id=1, category_id=4, bbox=[0, 0, 5, 5])])
  with pytest.raises(ValueError, match="annotation 1 has category id 4"):
    coco.read_split(root, SPLIT)
  _write_layout(root, SPLIT, {1: ("a.jpg", data)}, [dict(image_id=2, category_id=3, bbox=[0, 0, 5, 5])])
  with pytest.raises(ValueError, match="annotation 1 refers to image id 2"):
    coco.read_split(root, SPLIT)
  with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
    coco.read_split(root, "val2017")


def test_interrupted_run_leaves_previous_dataset_intact(crafted, tmp_path, monkeypatch):
  coco_dir, _ = crafted
  out = str(tmp_path / "records")
  before = prepare.prepare_split(coco_dir, SPLIT, out, num_shards=3, num_workers=1, verbose=False)
  real_check, calls = coco.check_image, []

  def interrupted(task):
    calls.append(task)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real_check(task)

  monkeypatch.setattr(coco, "check_image", interrupted)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare_split(coco_dir, SPLIT, out, num_shards=2, num_workers=1, verbose=False)
  assert records.load_summary(out, SPLIT) == before
  assert len(records.shard_paths(out, SPLIT)) == 3
  assert not [n for n in os.listdir(out) if n.startswith(".")]   # no partial folder left behind


def test_unfinished_split_is_refused(crafted, tmp_path):
  coco_dir, _ = crafted
  out = str(tmp_path / "records")
  prepare.prepare_split(coco_dir, SPLIT, out, num_shards=2, num_workers=1, verbose=False)
  os.remove(records.summary_path(out, SPLIT))       # what a run killed mid-move leaves
  with pytest.raises(FileNotFoundError, match="2 shard files .* unfinished prepare"):
    records.shard_paths(out, SPLIT)
  prepare.prepare_split(coco_dir, SPLIT, out, num_shards=4, num_workers=1, verbose=False)
  assert len(records.shard_paths(out, SPLIT)) == 4    # the old 2-shard files are gone
  os.remove(os.path.join(out, records.shard_name(SPLIT, 1, 4)))
  with pytest.raises(FileNotFoundError, match="1 of 4 shards"):
    records.shard_paths(out, SPLIT)


def test_label_map_conflict_between_splits(crafted, tmp_path):
  coco_dir, _ = crafted
  out = str(tmp_path / "records")
  prepare.prepare_split(coco_dir, SPLIT, out, num_shards=1, num_workers=1, verbose=False)
  data = _encode(Image.fromarray(_photo(0)), "JPEG")
  _write_layout(coco_dir, "val2017", {1: ("a.jpg", data)}, [], categories=[dict(id=1, name="person")])
  with pytest.raises(ValueError, match="label_map.json was written from other categories"):
    prepare.prepare_split(coco_dir, "val2017", out, num_shards=1, num_workers=1, verbose=False)


def test_clean_boxes_rules():
  boxes, keep, clipped = coco.clean_boxes(
      [[-5, 10, 20, 10], [0, 0, 0.99, 5], [10, 10, 5, 5], [90, 0, 10, 10], [0, 0, np.nan, 3]], 50, 80)
  np.testing.assert_array_equal(keep, [0, 2])
  assert clipped == 1
  np.testing.assert_allclose(boxes, [[10 / 50, 0, 20 / 50, 15 / 80], [10 / 50, 10 / 80, 15 / 50, 15 / 80]])


def test_progress_line_rate_and_eta():
  now = [100.0]
  stream = io.StringIO()
  bar = progress.Progress(10, name="prepare", unit="images", every_s=3.0, stream=stream,
                              clock=lambda: now[0])
  for _ in range(5):
    now[0] += 1.0
    bar.update()
  assert bar.rate == pytest.approx(1.0) and bar.eta_s == pytest.approx(5.0)
  assert bar.line() == "prepare: 5/10 images, 1.0 images/s, elapsed 0:05, ETA 0:05"
  assert stream.getvalue().splitlines() == ["prepare: 3/10 images, 1.0 images/s, elapsed 0:03, ETA 0:07"]
  bar.close()
  assert stream.getvalue().splitlines()[-1].startswith("prepare: 5/10 images")
  assert progress.format_duration(3725) == "1:02:05"


def test_a_prepare_killed_by_sigkill_leaves_nothing_the_next_one_trips_on(crafted, tmp_path):
  """SIGKILL skips every clean-up: the next prepare removes the dead one's partial folder and succeeds."""
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  coco_dir, _ = crafted
  out = tmp_path / "records"
  slow = ("import sys, time\nfrom ssd_tf.data import coco, prepare\ncheck = coco.check_image\n"
          "coco.check_image = lambda task: (time.sleep(30), check(task))[1]\n"
          f"prepare.prepare_split({coco_dir!r}, {SPLIT!r}, {str(out)!r}, num_shards=2, num_workers=1, verbose=False)")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  process = subprocess.Popen([sys.executable, "-c", slow], env=dict(os.environ, PYTHONPATH=repo))
  try:
    deadline = time.monotonic() + 60
    while not (out.exists() and any(p.name.startswith(f".{SPLIT}.partial-") for p in out.iterdir())):
      assert time.monotonic() < deadline and process.poll() is None
      time.sleep(0.1)
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait()
  assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [f".{SPLIT}.partial-{process.pid}"]
  summary = prepare.prepare_split(coco_dir, SPLIT, str(out), num_shards=2, num_workers=1, verbose=False)
  assert summary["images"] == 5
  assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
