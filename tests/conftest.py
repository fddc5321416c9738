"""Test setup: two logical CPU devices (for MirroredStrategy tests) and the COCO sample path."""

import os
import pathlib

import pytest

from ssd_tf import defaults

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402  (must configure devices before any op runs)

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

COCO_TINY_DIR = pathlib.Path(defaults.coco_sample_dir())


@pytest.fixture(scope="session")
def coco_tiny_dir():
  """The real COCO 2017 sample (80 train + 80 val images); skips when absent."""
  if not (COCO_TINY_DIR / "annotations" / "instances_val2017.json").exists():
    pytest.skip(f"COCO sample not found at {COCO_TINY_DIR} (set COCO_TINY_DIR)")
  return COCO_TINY_DIR


@pytest.fixture(autouse=True)
def _separate_collective_keys():
  """Gives each test's MirroredStrategy collective keys apart from earlier tests' strategies.

  Strategies in one process otherwise number their collectives alike, and a strategy
  whose all-reduces differ from an earlier one's aborts ("Shape mismatch in the
  collective instance"). TensorFlow offers this class attribute for tests.
  """
  tf.distribute.MirroredStrategy._collective_key_base += 10_000  # pylint: disable=protected-access
