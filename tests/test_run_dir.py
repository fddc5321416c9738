"""A run directory and a config that does not match it: what changes the weights' meaning stops, the rest is logged."""

import pytest

from ssd_tf import run_dir
from ssd_tf.label_map import LabelMap

import tiny_config

LABEL_MAP = LabelMap([dict(label=1, category_id=4, name="a"), dict(label=2, category_id=9, name="b")])


@pytest.fixture()
def workdir(tmp_path):
  run_dir.RunDir(str(tmp_path)).write(tiny_config.get_config(), LABEL_MAP)
  return str(tmp_path)


def test_the_same_config_passes(workdir):
  run_dir.RunDir(workdir).check_config(tiny_config.get_config(), LABEL_MAP)


def test_fields_that_change_the_weights_meaning_are_named_with_both_values(workdir):
  config = tiny_config.get_config()
  config.model.image_size = 96
  config.box_coder.variances = (0.1, 0.1)
  with pytest.raises(ValueError, match=r"does not match the run in .*: box_coder.variances is \[0.1, 0.1\] here but "
                                       r"\[0.1, 0.2\] in its config.json; model.image_size is 96 here but 64 in"):
    run_dir.RunDir(workdir).check_config(config)


def test_other_fields_are_allowed_and_logged(workdir, caplog):
  config = tiny_config.get_config()
  config.postprocess.score_threshold = 0.5
  config.train.batch_size = 2
  with caplog.at_level("INFO", logger="absl"):  # absl's own level may have been raised by another test
    run_dir.RunDir(workdir).check_config(config)
  assert "(allowed): postprocess.score_threshold: 0.01 -> 0.5; train.batch_size: 4 -> 2\n" in caplog.text


def test_another_label_map_is_refused(workdir):
  other = LabelMap([dict(label=1, category_id=4, name="a"), dict(label=2, category_id=10, name="c")])
  with pytest.raises(ValueError, match="the data's label map differs from .*label_map.json"):
    run_dir.RunDir(workdir).check_config(tiny_config.get_config(), other)


def test_a_directory_without_a_run_passes(tmp_path):
  run_dir.RunDir(tmp_path).check_config(tiny_config.get_config())
