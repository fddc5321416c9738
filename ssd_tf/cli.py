"""What the command-line programs (main.py, export_savedmodel.py) share: flags with --config.<field>
overrides, the config a command runs with, and error reporting; no TensorFlow.

A user error ends the program with one line on stderr, ``error: <message>``, and exit
code 1 (--traceback shows the Python traceback instead).
"""

import contextlib
import importlib.util
import os
import sys

from absl import flags
import ml_collections

from ssd_tf import defaults
from ssd_tf import overrides
from ssd_tf import run_dir


def one_line(error):
  """An exception's message on one line.

  Wrapped exceptions are unwrapped (ml_collections raises AttributeError(KeyError(...)) for
  an override of a field the config lacks), a KeyError loses its quotes, and a traceback
  embedded in the message (absl's report of an error inside a config file) is cut to its
  last line.
  """
  while len(error.args) == 1 and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  text, _, trace = text.partition("Traceback (most recent call last):")
  if trace.strip():
    text += trace.strip().splitlines()[-1]
  return " ".join(text.split())


def exit_with_error(message):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


_OVERRIDES = []  # the --config.<field>=<value> pairs parse_flags took out of argv


def parse_flags(argv):
  """absl's flag parsing (app.run's flags_parser) after taking out the --config.<field>=<value>
  overrides (applied by load_config); every failure is reported on one line."""
  try:
    argv, _OVERRIDES[:] = overrides.split(argv)
    return flags.FLAGS(argv)
  except (flags.Error, ValueError) as error:
    if "--traceback" in argv:
      raise
    exit_with_error(f"{one_line(error)}" + (" (see --helpfull)" if isinstance(error, flags.Error) else ""))


def load_config(path=None, workdir=None, default=None, needed_by=""):
  """The config of a command, with the --config.<field> overrides on top (ssd_tf.overrides).

  From ``path`` (a configs/*.py file, optionally ``file.py:argument`` for get_config), else the
  run's config.json in ``workdir``, else the file ``default``; renamed fields upgraded
  (defaults.upgrade) and ranges checked. Neither: ValueError saying that ``needed_by`` needs one.
  """
  if path:
    config, source = _config_file(path), path.split(":", 1)[0]
  elif workdir and run_dir.RunDir(workdir).has_config():
    run = run_dir.RunDir(workdir)
    config, source = run.load_config(), run.config_json
  elif default:
    config, source = _config_file(default), default
  else:
    where = f" or --workdir={workdir} holding a run's config.json" if workdir else ""
    raise ValueError(f"{needed_by} needs --config=<file> (configs/*.py){where}")
  config = defaults.upgrade(config, source=source)
  return defaults.check_ranges(overrides.apply(config, _OVERRIDES), source=source)


def _config_file(path):
  """get_config() of a config file (``file.py:argument`` passes the argument); one-line errors."""
  file, _, argument = path.partition(":")
  if not os.path.isfile(file):
    raise FileNotFoundError(f"config file not found: {file}")
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(file))[0], file)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    config = module.get_config(argument) if argument else module.get_config()
  except Exception as error:  # pylint: disable=broad-except  (anything a config file raises)
    raise ValueError(f"loading --config={path}: {type(error).__name__}: {one_line(error)}") from error
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f"--config={path}: get_config() returned a {type(config).__name__}, not a ConfigDict")
  return config


@contextlib.contextmanager
def user_errors(show_traceback=False):
  """Ends the program on a user error (bad path, value, key; a diverged loss) with one line."""
  try:
    yield
  except (OSError, ValueError, KeyError, FloatingPointError) as error:
    if show_traceback:
      raise
    exit_with_error(one_line(error))
