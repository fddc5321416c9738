"""SSD network: sizes per shipped config, head layout vs default boxes, mixed precision, config errors."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_tf import anchors, defaults
from ssd_tf.ssd import SSD

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.py"))


def _load_config(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _small_config():
  """ResNet-18 SSD at 128 px: 5 levels 16, 8, 4, 2, 1 and 5 foreground classes."""
  config = defaults.base_config()
  config.name = "ssd128_resnet18_test"
  config.model.update(dict(backbone="resnet18", backbone_weights=None, image_size=128, num_classes=5,
                           extra_layers=((64, 128, 2, "same"), (64, 128, 2, "same"), (32, 64, 2, "same"),
                                         (32, 64, 2, "same"))))
  config.anchors = defaults.anchor_config(dict(feature_map_sizes=(16, 8, 4, 2, 1),
                                               aspect_ratios=((2,), (2, 3), (2, 3), (2,), (2,))), clip="none")
  return config


def _images(seed, config, batch=2):
  size = config.model.image_size
  return np.random.default_rng(seed).uniform(0.0, 255.0, (batch, size, size, 3)).astype(np.float32)


def build_ssd(config):
  return SSD(config).network


def _level_offsets(anchor_config):
  """First default-box row of each level."""
  counts = [f * f * a for f, a in zip(anchor_config.feature_map_sizes, anchors.boxes_per_cell(anchor_config))]
  return np.cumsum([0] + counts[:-1])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_have_one_output_row_per_default_box(path):
  config = _load_config(path)
  ssd = SSD(config)
  model = ssd.network
  num_boxes = len(ssd.default_boxes)
  # The released layouts, the quickstart's (24, 12, 6, 3, 2, 1 with 4, 6, 6, 6, 4, 4 per cell) and SSDLite320's
  # (20, 10, 5, 3, 2, 1 with 6 per cell: torchvision's 3234; 12, 6, 3, 2, 1, 1 at 192 px: 1170).
  expected = {300: 8732, 512: 24564, 192: 3458, 320: 3234}[config.model.image_size]
  assert num_boxes == (1170 if config.model.ssdlite and config.model.image_size == 192 else expected)
  assert tuple(model.input.shape) == (None, config.model.image_size, config.model.image_size, 3)
  assert tuple(model.output["loc"].shape) == (None, num_boxes, 4)
  assert tuple(model.output["logits"].shape) == (None, num_boxes, config.model.num_classes + 1)
  num_levels = len(config.anchors.aspect_ratios)
  levels = [model.get_layer(f"level{k}_loc").input.shape[1:3] for k in range(num_levels)]
  assert [h for h, w in levels] == [w for h, w in levels] == ssd.feature_map_sizes
  assert list(config.anchors.feature_map_sizes) in ([], ssd.feature_map_sizes)


def test_bias_of_one_head_lights_exactly_its_default_boxes():
  config = _small_config()
  model = build_ssd(config)
  columns = config.model.num_classes + 1
  per_cell = anchors.boxes_per_cell(config.anchors)
  level, box, cls = 2, per_cell[2] - 1, 3  # last box of level 2: aspect ratio 1/3
  for k in range(len(per_cell)):  # silence every class head, then light one (box, class) slot of one level
    head = model.get_layer(f"level{k}_logits")
    kernel, bias = head.get_weights()
    bias = np.zeros_like(bias)
    if k == level:
      bias[box * columns + cls] = 1.0
    head.set_weights([np.zeros_like(kernel), bias])
  logits = model(_images(0, config))["logits"].numpy()

  rows, cols = np.nonzero(logits[0])
  size = config.anchors.feature_map_sizes[level]
  expected_rows = _level_offsets(config.anchors)[level] + np.arange(size * size) * per_cell[level] + box
  np.testing.assert_array_equal(rows, expected_rows)
  assert set(cols) == {cls}
  # Those rows are the default boxes of that level's grid, row-major, all with h / w = 3.
  boxes = anchors.default_boxes(config.anchors, config.model.image_size, config.anchors.feature_map_sizes)[rows]
  i, j = np.divmod(np.arange(size * size), size)
  centres = (boxes[:, :2] + boxes[:, 2:]) / 2
  np.testing.assert_allclose(centres, np.stack([i + 0.5, j + 0.5], -1) / size, atol=1e-6)
  heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  np.testing.assert_allclose(heights / widths, 3.0, rtol=1e-5)


def test_every_output_row_comes_from_its_cell_and_box_slot():
  config = _small_config()
  model = build_ssd(config)
  levels = len(config.anchors.feature_map_sizes)
  probe = keras.Model(model.input, [model.output["loc"]] + [model.get_layer(f"level{k}_loc").output
                                                            for k in range(levels)])
  loc, *raw = [t.numpy() for t in probe(_images(1, config))]
  per_cell = anchors.boxes_per_cell(config.anchors)
  for k, offset in enumerate(_level_offsets(config.anchors)):
    size = config.anchors.feature_map_sizes[k]
    for i, j, box, coord in [(0, 0, 0, 0), (size - 1, 0, per_cell[k] - 1, 3), (size // 2, size - 1, 1, 2)]:
      row = offset + (i * size + j) * per_cell[k] + box
      assert loc[1, row, coord] == raw[k][1, i, j, box * 4 + coord]
  assert np.abs(loc).max() > 0.0


def test_mixed_float16_computes_in_float16_and_outputs_float32():
  config = _small_config()
  previous = keras.mixed_precision.global_policy()
  config.train.mixed_precision = "mixed_float16"
  try:
    mixed = build_ssd(config)
  finally:
    keras.mixed_precision.set_global_policy(previous)
  config.train.mixed_precision = ""
  assert mixed.get_layer("level0_logits").compute_dtype == "float16"
  assert mixed.get_layer("resnet18").get_layer("conv1_conv").compute_dtype == "float16"
  full = build_ssd(config)
  full.set_weights(mixed.get_weights())
  images = _images(2, config)
  out16, out32 = mixed(images), full(images)
  for kind in ("loc", "logits"):
    assert out16[kind].dtype == tf.float32
    scale = np.abs(out32[kind]).max()
    np.testing.assert_allclose(out16[kind], out32[kind], atol=0.005 * scale)  # measured ~0.0013


def test_batchnorm_settings_reach_backbone_and_extra_layers():
  config = _small_config()
  config.model.batchnorm_synchronized = True
  config.model.batchnorm_momentum = 0.9
  model = build_ssd(config)
  norms = [layer for layer in model.get_layer("resnet18").layers + model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
  assert len(norms) == 15 + 2 * 4  # ResNet-18 stem..conv4 (1 + 4 + 5 + 5), two per extra level
  assert all(n.synchronized and n.momentum == 0.9 for n in norms)


def test_every_trainable_variable_gets_a_gradient():
  config = _small_config()
  model = build_ssd(config)
  with tf.GradientTape() as tape:
    outputs = model(_images(3, config), training=True)
    loss = tf.reduce_mean(tf.square(outputs["loc"])) + tf.reduce_mean(tf.square(outputs["logits"]))
  grads = tape.gradient(loss, model.trainable_variables)
  for variable, grad in zip(model.trainable_variables, grads):
    assert grad is not None and np.all(np.isfinite(grad)) and np.abs(grad).max() > 0.0, variable.path


def test_default_boxes_come_from_the_built_network_when_a_config_leaves_the_sizes_out():
  """SSD300-ResNet18 states the paper's sizes; left out, the network's give the same 8732 boxes."""
  stated = _load_config(REPO / "configs" / "ssd300_resnet18_coco.py")
  derived = _load_config(REPO / "configs" / "ssd300_resnet18_coco.py")
  derived.anchors.feature_map_sizes = ()
  a, b = SSD(stated), SSD(derived)
  assert b.feature_map_sizes == [38, 19, 10, 5, 3, 1]
  np.testing.assert_array_equal(a.default_boxes.numpy(), b.default_boxes.numpy())


def test_level_count_mismatch_is_explained():
  config = _small_config()
  config.model.extra_layers = config.model.extra_layers[:-1]
  with pytest.raises(ValueError, match="1 feature tap.*adds 3 level.*4 levels.*lists 5"):
    build_ssd(config)


def test_feature_size_mismatch_lists_actual_and_expected_sizes():
  config = _load_config(REPO / "configs" / "ssd300_resnet18_coco.py")
  config.model.image_size = 320
  with pytest.raises(ValueError, match=r"image_size=320.*\[40, 20, 10, 5, 3, 1\].*\[38, 19, 10, 5, 3, 1\]"):
    build_ssd(config)


def _extras_config(padding, batchnorm):
  config = _small_config()
  config.model.extra_layers = tuple((mid, out, stride, padding if stride == 2 else "same")
                                    for mid, out, stride, _ in config.model.extra_layers)
  config.model.extra_batchnorm = batchnorm
  return config


def test_symmetric_extra_padding_pads_every_side_like_pytorch():
  """A stride-2 3x3 conv on an even map: "symmetric" = pad 1 all round (PyTorch), "same" = bottom/right only."""
  network = build_ssd(_extras_config("symmetric", batchnorm=False))
  conv = network.get_layer("extra0_2_conv")
  x = np.random.default_rng(0).normal(size=(1, 8, 8, conv.kernel.shape[2])).astype(np.float32)
  expected = tf.nn.conv2d(x, conv.kernel, strides=2, padding=[[0, 0], [1, 1], [1, 1], [0, 0]]) + conv.bias
  pad = network.get_layer("extra0_2_pad")
  np.testing.assert_allclose(conv(pad(x)), expected, atol=1e-5)
  same = tf.nn.conv2d(x, conv.kernel, strides=2, padding="SAME") + conv.bias
  assert np.abs(same - expected).max() > 0.1  # the two paddings differ here


def test_extra_levels_without_batchnorm_are_convs_with_biases():
  network = build_ssd(_extras_config("same", batchnorm=False))
  names = {layer.name for layer in network.layers}
  assert not any(n.startswith("extra") and n.endswith("_bn") for n in names)
  assert all(len(network.get_layer(f"extra{k}_{j}_conv").weights) == 2 for k in range(4) for j in (1, 2))
  with_bn = build_ssd(_extras_config("same", batchnorm=True))
  assert all(len(with_bn.get_layer(f"extra{k}_{j}_conv").weights) == 1 for k in range(4) for j in (1, 2))


@pytest.mark.parametrize("name, mean, std", [("rgb_mean", (123.0, 117.0, 104.0), (1.0, 1.0, 1.0)),
                                             ("torch", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))])
def test_input_normalization_replaces_the_backbones(name, mean, std):
  config = _small_config()
  config.model.input_normalization = name
  network = build_ssd(config)
  layer = next(layer for layer in network.layers if layer.name.endswith("normalization"))
  pixels = np.array([[[[200.0, 100.0, 50.0]]]], np.float32)
  np.testing.assert_allclose(layer(pixels)[0, 0, 0], (pixels[0, 0, 0] - mean) / std, atol=1e-3)
