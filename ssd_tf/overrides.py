"""``--config.<field>=<value>`` on the command line: each value parsed as its field's declared type.

The type of a field is that of its default in defaults.base_config() (a field a config
adds: that of its value there), so a field a config sets to None (``model.backbone_weights``)
still takes a file name. Values:

  bool     true | false (also 1 | 0, yes | no)
  int      240000, 240_000            float   0.05, 5e-4, 2
  str      as typed                   tuple   (0.1, 0.2) or 0.1,0.2; strings: conv3,conv4
  none     "none" or "" where None is allowed (OPTIONAL_FIELDS)

A tuple's items take the type of the default's items (a number item stays an int when typed so) (ITEM_TYPES where the default is
empty or its items understate the type); the fields of FIXED_LENGTH, and pairs named
``*_range``, take exactly that many. No TensorFlow here.
"""

import ast
import difflib

import ml_collections

from ssd_tf import defaults

# Fields whose value may be None.
OPTIONAL_FIELDS = ("model.backbone_weights",)
# The type of every item (at any depth) of these tuple fields.
ITEM_TYPES = {"model.backbone_taps": str, "train.devices": str, "anchors.feature_map_sizes": int,
              "anchors.strides": float, "anchors.scales": float, "anchors.aspect_ratios": float}
FIXED_LENGTH = {"box_coder.variances": 2, "data.mean_rgb": 3}

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def split(argv):
  """(argv without its --config.<field>=<value> arguments, [(field, value text)] in order)."""
  rest, pairs = [], []
  for arg in argv:
    if not arg.startswith("--config."):
      rest.append(arg)
      continue
    field, equals, text = arg[len("--config."):].partition("=")
    if not equals:
      raise ValueError(f"{arg}: give the value with '=', as --config.{field}=<value>")
    pairs.append((field, text))
  return rest, pairs


def apply(config, pairs):
  """Sets each (field, value text) of ``pairs`` in ``config``; returns config.

  ValueError in one line naming the argument, the field's type and an example when a value
  does not parse as its field's type, or when the config has no such field.
  """
  base = defaults.base_config()
  for field, text in pairs:
    *parents, leaf = field.split(".")
    node = config
    for i, name in enumerate(parents + [leaf]):
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        raise ValueError(f"--config.{field}={text}: {_unknown(node, '.'.join((parents + [leaf])[:i + 1]), name)}")
      if name != leaf:
        node = node[name]
    if isinstance(node[leaf], ml_collections.ConfigDict):
      raise ValueError(f"--config.{field}={text}: {field} is a group of fields; set one of "
                       f"{', '.join(sorted(node[leaf]))}")
    template = _lookup(base, field)
    if template is None:
      template = node[leaf]
    value = parse(field, text, "" if template is None else template)
    with node.unlocked():
      del node[leaf]  # ConfigDict keeps a field's first type: a None field would take no string
      node[leaf] = value
  return config


def parse(field, text, template):
  """``text`` as a value of ``field``, whose default is ``template``; ValueError if it is not one."""
  if field in OPTIONAL_FIELDS and text.strip().lower() in ("", "none"):
    return None
  item = ITEM_TYPES.get(field)
  try:
    if isinstance(template, tuple):
      value = _literal(text, (item or _first_scalar_type(template)) is str)
      return _check(value, template, field, item)
    return _check(_scalar(text, type(template)), template, field, item)
  except (ValueError, TypeError, SyntaxError):
    optional = " or none" if field in OPTIONAL_FIELDS else ""
    raise ValueError(f"--config.{field}={text}: {field} takes {_describe(template, field, item)}{optional} "
                     f"(e.g. {_example(template)})") from None


def _scalar(text, kind):
  if kind is bool:
    word = text.strip().lower()
    if word not in _TRUE + _FALSE:
      raise ValueError(text)
    return word in _TRUE
  if kind is str:
    return text
  return ast.literal_eval(text.strip())


def _literal(text, strings):
  """A tuple typed as a Python literal, or comma-separated; bare words are strings when ``strings``."""
  text = text.strip()
  try:
    value = ast.literal_eval(text) if text else ()
  except (ValueError, SyntaxError):
    if not strings:
      raise
    value = tuple(word.strip() for word in text.strip("()[]").split(",") if word.strip())
  if strings and isinstance(value, str):
    value = (value,)
  return value


def _check(value, template, field, item):
  """``value`` (lists as tuples) if it has the type and shape of ``template``, else ValueError."""
  if isinstance(template, tuple):
    if field is not None and isinstance(value, (int, float, str)) and not isinstance(value, bool) and \
        template and not isinstance(template[0], tuple) and not _is_record(template):
      value = (value,)  # a field's one item: --config.anchors.scales=0.2 -> (0.2,)
    if not isinstance(value, (tuple, list)):
      raise ValueError(value)
    if _is_record(template):
      if len(value) != len(template):
        raise ValueError(value)
      return tuple(_check(v, t, None, item) for v, t in zip(value, template))
    length = FIXED_LENGTH.get(field, 2 if field and field.endswith("_range") else None)
    if length is not None and len(value) != length:
      raise ValueError(value)
    inner = template[0] if template else (item or str)()
    return tuple(_check(v, inner, None, item) for v in value)
  kind = item if item is not None and not isinstance(template, tuple) else type(template)
  if kind is bool:
    if not isinstance(value, bool):
      raise ValueError(value)
    return value
  if kind is int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
      raise ValueError(value)
    return int(value)
  if kind is float:  # a number: a field's value is a float, a tuple item stays as typed
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(value)
    return float(value) if field is not None else value
  if not isinstance(value, str):
    raise ValueError(value)
  return value


def _is_record(template):
  """A tuple of items of different types ((256, 512, 2, "same")): fixed length, typed by position."""
  return len({type(t) for t in template}) > 1


def _first_scalar_type(template):
  while isinstance(template, tuple) and template:
    template = template[0]
  return type(template) if not isinstance(template, tuple) else str


_NAMES = {bool: "a bool (true or false)", int: "an int", float: "a number", str: "a string"}


def _describe(template, field, item):
  if not isinstance(template, tuple):
    return _NAMES[item or type(template)]
  length = FIXED_LENGTH.get(field, 2 if field and field.endswith("_range") else None)
  if _is_record(template):
    return f"a tuple ({', '.join(_describe(t, None, None).split(' ', 1)[1] for t in template)})"
  inner = _describe(template[0], None, item) if template else _NAMES[item or str]
  return f"a tuple of {length or 'any number of'} items, each {inner}"


def _example(template):
  if isinstance(template, tuple):
    return "(" + ", ".join(_example(t) for t in template) + ("," if len(template) == 1 else "") + ")"
  if isinstance(template, bool):
    return str(template).lower()
  return repr(template) if isinstance(template, str) else str(template)


def _lookup(config, field):
  """The value of dotted ``field`` in ``config``, or None when it has none."""
  node = config
  for name in field.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
      return None
    node = node[name]
  return node


def _unknown(node, field, name):
  """The message for a field the config lacks, with the nearest names."""
  if not isinstance(node, ml_collections.ConfigDict):
    return f"{field.rsplit('.', 1)[0]} is a value, not a group of fields"
  close = difflib.get_close_matches(name, list(node), n=1)
  hint = f' (Did you mean "{close[0]}"?)' if close else ""
  return f"the config has no field {field}{hint}"
