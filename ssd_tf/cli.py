"""Error reporting and quiet TensorFlow of the command-line programs (main.py, export_savedmodel.py).

A user error ends the program with one line on stderr, ``error: <message>``, and exit
code 1 (--traceback shows the Python traceback instead). TensorFlow's own log lines stay
off the terminal unless --verbose (import_tensorflow). Importing this module does not
import TensorFlow.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile

from absl import flags
from absl import logging as absl_logging

from ssd_tf import defaults

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
OPTIONAL_DEPENDENCIES = ("torch",)


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


def config_path(argv):
  """The config file argv names with --config (None if it names none), without a ':argument'."""
  path = None
  for arg, value in zip(argv, argv[1:] + [""]):
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1]
    elif arg == "--config":
      path = value
  return path.split(":", 1)[0] if path is not None else None


def parse_flags(argv):
  """absl's flag parsing (app.run's flags_parser), every failure reported on one line.

  Parsing --config runs the config file and applies the --config.<field> overrides, so
  a missing file, an error in the file or an override of a field the config lacks raise
  plain Python exceptions there, which absl would show as a traceback.
  """
  try:
    return flags.FLAGS(argv)
  except Exception as error:  # pylint: disable=broad-except  (anything a config file raises)
    if "--traceback" in argv:
      raise
    if isinstance(error, flags.Error):
      exit_with_error(f"{one_line(error)} (see --helpfull)")
    path = config_path(argv)
    if path and not os.path.isfile(path):
      exit_with_error(f"config file not found: {path}")
    exit_with_error(f"loading --config={path or ''} with its overrides: {type(error).__name__}: "
                    f"{one_line(error)}")


def load_config(config_flag):
  """The ConfigDict of a DEFINE_config_file flag holder, renamed fields upgraded (defaults.upgrade).

  A missing file -> FileNotFoundError.
  """
  config = config_flag.value
  try:
    config.get("name")
  except OSError:  # ml_collections reports a missing config file at the first access
    raise FileNotFoundError(f"config file not found: {config_path(sys.argv)}") from None
  source = config_path(sys.argv) or "--config"
  return defaults.check_ranges(defaults.upgrade(config, source=source), source=source)


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
