"""The machine facts every benchmark prints next to its figures (the "machine" object of its JSON line)."""

import datetime
import os
import platform


def facts(xla):
  """CPU model and count, Python, TensorFlow, Keras, TF devices, the global dtype policy, XLA, date.

  Call it after the benchmark set its dtype policy and put the repository on sys.path;
  ``xla`` says whether the measured functions were XLA-compiled.
  """
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ssd_tf import hardware  # pylint: disable=g-import-not-at-top
  return dict(
      cpu=hardware.cpu_model(), nproc=os.cpu_count(), python=platform.python_version(),
      platform=platform.platform(), tensorflow=tf.__version__, keras=keras.__version__,
      devices=[device.name for device in tf.config.list_logical_devices()],
      dtype_policy=keras.mixed_precision.global_policy().name, xla=bool(xla),
      date=datetime.datetime.now().isoformat(timespec="seconds"))
