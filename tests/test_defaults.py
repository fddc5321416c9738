"""ssd_tf.defaults: the COCO sample's place, range checks of config values."""

import pathlib

import ml_collections
import pytest

from ssd_tf import defaults

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_coco_sample_dir_defaults_to_shared_data_beside_the_repo(monkeypatch):
  monkeypatch.delenv("COCO_TINY_DIR", raising=False)
  path = pathlib.Path(defaults.coco_sample_dir())
  assert path.parts[-3:] == ("shared", "data", "coco_tiny")
  assert path == REPO.parent / "shared" / "data" / "coco_tiny"


def test_coco_tiny_dir_overrides_the_coco_sample_dir_at_each_call(monkeypatch, tmp_path):
  monkeypatch.setenv("COCO_TINY_DIR", str(tmp_path / "a"))
  assert defaults.coco_sample_dir() == str(tmp_path / "a")
  monkeypatch.setenv("COCO_TINY_DIR", str(tmp_path / "b"))
  assert defaults.coco_sample_dir() == str(tmp_path / "b")


@pytest.mark.parametrize("field, value, message", [
    ("train.batch_size", 0, "train.batch_size=0 must be >= 1"),
    ("train.steps", -5, "train.steps=-5 must be >= 0"),
    ("model.image_size", 16, "model.image_size=16 must be >= 32"),
    ("eval.every_steps", -1, "eval.every_steps=-1 must be >= 0"),
    ("postprocess.iou_threshold", 1.5, r"postprocess.iou_threshold=1.5 must be in \[0, 1\]"),
    ("data.max_image_pixels", "many", "data.max_image_pixels='many' must be a number"),
])
def test_values_out_of_range_are_one_line_naming_the_field(field, value, message):
  values = defaults.base_config().to_dict()  # as a config.json holds them: any JSON type may come
  section, name = field.split(".")
  values[section][name] = value
  config = ml_collections.ConfigDict(values)
  with pytest.raises(ValueError, match=f"^my_config.py: {message}$"):
    defaults.check_ranges(config, source="my_config.py")


def test_the_shipped_defaults_are_in_range():
  assert defaults.check_ranges(defaults.base_config()) is not None


@pytest.mark.parametrize("field, value", [("anchors.clip", "corner"), ("postprocess.clip_boxes", "always"),
                                          ("model.input_normalization", "imagenet"),
                                          ("model.backbone_variant", "v1.5")])
def test_names_outside_their_choices_are_one_line_naming_the_field(field, value):
  config = defaults.base_config()
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ValueError, match=f"^my_config.py: {field}={value!r} must be one of "):
    defaults.check_ranges(config, source="my_config.py")


@pytest.mark.parametrize("saved, mode", [(True, "corners"), (False, "none")])
def test_a_saved_boolean_anchor_clip_reads_as_its_mode(saved, mode):
  """config.json files from before the clip modes hold anchors.clip as a boolean."""
  values = defaults.base_config().to_dict()
  values["anchors"]["clip"] = saved
  config = defaults.upgrade(ml_collections.ConfigDict(values))
  assert config.anchors.clip == mode
  defaults.check_ranges(config)
