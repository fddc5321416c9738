"""What the command-line programs (main.py, export_savedmodel.py) share: flags with --config.<field>
overrides, the config a command runs with, error reporting, and a quiet TensorFlow import.

A user error ends the program with one line on stderr, ``error: <message>``, and exit
code 1 (--traceback shows the Python traceback instead). TensorFlow's own log lines stay
off the terminal unless --verbose (import_tensorflow). Importing this module does not
import TensorFlow.
"""

import contextlib
import importlib.util
import logging
import os
import re
import sys
import tempfile

from absl import flags
from absl import logging as absl_logging
import ml_collections

from ssd_tf import defaults
from ssd_tf import overrides
from ssd_tf import run_dir

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep  # ssd_tf's log records come from here
# A line TensorFlow's C++ runtime writes to stderr: an absl log record ("I0000 00:00:1796619305.14  10723
# port.cc:153] ...", "E1207 ...") or one of its startup notices.
_TF_LOG_LINE = re.compile(r"[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]|WARNING: All log messages before absl::|"
                          r"To enable the following instructions")
# --verbose of main.py and export_savedmodel.py.
VERBOSE_HELP = ("Show the log lines of TensorFlow's C++ runtime (INFO to ERROR and its startup notices; shown "
                "also when TF_CPP_MIN_LOG_LEVEL is set) and the Python INFO/WARNING records of TensorFlow and "
                "other libraries.")

# Packages one feature alone needs (ImportError.name): their ImportError says how to install them.
OPTIONAL_DEPENDENCIES = ("torch", "tf2onnx", "onnx", "onnxruntime", "openvino")


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


def config_overrides():
  """The --config.<field>=<value> arguments parse_flags took out, as typed (for a child main.py)."""
  return [f"--config.{field}={text}" for field, text in _OVERRIDES]


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
    where = (f" or --workdir={workdir} holding a run's config.json" +
             ("" if os.path.isdir(workdir) else f" ({workdir} does not exist)")) if workdir else ""
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
  """Ends the program on a user error (bad path, value, key; a diverged loss; a missing optional
  dependency) with one line."""
  try:
    yield
  except (OSError, ValueError, KeyError, FloatingPointError, ImportError) as error:
    if show_traceback or (isinstance(error, ImportError) and error.name not in OPTIONAL_DEPENDENCIES):
      raise
    exit_with_error(one_line(error))


def import_tensorflow(verbose=False):
  """Imports TensorFlow, its log lines off the terminal unless ``verbose``.

  Its C++ runtime logs at TF_CPP_MIN_LOG_LEVEL=3 unless the user set that variable: no E lines
  either, such as "failed call to cuInit" on every machine without a GPU and Grappler's "layout
  failed" on SavedModels (a real failure reaches the program as an exception); the lines its
  libraries log while they load, before they read the variable, are dropped. Python: absl's
  handler shows ssd_tf's own records and other libraries' errors only.
  """
  if not verbose:
    absl_logging.get_absl_handler().addFilter(_ours_or_an_error)
  quiet = not verbose and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
  if quiet:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
  with _log_lines_dropped() if quiet else contextlib.nullcontext():
    import tensorflow  # pylint: disable=g-import-not-at-top,import-outside-toplevel,unused-import  # noqa: F401


def _ours_or_an_error(record):
  """A logging filter: ssd_tf's own records, and other libraries' errors."""
  return record.levelno >= logging.ERROR or record.pathname.startswith(_PACKAGE_DIR)


@contextlib.contextmanager
def _log_lines_dropped():
  """Meanwhile, what is written to file descriptor 2 goes to a file; then its lines other than
  TensorFlow's log lines (_TF_LOG_LINE) are written to stderr."""
  sys.stderr.flush()
  stderr = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(stderr, 2)
      os.close(stderr)
      captured.seek(0)
      lines = captured.read().decode(errors="replace").splitlines(keepends=True)
      sys.stderr.write("".join(line for line in lines if not _TF_LOG_LINE.match(line)))
