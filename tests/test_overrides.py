"""--config.<field>=<value>: every leaf of every shipped config takes a value of its type; others are one line.

The cases are generated from the configs in configs/ (every leaf), not listed by hand.
"""

import pathlib

import ml_collections
import pytest

from ssd_tf import cli
from ssd_tf import overrides

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILES = sorted(str(p) for p in (REPO / "configs").glob("*.py"))


def _leaves(config, prefix=""):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def _cases():
  for path in CONFIG_FILES:
    for field, value in _leaves(cli._config_file(path)):  # pylint: disable=protected-access
      yield pytest.param(path, field, value, id=f"{pathlib.Path(path).stem}:{field}")


CASES = list(_cases())


def _text(value):
  """How a user types ``value``."""
  if value is None:
    return "none"
  if isinstance(value, bool):
    return str(value).lower()
  return value if isinstance(value, str) else repr(value)


def _get(config, field):
  for name in field.split("."):
    config = config[name]
  return config


def _wrong(field, value):
  """A value of another type or shape than ``value``'s, or None for a plain string (any text is one)."""
  if isinstance(value, bool):
    return "maybe"
  if isinstance(value, int):
    return "1.5"
  if isinstance(value, float):
    return "fast"
  if isinstance(value, tuple):
    if field in overrides.FIXED_LENGTH or field.endswith("_range"):
      return repr(tuple(value) + tuple(value[:1]))  # one item too many
    return "((1, 2), (3,))" if all(not isinstance(v, tuple) for v in value) else "(1, 2)"
  return None


def test_every_config_has_leaves():
  assert len(CONFIG_FILES) >= 8 and len(CASES) > 8 * 80


@pytest.mark.parametrize("path, field, value", CASES)
def test_every_leaf_takes_a_value_of_its_type(path, field, value):
  config = overrides.apply(cli._config_file(path), [(field, _text(value))])  # pylint: disable=protected-access
  got = _get(config, field)
  assert got == value and type(got) is type(value), (got, value)
  if isinstance(value, tuple) and value:
    assert [type(v) for v in got] == [type(v) for v in value]


@pytest.mark.parametrize("path, field, value", CASES)
def test_a_value_of_another_type_or_shape_is_one_line(path, field, value):
  wrong = _wrong(field, value)
  if wrong is None:
    assert isinstance(value, str) or value is None
    return
  with pytest.raises(ValueError) as error:
    overrides.apply(cli._config_file(path), [(field, wrong)])  # pylint: disable=protected-access
  message = str(error.value)
  assert "\n" not in message and message.startswith(f"--config.{field}={wrong}: {field} takes "), message


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_weights_files_and_none_on_every_config(path):
  """model.backbone_weights (None in four configs) takes a file, "imagenet", and none or "" for None."""
  for text, expected in (("resnet18-f37072fd.pth", "resnet18-f37072fd.pth"), ("imagenet", "imagenet"),
                         ("none", None), ("None", None), ("", None)):
    config = overrides.apply(cli._config_file(path), [("model.backbone_weights", text)])  # pylint: disable=protected-access
    assert config.model.backbone_weights == expected
  config = overrides.apply(cli._config_file(path), [("model.init_from", "runs/coco")])  # pylint: disable=protected-access
  assert config.model.init_from == "runs/coco"


@pytest.mark.parametrize("field, text, expected", [
    ("anchors.clip", "none", "none"),  # a choice named "none" is not None
    ("anchors.scales", "0.1,0.2,0.4", (0.1, 0.2, 0.4)),
    ("anchors.scales", "0.2", (0.2,)),
    ("anchors.aspect_ratios", "((2,), (2, 1.5))", ((2,), (2, 1.5))),
    ("anchors.strides", "(8, 10.5)", (8, 10.5)),
    ("model.backbone_taps", "conv3,conv4", ("conv3", "conv4")),
    ("model.backbone_taps", "('conv3', 'conv4')", ("conv3", "conv4")),
    ("model.backbone_taps", "", ()),
    ("train.devices", "/gpu:0,/gpu:1", ("/gpu:0", "/gpu:1")),
    ("train.steps", "240_000", 240000),
    ("train.steps", "1e3", 1000),
    ("train.base_learning_rate", "2", 2.0),
    ("train.jit_compile", "True", True),
    ("train.jit_compile", "0", False),
    ("model.extra_layers", "((256, 512, 2, 'same'),)", ((256, 512, 2, "same"),)),
])
def test_values_as_users_type_them(field, text, expected):
  config = overrides.apply(cli._config_file(str(REPO / "configs" / "quickstart.py")), [(field, text)])  # pylint: disable=protected-access
  got = _get(config, field)
  assert got == expected and type(got) is type(expected)
  assert repr(got) == repr(expected)  # item types too


@pytest.mark.parametrize("pair, fragment", [
    (("train.stepz", "3"), 'the config has no field train.stepz (Did you mean "steps"?)'),
    (("nothing.at_all", "3"), "the config has no field nothing"),
    (("train.steps.more", "3"), "train.steps is a value, not a group of fields"),
    (("train", "3"), "train is a group of fields; set one of"),
    (("model.extra_layers", "((256, 512, 2),)"), "takes a tuple of any number of items, each a tuple (int, int, "
                                                  "int, string)"),
    (("box_coder.variances", "0.1"), "box_coder.variances takes a tuple of 2 items, each a number (e.g. (0.1, 0.2))"),
    (("model.backbone_taps", "((1,),)"), "model.backbone_taps takes a tuple of any number of items, each a string"),
])
def test_mistakes_are_one_line_naming_the_field(pair, fragment):
  with pytest.raises(ValueError) as error:
    overrides.apply(cli._config_file(str(REPO / "configs" / "quickstart.py")), [pair])  # pylint: disable=protected-access
  assert fragment in str(error.value) and "\n" not in str(error.value)


def test_split_takes_the_overrides_out_of_argv():
  argv = ["main.py", "--mode=train", "--config.train.steps=3", "--config=c.py", "--config.model.backbone_weights="]
  assert overrides.split(argv) == (["main.py", "--mode=train", "--config=c.py"],
                                   [("train.steps", "3"), ("model.backbone_weights", "")])
  with pytest.raises(ValueError, match=r"^--config.train.steps: give the value with '=', as "
                                       r"--config.train.steps=<value>$"):
    overrides.split(["main.py", "--config.train.steps", "3"])
