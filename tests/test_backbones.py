"""Backbones: tap shapes, variants, input normalizations, L2Normalization, weight transfer and weight files."""

import inspect
import warnings

import h5py
import keras
import keras.src.utils.file_utils
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format

from ssd_tf.backbones import NAMES, build_backbone, layers, resnet, vgg


def _randomize(model, seed):
  """Random weights everywhere, BatchNorm statistics included, scaled to keep activations O(1)."""
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    shape, kind = tuple(variable.shape), variable.path.split("/")[-1]
    if kind == "kernel":
      value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
    elif kind in ("gamma", "moving_variance"):
      value = rng.uniform(0.5, 1.5, shape)
    else:
      value = rng.normal(0.0, 0.1, shape)
    variable.assign(value.astype(np.float32))


def _images(seed, size, batch=2):
  return np.random.default_rng(seed).uniform(0.0, 255.0, (batch, size, size, 3)).astype(np.float32)


def _one_line_error(excinfo):
  message = str(excinfo.value)
  assert "\n" not in message, message
  return message


@pytest.mark.parametrize("name", [n for n in NAMES if n != "mobilenet_v3_large"])
def test_taps_have_stride_8_and_16(name):
  model = build_backbone(name).model
  expected = {300: [(38, 38), (19, 19)], 512: [(64, 64), (32, 32)], 128: [(16, 16), (8, 8)]}
  channels = {"resnet18": [256], "resnet34": [256], "resnet50": [1024], "resnet101": [1024],
              "vgg16": [512, 1024]}
  for size, sizes in expected.items():
    taps = keras.tree.flatten(model(keras.Input((size, size, 3))))
    assert [tuple(t.shape[1:]) for t in taps] == [s + (c,) for s, c in zip(sizes, channels[name])]


def test_mobilenet_taps_have_stride_16_and_32():
  for variant, last in (("", 960), ("reduced_tail", 480)):
    model = build_backbone("mobilenet_v3_large", variant=variant).model
    for size, (c4, c5) in {320: (20, 10), 300: (19, 10), 512: (32, 16)}.items():
      taps = model(keras.Input((size, size, 3)))
      assert [tuple(t.shape[1:]) for t in taps] == [(c4, c4, 672), (c5, c5, last)]


def test_resnet18_forward_gives_38x38x256_tap():
  (tap,) = build_backbone("resnet18").taps(_images(0, 300, batch=1))
  assert tap.shape == (1, 38, 38, 256)
  assert np.all(np.isfinite(tap)) and np.all(tap.numpy() >= 0.0) and tap.numpy().max() > 0.0


def test_vgg16_pools_like_caffe_ceil_mode():
  model = vgg.build_vgg16()
  sizes = keras.Model(model.input, [model.get_layer(f"block{b}_pool").output for b in range(1, 6)])(
      keras.Input((300, 300, 3)))
  assert [s.shape[1] for s in sizes] == [150, 75, 38, 19, 19]
  # Ceil-mode 2x2/2 pooling of a 5x5 map: the last row/column windows hold a single row/column.
  x = np.random.default_rng(0).normal(size=(1, 5, 5, 1)).astype(np.float32)
  padded = np.pad(x[0, :, :, 0], ((0, 1), (0, 1)), constant_values=-np.inf)
  expected = padded.reshape(3, 2, 3, 2).max(axis=(1, 3))
  np.testing.assert_array_equal(model.get_layer("block4_pool")(x)[0, :, :, 0], expected)


def test_torch_normalization_is_mean_std_on_rgb():
  images = _images(1, 4)
  mean, std = np.array(layers.IMAGENET_MEAN_RGB), np.array(layers.IMAGENET_STD_RGB)
  expected = (images / 255.0 - mean) / std
  np.testing.assert_allclose(resnet.normalization(18)(images), expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(build_backbone("resnet50", variant="torchvision").normalization(images), expected,
                             rtol=1e-5, atol=1e-5)
  assert isinstance(build_backbone("resnet34").normalization, layers.ImageNormalization)


def test_caffe_normalization_matches_keras_applications():
  images = _images(2, 4)
  for ours, theirs in ((resnet.normalization(50), keras.applications.resnet.preprocess_input),
                       (vgg.normalization(), keras.applications.vgg16.preprocess_input)):
    np.testing.assert_allclose(ours(images), theirs(images.copy()), rtol=1e-6, atol=1e-4)


def test_l2_normalization_values_gradient_and_float16():
  x = np.random.default_rng(3).normal(size=(2, 3, 3, 4)).astype(np.float32)
  layer = vgg.L2Normalization()
  with tf.GradientTape() as tape:
    y = layer(x)
    total = tf.reduce_sum(y)
  unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
  np.testing.assert_allclose(y, 20.0 * unit, rtol=1e-5)
  # d sum(y) / d scale_c = sum over positions of the unit vectors' c component
  np.testing.assert_allclose(tape.gradient(total, layer.scale), unit.sum(axis=(0, 1, 2)),
                             rtol=1e-5, atol=1e-6)
  # Activations of a few hundred: their float16 sum of squares would overflow, the layer's does not.
  half = vgg.L2Normalization(dtype="mixed_float16")
  big = 300.0 * np.abs(x)
  y16 = half(big)
  assert y16.dtype == tf.float16
  expected = 20.0 * big / np.linalg.norm(big, axis=-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(y16, np.float32), expected, rtol=2e-3, atol=2e-2)


def _assert_same_weights(model, source):
  for name in layers.weighted_layer_names(model):
    for ours, theirs in zip(model.get_layer(name).weights, source.get_layer(name).weights, strict=True):
      np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)


def test_resnet50_copies_keras_applications_layer_by_layer():
  source = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
  _randomize(source, 4)
  reference = keras.Model(source.input, source.get_layer("conv4_block6_out").output)
  images = _images(5, 64)
  expected = reference(keras.applications.resnet.preprocess_input(images.copy())).numpy()

  standard = resnet.build_resnet(50, conv4_stride=2)  # the ImageNet network's own strides
  resnet.copy_keras_applications_weights(standard, source)
  actual = standard(resnet.normalization(50)(images))  # one tap: Keras returns it bare
  assert actual.shape == expected.shape == (2, 4, 4, 1024)
  # Same float32 ops in the same order up to oneDNN blocking: relative error ~1e-6.
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

  ssd = resnet.build_resnet(50)  # conv4 at stride 1: same kernel shapes, same values
  resnet.copy_keras_applications_weights(ssd, source)
  _assert_same_weights(ssd, source)
  assert ssd(resnet.normalization(50)(images)).shape == (2, 8, 8, 1024)


def test_vgg16_copies_keras_applications_conv_layers():
  source = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))
  _randomize(source, 6)
  images = _images(7, 64)
  expected = keras.Model(source.input, source.get_layer("block5_conv3").output)(
      keras.applications.vgg16.preprocess_input(images.copy())).numpy()

  model = vgg.build_vgg16()
  conv6_before = model.get_layer("conv6").get_weights()
  assert vgg.copy_keras_applications_weights(model, source) == list(vgg.CONV_LAYERS)
  # Even sizes (64 -> 4): "same" pooling equals keras.applications' "valid" pooling.
  actual = keras.Model(model.input, model.get_layer("block5_conv3").output)(vgg.normalization()(images))
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  for ours, theirs in zip(conv6_before, model.get_layer("conv6").get_weights()):  # no top: conv6 untouched
    np.testing.assert_array_equal(ours, theirs)


def test_copy_reports_mismatched_layers():
  with pytest.raises(ValueError, match="conv1_conv.*weight shapes"):
    resnet.copy_keras_applications_weights(resnet.build_resnet(18), resnet.build_resnet(50))


def test_weights_file_round_trip(tmp_path):
  saved = build_backbone("resnet18").model
  _randomize(saved, 8)
  path = tmp_path / "resnet18.weights.h5"
  saved.save_weights(path)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # Keras warns when parts of a file do not match
    loaded = build_backbone("resnet18", path).model
  x = _images(9, 64)
  expected = saved(x).numpy()
  assert np.abs(expected).max() > 0.0
  np.testing.assert_array_equal(loaded(x), expected)


def test_weights_file_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
    build_backbone("resnet18", tmp_path / "missing.weights.h5")
  path = tmp_path / "resnet34.weights.h5"
  build_backbone("resnet34").model.save_weights(path)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    with pytest.raises(ValueError, match="resnet34.weights.h5: cannot load .* into backbone resnet18"):
      build_backbone("resnet18", path)


def test_unknown_name_and_missing_imagenet_weights():
  with pytest.raises(ValueError, match="resnet152.*resnet18, resnet34, resnet50, resnet101, vgg16"):
    build_backbone("resnet152")
  with pytest.raises(ValueError, match="keras.applications has no ImageNet weights for resnet18.*pth"):
    build_backbone("resnet18", "imagenet")


def _conv(x, kernel, stride=1, pad=0):
  """torch.nn.Conv2d without bias: ``pad`` zeros on every side, then a strided cross-correlation."""
  return tf.nn.conv2d(x, kernel, stride, [[0, 0], [pad, pad], [pad, pad], [0, 0]]).numpy()


def test_resnet50_torchvision_variant_is_v1_5():
  """conv3's first bottleneck (stride 2, on an even 16x16 map) against torchvision's definition in tf.nn
  ops: conv1 1x1 -> conv2 3x3 stride 2 padding 1 -> conv3 1x1, downsample 1x1 stride 2; no conv biases;
  BatchNorm epsilon 1e-5. Same layer names as the "keras" variant."""
  model = resnet.build_resnet(50, taps=("conv3", "conv4"), variant="torchvision")
  assert layers.weighted_layer_names(model) == layers.weighted_layer_names(resnet.build_resnet(50))
  _randomize(model, 11)
  block = keras.Model(model.get_layer("conv3_block1_1_conv").input, model.get_layer("conv3_block1_out").output)
  x = np.abs(np.random.default_rng(12).normal(size=(2, 16, 16, 256))).astype(np.float32)

  def conv_bn(x, j, stride=1, pad=0):
    (kernel,) = model.get_layer(f"conv3_block1_{j}_conv").get_weights()  # no bias
    gamma, beta, mean, variance = model.get_layer(f"conv3_block1_{j}_bn").get_weights()
    return (_conv(x, kernel, stride, pad) - mean) / np.sqrt(variance + 1e-5) * gamma + beta

  y = np.maximum(conv_bn(x, 1), 0.0)
  y = np.maximum(conv_bn(y, 2, stride=2, pad=1), 0.0)
  expected = np.maximum(conv_bn(y, 3) + conv_bn(x, 0, stride=2), 0.0)
  actual = block(x).numpy()
  assert actual.shape == (2, 8, 8, 512)
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_variants_default_and_errors():
  assert [resnet.resolve_variant(d) for d in (18, 34, 50, 101)] == ["torchvision"] * 2 + ["keras"] * 2
  keras_v1 = build_backbone("resnet50").model
  assert keras_v1.get_layer("conv1_conv").use_bias and keras_v1.get_layer("conv1_bn").epsilon == 1.001e-5
  torchvision = build_backbone("resnet50", variant="torchvision").model
  assert not torchvision.get_layer("conv1_conv").use_bias and torchvision.get_layer("conv1_bn").epsilon == 1e-5
  cases = [(dict(name="resnet18", variant="keras"), "resnet18 exists only as variant 'torchvision'"),
           (dict(name="resnet50", variant="v2"), "must be '', 'keras' or 'torchvision', got 'v2'"),
           (dict(name="vgg16", variant="keras"), "vgg16 has a single variant: model.backbone_variant"),
           (dict(name="resnet50", weights="imagenet", variant="torchvision"),
            "keras.applications' ResNet50, variant 'keras'.*backbone_variant='torchvision'.*pth")]
  for kwargs, match in cases:
    with pytest.raises(ValueError, match=match) as excinfo:
      build_backbone(**kwargs)
    _one_line_error(excinfo)


def _offline_get_file(monkeypatch, folder):
  """keras.utils.get_file, for keras.applications and for ssd_tf, returns the file of that name in
  ``folder`` instead of downloading; returns the list of the calls' arguments."""
  calls = []
  signature = inspect.signature(keras.utils.get_file)

  def get_file(*args, **kwargs):
    calls.append(dict(signature.bind(*args, **kwargs).arguments))
    return str(folder / calls[-1]["fname"])

  monkeypatch.setattr(keras.utils, "get_file", get_file)
  monkeypatch.setattr(keras.src.utils.file_utils, "get_file", get_file)  # keras.applications' reference
  return calls


@pytest.mark.parametrize("name, module, url", [
    ("resnet50", resnet, "http://127.0.0.1:9/"),
    ("vgg16", vgg, f"http://127.0.0.1:9/{vgg.IMAGENET_FILE}"),
], ids=["resnet50", "vgg16"])
def test_imagenet_weights_offline_is_one_line_saying_where_to_put_the_file(name, module, url, tmp_path, monkeypatch):
  """The real download code against an empty Keras cache and an address that refuses at once (the
  discard port of this machine), as a machine without network access sees it."""
  monkeypatch.setattr(keras.src.backend.config, "_KERAS_DIR", str(tmp_path))  # what KERAS_HOME sets
  monkeypatch.setattr(module, "IMAGENET_URL", url)
  file_name = resnet.IMAGENET_FILES[50][0] if name == "resnet50" else vgg.IMAGENET_FILE
  with pytest.raises(OSError) as excinfo:
    build_backbone(name, "imagenet")
  message = _one_line_error(excinfo)
  for fragment in ("model.backbone_weights='imagenet'", f"downloads http://127.0.0.1:9/{file_name}, which failed",
                   f"copy it to {tmp_path / 'models' / file_name}"):
    assert fragment in message, message
  assert list((tmp_path / "models").iterdir()) == []  # no partial download left


def _save_like_keras_applications(model, path):
  """Writes ``model``'s weights as keras.applications' downloads hold them: a legacy Keras HDF5 file."""
  with h5py.File(path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.mark.parametrize("depth", [50, pytest.param(101, marks=pytest.mark.slow)])
def test_resnet_imagenet_weights_load_like_keras_applications(depth, tmp_path, monkeypatch):
  """weights="imagenet" offline: the file keras.applications downloads (same get_file call), loaded by
  the code that follows the download, gives keras.applications' conv3 and conv4 activations."""
  application = getattr(keras.applications, f"ResNet{depth}")
  source = application(include_top=False, weights=None)
  _randomize(source, depth)
  _save_like_keras_applications(source, tmp_path / resnet.IMAGENET_FILES[depth][0])
  calls = _offline_get_file(monkeypatch, tmp_path)
  reference = application(include_top=False, weights="imagenet")
  _assert_same_weights(reference, source)

  backbone = build_backbone(f"resnet{depth}", "imagenet", taps=("conv3", "conv4"))
  assert calls[1] == calls[0] and calls[0]["fname"].endswith("_weights_tf_dim_ordering_tf_kernels_notop.h5")
  taps = [f"conv3_block{resnet.BLOCKS[depth][1]}_out", f"conv4_block{resnet.BLOCKS[depth][2]}_out"]
  images = _images(12, 64)
  expected = keras.Model(reference.input, [reference.get_layer(name).output for name in taps])(
      keras.applications.resnet.preprocess_input(images.copy()))
  actual = backbone.taps(images)
  assert [a.shape for a in actual] == [e.shape for e in expected] == [(2, 8, 8, 512), (2, 4, 4, 1024)]
  for a, e in zip(actual, expected):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


@pytest.mark.slow  # about 10 s and 5 GB: VGG16 with its classifier top, twice
def test_vgg16_imagenet_weights_load_like_keras_applications(tmp_path, monkeypatch):
  """weights="imagenet" offline, as for the ResNets; the file has the classifier top (138M parameters),
  and the SSD's conv6 / conv7 must compute the paper's subsampled fc6 / fc7: conv6 is a 3x3 conv
  dilated 6 whose tap (i, j) is fc6's input (3i, 3j) for every 4th output, conv7 every 4th of fc7."""
  source = keras.applications.VGG16(include_top=True, weights=None)
  _randomize(source, 13)
  _save_like_keras_applications(source, tmp_path / vgg.IMAGENET_FILE)
  del source
  calls = _offline_get_file(monkeypatch, tmp_path)
  reference = keras.applications.VGG16(include_top=True, weights="imagenet")
  backbone = build_backbone("vgg16", "imagenet")
  assert calls[1] == calls[0] and calls[0]["fname"] == "vgg16_weights_tf_dim_ordering_tf_kernels.h5"

  images = _images(14, 224, batch=1)  # include_top fixes keras.applications' input to 224x224
  block4, block5 = keras.Model(reference.input, [reference.get_layer(f"block{b}_conv3").output for b in (4, 5)])(
      keras.applications.vgg16.preprocess_input(images.copy()))
  block4, block5 = block4.numpy(), block5.numpy()
  conv4_3 = 20.0 * block4 / np.linalg.norm(block4, axis=-1, keepdims=True)
  size = block5.shape[1]  # 14
  padded = np.pad(block5, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  pool5 = np.max([padded[:, i:i + size, j:j + size] for i in range(3) for j in range(3)], axis=0)
  fc6_kernel, fc6_bias = reference.get_layer("fc1").get_weights()  # [7 * 7 * 512, 4096], row-major input
  fc7_kernel, fc7_bias = reference.get_layer("fc2").get_weights()
  padded = np.pad(pool5, ((0, 0), (6, 6), (6, 6), (0, 0)))
  conv6 = fc6_bias[::4]
  for i in range(3):
    for j in range(3):
      row = (3 * i * 7 + 3 * j) * 512
      conv6 = conv6 + padded[:, 6 * i:6 * i + size, 6 * j:6 * j + size] @ fc6_kernel[row:row + 512, ::4]
  conv7 = np.maximum(np.maximum(conv6, 0.0) @ fc7_kernel[::4, ::4] + fc7_bias[::4], 0.0)

  actual = backbone.taps(images)
  assert [a.shape for a in actual] == [(1, 28, 28, 512), (1, 14, 14, 1024)]
  for a, e in zip(actual, (conv4_3, conv7)):
    assert np.abs(e).max() > 0.0
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


def test_custom_layers_serialize():
  x = np.abs(np.random.default_rng(10).normal(size=(1, 2, 2, 3)).astype(np.float32)) * 100.0
  for layer in (layers.caffe_normalization(), layers.torch_normalization(),
                vgg.L2Normalization(initial_scale=7.0)):
    copy = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(copy) is type(layer)
    np.testing.assert_allclose(copy(x), layer(x), rtol=1e-6)


@pytest.mark.parametrize("depth, channels", [(18, (128, 256)), (50, (512, 1024))])
def test_resnet_conv3_conv4_taps_share_the_single_tap_weights(depth, channels):
  """Two taps: conv3 at stride 8, conv4 at stride 16; same layers as the one-tap network, so the
  conv3 output equals the one-tap network's conv3 activations with the same weights."""
  single = resnet.build_resnet(depth)
  double = resnet.build_resnet(depth, taps=("conv3", "conv4"))
  assert layers.weighted_layer_names(double) == layers.weighted_layer_names(single)
  _randomize(single, 8)
  double.set_weights(single.get_weights())
  images = resnet.normalization(depth)(_images(9, 64))
  conv3, conv4 = double(images)
  assert conv3.shape == (2, 8, 8, channels[0]) and conv4.shape == (2, 4, 4, channels[1])
  expected = keras.Model(single.input, single.get_layer(f"conv3_block{resnet.BLOCKS[depth][1]}_out").output)(images)
  np.testing.assert_allclose(conv3, expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"taps must be one of"):
    resnet.build_resnet(depth, taps=("conv4", "conv3"))
  with pytest.raises(ValueError, match="vgg16 taps are fixed"):
    build_backbone("vgg16", taps=("conv4",))
