"""Fine-tuning with model.init_from: what is loaded, what keeps its initialization, resuming, bad sources.

The source is a tiny run of 6 classes trained 4 steps on fixed batches: checkpoints at steps
2 and 4, step 2's kept as the best; fine-tuning takes it to 3 classes, whose class heads
change shape.
"""

import json
import os
import random
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import init_from
from ssd_tf import run_dir
from ssd_tf import train
from ssd_tf.label_map import LabelMap
from ssd_tf.ssd import SSD
import cli_helpers
import train_helpers

SOURCE_CLASSES, TARGET_CLASSES = 6, 3
FINE_TUNE_STEPS = 8
HEADS = ("level0_logits", "level1_logits", "level2_logits")  # tiny_config: three levels


def _config(num_classes, init_from_path=""):
  config = train_helpers.tiny_config()
  config.model.num_classes = num_classes
  config.model.init_from = str(init_from_path)
  config.train.base_learning_rate = 0.003
  return config


def _label_map(num_classes):
  return LabelMap([dict(label=k, category_id=k, name=f"c{k}") for k in range(1, num_classes + 1)])


def _is_head(path):
  return path.split("/")[0] in HEADS


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """dict(workdir, weights={step: {path: value}}) of the source run at its checkpoints 2 (best) and 4."""
  workdir = tmp_path_factory.mktemp("source") / "run"
  config = _config(SOURCE_CLASSES)
  run_dir.RunDir(str(workdir)).write(config, _label_map(SOURCE_CLASSES))
  trainer = train.Trainer(config, str(workdir), tf.distribute.get_strategy())
  iterator = train_helpers.distributed_iterator(trainer.strategy, train_helpers.fixed_batches(2))
  weights = {}
  for step in range(1, 5):
    trainer.train_step(iterator)
    if step % 2 == 0:
      trainer.save(step)
      trainer.books.keep_if_best({2: 0.5, 4: 0.4}[step], step)  # as evaluations would: step 2 is best
      weights[step] = train_helpers.model_weights(trainer.ssd.network)
  return dict(workdir=workdir, weights=weights)


@pytest.fixture(scope="module")
def fresh():
  """{path: value} of the target SSD's own initialization (the Trainer seeds Python's random alike)."""
  config = _config(TARGET_CLASSES)
  random.seed(config.seed)
  return train_helpers.model_weights(SSD(config).network)


@pytest.fixture(scope="module")
def fine_tuned(source, tmp_path_factory):
  """A run of 3 classes fine-tuned from the source for FINE_TUNE_STEPS steps on one fixed batch.

  dict(workdir, config, initial and final weights, losses); checkpointed at the end.
  """
  workdir = tmp_path_factory.mktemp("fine_tuned") / "run"
  config = _config(TARGET_CLASSES, source["workdir"])
  config.model.backbone_weights = "imagenet"  # keras.applications has none for resnet18: loading would raise
  trainer = train.Trainer(config, str(workdir), tf.distribute.get_strategy())
  initial = train_helpers.model_weights(trainer.ssd.network)
  iterator = train_helpers.distributed_iterator(trainer.strategy, train_helpers.fixed_batches(1))
  losses = [float(trainer.train_step(iterator)["loss"]) for _ in range(FINE_TUNE_STEPS)]
  trainer.save(FINE_TUNE_STEPS)
  return dict(workdir=workdir, config=config, initial=initial, losses=losses,
              final=train_helpers.model_weights(trainer.ssd.network))


def test_fine_tuning_to_other_classes_loads_all_but_the_class_heads(source, fresh, fine_tuned):
  initial, loaded = fine_tuned["initial"], source["weights"][2]  # the run's best checkpoint
  assert initial.keys() == fresh.keys() == loaded.keys() and len(initial) == 107
  for path, value in initial.items():
    if _is_head(path):  # (1 + 3) columns per default box here, (1 + 6) in the source
      assert value.shape[-1] * 7 == loaded[path].shape[-1] * 4, path
      np.testing.assert_array_equal(value, fresh[path], err_msg=path)
    else:
      np.testing.assert_array_equal(value, loaded[path], err_msg=path)
  # Loading is seen: the source's 2 steps moved every other variable away from the initialization,
  # but for the coarsest box head's bias (no ground truth matches a default box of level 2's scale).
  unmoved = [p for p in initial if not _is_head(p) and np.array_equal(loaded[p], fresh[p])]
  assert unmoved == ["level2_loc/bias"]
  losses = fine_tuned["losses"]
  assert np.all(np.isfinite(losses)) and np.mean(losses[-2:]) < 0.4 * losses[0], losses


def test_fine_tuning_under_a_mirrored_strategy_sets_every_replica(source, tmp_path):
  config = _config(TARGET_CLASSES, source["workdir"])
  trainer = train.Trainer(config, str(tmp_path), train_helpers.mirrored_strategy())
  for variable in trainer.ssd.network.weights:
    path, replicas = variable.path, variable.value.values
    assert len(replicas) == 2, path
    if not _is_head(path):
      for replica in replicas:
        np.testing.assert_array_equal(replica.numpy(), source["weights"][2][path], err_msg=path)


def test_the_same_classes_load_every_variable_of_the_best_checkpoint(source):
  ssd = SSD(_config(SOURCE_CLASSES))
  report = init_from.apply(ssd, str(source["workdir"]))
  assert report.checkpoint == str(source["workdir"] / "best" / "ckpt-2")
  assert len(report.loaded) == 107 and report.reinitialized == report.unused == []
  for path, value in train_helpers.model_weights(ssd.network).items():
    np.testing.assert_array_equal(value, source["weights"][2][path], err_msg=path)


def test_a_checkpoint_prefix_loads_that_checkpoint(source):
  prefix = str(source["workdir"] / "checkpoints" / "ckpt-4")  # the newest, not the best
  ssd = SSD(_config(TARGET_CLASSES))
  report = init_from.apply(ssd, prefix)
  assert report.checkpoint == prefix
  assert [_is_head(p) for p in report.reinitialized] == [True] * 6  # kernel and bias of 3 heads
  assert sorted(report.unused) == sorted(report.reinitialized)  # the source's heads, of other shapes
  weights = train_helpers.model_weights(ssd.network)
  for path in report.loaded:
    np.testing.assert_array_equal(weights[path], source["weights"][4][path], err_msg=path)
  assert not all(np.array_equal(source["weights"][2][p], source["weights"][4][p]) for p in report.loaded)


def test_the_log_names_counts_and_re_initialized_layers(source, caplog):
  config = _config(TARGET_CLASSES, source["workdir"])
  config.model.backbone_weights = "imagenet"
  with caplog.at_level("INFO", logger="absl"):
    assert init_from.backbone_weights(config.model) is None
    init_from.apply(SSD(config), str(source["workdir"]))
  assert f"model.backbone_weights='imagenet' not loaded: model.init_from={source['workdir']} gives the " \
         "backbone" in caplog.text
  assert (f"init_from: loaded 101 of 107 variables from {source['workdir']}/best/ckpt-2 (resnet18, "
          "6 classes); re-initialized 6 of level0_logits, level1_logits, level2_logits (shape differs)\n"
          ) in caplog.text


def test_a_level_only_one_side_has_keeps_its_initialization_or_stays_unused(source, tmp_path, caplog):
  config = _config(SOURCE_CLASSES)
  config.model.extra_layers += ((32, 64, 2, "same"),)  # a fourth level, 1 x 1
  config.anchors.aspect_ratios += ((2,),)
  config.anchors.feature_map_sizes += (1,)
  random.seed(config.seed)
  deeper = SSD(config)
  initial = train_helpers.model_weights(deeper.network)
  with caplog.at_level("INFO", logger="absl"):
    report = init_from.apply(deeper, str(source["workdir"]))
  new_layers = ["extra2_1_conv", "extra2_1_bn", "extra2_2_conv", "extra2_2_bn", "level3_loc", "level3_logits"]
  assert list(dict.fromkeys(p.split("/")[0] for p in report.reinitialized)) == new_layers
  assert len(report.loaded) == 107 and report.unused == []
  weights = train_helpers.model_weights(deeper.network)
  for path in report.reinitialized:
    np.testing.assert_array_equal(weights[path], initial[path], err_msg=path)
  assert f"re-initialized 14 of {', '.join(new_layers)} (not in the source)\n" in caplog.text

  # The other way round: the deeper SSD as the source of the source's architecture.
  run_dir.RunDir(str(tmp_path)).write(config, _label_map(SOURCE_CLASSES))
  prefix = deeper.checkpoint().save(str(tmp_path / "checkpoints" / "ckpt"))  # .../ckpt-1
  caplog.clear()
  with caplog.at_level("INFO", logger="absl"):
    report = init_from.apply(SSD(_config(SOURCE_CLASSES)), prefix)
  assert len(report.loaded) == 107 and report.reinitialized == [] and len(report.unused) == 14
  assert f"layers of the source this SSD does not have: {', '.join(new_layers)}\n" in caplog.text


def test_the_source_precision_does_not_change_the_targets(source, tmp_path):
  """A source trained in mixed_bfloat16 is built under the target's float32 policy."""
  shutil.copytree(source["workdir"], tmp_path / "run")
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  config["train"]["mixed_precision"] = "mixed_bfloat16"
  (tmp_path / "run" / "config.json").write_text(json.dumps(config))
  ssd = SSD(_config(SOURCE_CLASSES))
  assert len(init_from.apply(ssd, str(tmp_path / "run")).loaded) == 107
  assert keras.mixed_precision.global_policy().name == "float32"
  weights = train_helpers.model_weights(ssd.network)
  assert all(np.array_equal(weights[p], v) for p, v in source["weights"][2].items())


def test_resuming_a_fine_tuned_run_ignores_init_from(fine_tuned, fresh, caplog):
  with caplog.at_level("INFO", logger="absl"):
    trainer = train.Trainer(fine_tuned["config"], str(fine_tuned["workdir"]), tf.distribute.get_strategy())
  own = fine_tuned["workdir"] / "checkpoints" / f"ckpt-{FINE_TUNE_STEPS}"
  assert f"model.init_from={fine_tuned['config'].model.init_from} ignored: the run resumes from its own " \
         f"checkpoint {own}" in caplog.text
  assert "init_from: loaded" not in caplog.text
  weights = train_helpers.model_weights(trainer.ssd.network)
  assert all(np.array_equal(weights[p], v) for p, v in fresh.items())  # nothing loaded from the source
  assert trainer.books.restore() == FINE_TUNE_STEPS
  for path, value in train_helpers.model_weights(trainer.ssd.network).items():
    np.testing.assert_array_equal(value, fine_tuned["final"][path], err_msg=path)


def test_init_from_does_not_change_what_a_runs_weights_mean(tmp_path, caplog):
  run_dir.RunDir(str(tmp_path)).write(_config(TARGET_CLASSES, "runs/coco"), _label_map(TARGET_CLASSES))
  with caplog.at_level("INFO", logger="absl"):
    run_dir.RunDir(tmp_path).check_config(_config(TARGET_CLASSES), _label_map(TARGET_CLASSES))
  assert f"(allowed): model.init_from: '{os.path.abspath('runs/coco')}' -> ''\n" in caplog.text


def test_bad_sources_are_one_line_naming_the_path(tmp_path):
  ssd = SSD(_config(TARGET_CLASSES))
  missing = tmp_path / "nowhere"
  with pytest.raises(FileNotFoundError, match=f"^model.init_from={missing}: no such run directory or "
                                              r"checkpoint prefix \(give <run> or <run>/checkpoints/ckpt-N\)$"):
    init_from.apply(ssd, str(missing))
  untrained = tmp_path / "untrained"
  run_dir.RunDir(str(untrained)).write(_config(TARGET_CLASSES), _label_map(TARGET_CLASSES))
  with pytest.raises(FileNotFoundError, match=f"^model.init_from={untrained}: a run directory without "
                                              f"checkpoints \\(none in {untrained}/checkpoints or best/\\)$"):
    init_from.apply(ssd, str(untrained))


def test_another_backbone_is_one_line_naming_both(source):
  config = _config(TARGET_CLASSES)
  config.model.backbone = "resnet34"
  with pytest.raises(ValueError, match=f"^model.init_from={source['workdir']}: its backbone is resnet18, this "
                                       "SSD's is resnet34; fine-tuning needs the same backbone$"):
    init_from.apply(SSD(config), str(source["workdir"]))


@pytest.mark.slow  # about 20 s: two trainings in subprocesses
def test_main_fine_tunes_a_run_and_its_rerun_resumes(tmp_path_factory, tmp_path):
  """main.py --config.model.init_from=<run>: the tiny run's own classes, so every variable is loaded."""
  source_run = cli_helpers.trained_run(tmp_path_factory)["workdir"]
  flags = ["--mode=train", *cli_helpers.config_flags(cli_helpers.tiny_data(tmp_path_factory)),
           f"--config.model.init_from={source_run}", f"--workdir={tmp_path}"]
  first = cli_helpers.run_cli("main.py", *flags, "--config.train.steps=2")
  assert first.returncode == 0, first.stderr[-3000:]
  assert re.search(rf"init_from: loaded (\d+) of \1 variables from {source_run}/best/ckpt-\d+ \(resnet18, "
                   r"8 classes\); re-initialized 0\n", first.stderr), first.stderr[-3000:]
  assert json.loads((tmp_path / "config.json").read_text())["model"]["init_from"] == str(source_run)
  rerun = cli_helpers.run_cli("main.py", *flags, "--config.train.steps=4")
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"model.init_from={source_run} ignored: the run resumes from its own checkpoint " \
         f"{tmp_path}/checkpoints/ckpt-2" in rerun.stderr
  assert "init_from: loaded" not in rerun.stderr and "Training done at step 4" in rerun.stdout
