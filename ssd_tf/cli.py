"""Error reporting of the command-line programs (main.py, export_savedmodel.py); no TensorFlow.

A user error ends the program with one line on stderr, ``error: <message>``, and exit
code 1 (--traceback shows the Python traceback instead).
"""

import contextlib
import os
import sys

from absl import flags

from ssd_tf import defaults

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
