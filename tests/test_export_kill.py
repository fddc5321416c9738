"""export under SIGKILL: killed at any moment, the export folder still holds a loadable SavedModel, the old or the new."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import export
from ssd_tf.label_map import LabelMap
from ssd_tf.ssd import SSD

from test_learning import small_config

pytestmark = pytest.mark.slow  # about a minute: several real SIGKILLs of an export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT = """
import sys
import tensorflow as tf
from ssd_tf import export
from ssd_tf.label_map import LabelMap
from ssd_tf.ssd import SSD
from test_learning import small_config
tf.keras.utils.set_random_seed(int(sys.argv[2]))
label_map_path = sys.argv[3]
export.export_saved_model(SSD(small_config()), LabelMap.load(label_map_path), label_map_path, sys.argv[1])
print("exported", flush=True)
"""


def _export_in_subprocess(export_dir, seed, label_map_path, kill_after=None):
  """Runs the export of seed's model in a fresh process; SIGKILLs it after kill_after seconds if given.
  Returns the seconds it ran."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
  start = time.monotonic()
  process = subprocess.Popen([sys.executable, "-c", EXPORT, str(export_dir), str(seed), str(label_map_path)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    process.wait(timeout=kill_after if kill_after is not None else 300)
    assert process.returncode == 0, process.stderr.read()[-3000:]
  except subprocess.TimeoutExpired:
    process.send_signal(signal.SIGKILL)
    process.wait()
  return time.monotonic() - start


def _outputs(export_dir, image):
  loaded = tf.saved_model.load(str(export_dir))
  return loaded.signatures["serving_images"](images=tf.constant(image))["detection_scores"].numpy()


def test_a_killed_export_leaves_the_old_or_the_new_saved_model(tmp_path):
  label_map = LabelMap([dict(label=i + 1, category_id=i + 1, name=f"c{i}") for i in range(3)])
  label_map_path = tmp_path / "label_map.json"
  label_map.save(str(label_map_path))
  image = np.random.default_rng(0).integers(0, 255, (1, 90, 120, 3), dtype=np.uint8)
  new_dir = tmp_path / "new" / "saved_model"
  full_seconds = _export_in_subprocess(new_dir, 2, label_map_path)
  new = _outputs(new_dir, image)
  export_dir = tmp_path / "export" / "saved_model"
  tf.keras.utils.set_random_seed(1)
  export.export_saved_model(SSD(small_config()), label_map, str(label_map_path), str(export_dir))
  old = _outputs(export_dir, image)
  assert not np.allclose(old, new)
  seen = set()
  for fraction in (0.6, 0.75, 0.85, 0.9, 0.95, 1.0, 1.05):
    _export_in_subprocess(export_dir, 2, label_map_path, kill_after=fraction * full_seconds)
    got = _outputs(export_dir, image)  # loadable after every kill
    is_old, is_new = np.allclose(got, old), np.allclose(got, new)
    assert is_old != is_new, fraction
    seen.add("new" if is_new else "old")
    if is_new:  # back to the old model for the next kill
      tf.keras.utils.set_random_seed(1)
      export.export_saved_model(SSD(small_config()), label_map, str(label_map_path), str(export_dir))
  assert seen == {"old", "new"}  # kills before and after the swap
  assert os.listdir(export_dir.parent) in (["saved_model"], sorted(["saved_model", "saved_model.partial"]))
