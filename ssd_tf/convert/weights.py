"""PyTorch state-dict tensors -> the weights of a Keras network, every key and every weight accounted for.

PyTorch conv kernels are [O, I, kh, kw], Keras' [kh, kw, I, O]; a BatchNorm's weight, bias,
running_mean, running_var are Keras' gamma, beta, moving_mean, moving_variance.
"""

import keras
import numpy as np


def _describe(key, value):
  return f"{key} {list(np.shape(value))}"


class StateDict:
  """The entries of a state dict ({name: array}) not yet taken by a converter.

  ``source`` names the state dict in errors (e.g. the file's path).
  """

  def __init__(self, state_dict, source):
    self._left = dict(state_dict)
    self.source = source

  def __contains__(self, key):
    return key in self._left

  def first(self, count=3):
    """The first ``count`` entries left, with their shapes, for error messages."""
    return ", ".join(_describe(k, v) for k, v in list(self._left.items())[:count]) or "none"

  def take(self, key, shape):
    """Removes entry ``key`` and returns it; ValueError when it is missing or its shape is not ``shape``."""
    if key not in self._left:
      raise ValueError(f"{self.source}: no entry {key} {list(shape)}; the first of the {len(self._left)} entries "
                       f"left: {self.first()}")
    if tuple(np.shape(self._left[key])) != tuple(shape):
      raise ValueError(f"{self.source}: entry {_describe(key, self._left[key])}, expected {list(shape)}")
    return self._left.pop(key)

  def discard(self, key):
    """Removes entry ``key`` if present (an entry the converter knowingly drops, e.g. a counter)."""
    self._left.pop(key, None)

  def check_consumed(self, ignore_prefixes=()):
    """Returns the names left under ``ignore_prefixes`` (state dict order); ValueError naming the first
    other entries left, with their shapes."""
    ignored = [key for key in self._left if key.startswith(tuple(ignore_prefixes))]
    unexpected = [key for key in self._left if not key.startswith(tuple(ignore_prefixes))]
    if unexpected:
      listed = ", ".join(_describe(key, self._left[key]) for key in unexpected[:4])
      more = f" and {len(unexpected) - 4} more" if len(unexpected) > 4 else ""
      raise ValueError(f"{self.source}: {len(unexpected)} unexpected entries: {listed}{more}")
    return ignored


# ssd_tf's box offsets (dy, dx, dh, dw) as columns of PyTorch's (dx, dy, dw, dh): torchvision's and NVIDIA's.
OFFSETS_FROM_XY = (1, 0, 3, 2)


def conv_kernel(weight):
  """PyTorch [O, I, kh, kw] -> Keras [kh, kw, I, O]."""
  return np.transpose(weight, (2, 3, 1, 0))


class Assigner:
  """Sets the weights of a Keras network layer by layer from a StateDict; checks that none was left out."""

  def __init__(self, network, state):
    self.network = network
    self.state = state
    self._set = set()

  def set(self, layer, values):
    layer.set_weights(values)
    self._set.update(id(w) for w in layer.weights)

  def conv(self, layer, prefix, channel_order=None):
    """Conv ``prefix``.weight [O, I, kh, kw] (+ .bias [O] when the layer has one); ``channel_order``:
    output channel i of the layer is source channel channel_order[i]."""
    height, width, inputs, outputs = layer.kernel.shape
    values = [conv_kernel(self.state.take(f"{prefix}.weight", (outputs, inputs, height, width)))]
    if len(layer.weights) > 1:
      values.append(self.state.take(f"{prefix}.bias", (outputs,)))
    if channel_order is not None:
      values = [v[..., channel_order] for v in values]
    self.set(layer, values)

  def depthwise_conv(self, layer, prefix):
    """Depthwise conv ``prefix``.weight [C, 1, kh, kw] (+ .bias [C] when the layer has one)."""
    height, width, channels, multiplier = layer.kernel.shape
    kernel = self.state.take(f"{prefix}.weight", (channels * multiplier, 1, height, width))
    values = [kernel.reshape(channels, multiplier, height, width).transpose(2, 3, 0, 1)]
    if len(layer.weights) > 1:
      values.append(self.state.take(f"{prefix}.bias", (channels * multiplier,)))
    self.set(layer, values)

  def batch_norm(self, layer, prefix):
    """BatchNorm ``prefix``.{weight, bias, running_mean, running_var}; num_batches_tracked (absent from
    torchvision's oldest files) is dropped."""
    shape = tuple(layer.gamma.shape)
    self.set(layer, [self.state.take(f"{prefix}.{leaf}", shape)
                     for leaf in ("weight", "bias", "running_mean", "running_var")])
    self.state.discard(f"{prefix}.num_batches_tracked")

  def conv_bn(self, network, name, prefix):
    """Layers ``{name}_conv`` (depthwise or not) and ``{name}_bn`` from torchvision's Conv2dNormActivation
    ``prefix`` (``{prefix}.0`` the conv, ``{prefix}.1`` the BatchNorm)."""
    conv = network.get_layer(f"{name}_conv")
    (self.depthwise_conv if isinstance(conv, keras.layers.DepthwiseConv2D) else self.conv)(conv, f"{prefix}.0")
    self.batch_norm(network.get_layer(f"{name}_bn"), f"{prefix}.1")

  def check_complete(self):
    """ValueError naming the first network weights no source entry set."""
    missing = [w.path for w in self.network.weights if id(w) not in self._set]
    if missing:
      raise ValueError(f"{self.state.source}: {len(missing)} weight(s) of {self.network.name} not set, first "
                       f"{', '.join(missing[:3])}")


def head_channel_order(boxes_per_cell, columns, source_layout, column_order=None):
  """Output channel order that turns a source head conv into ssd_tf's layout.

  ssd_tf's channel ``a * columns + j`` is column j of box a (cells' boxes then columns, as
  torchvision). ``source_layout`` "box_major" (torchvision) or "column_major" (NVIDIA:
  channel ``k * boxes_per_cell + a``). ``column_order[j]``: the source column of ssd_tf's
  column j (default: the same).
  """
  column_order = np.arange(columns) if column_order is None else np.asarray(column_order)
  a, j = np.meshgrid(np.arange(boxes_per_cell), np.arange(columns), indexing="ij")
  k = column_order[j]
  source = a * columns + k if source_layout == "box_major" else k * boxes_per_cell + a
  return source.reshape(-1)
