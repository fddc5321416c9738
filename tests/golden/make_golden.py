"""Golden outputs of published PyTorch architectures with seeded weights, for ssd_tf's checkpoint converter tests.

Run from the repository root with the torch venv (torch 2.14.1, torchvision 0.29.1, numpy, pillow):

    /tmp/peer/venv/bin/python tests/golden/make_golden.py               # writes the files below
    /tmp/peer/venv/bin/python tests/golden/make_golden.py --calibrate   # prints feature RMS per level, writes nothing

Nothing is downloaded: every model is the real architecture with weights drawn by ``seeded.make_state_dict(spec,
seed)`` (NumPy only), and each json stores that spec and seed, so a TensorFlow test can rebuild the same weights
without torch (and check them against ``weights_sha256`` = ``seeded.state_dict_digest``). Images come from the
COCO sample ($COCO_TINY_DIR, else ../shared/data/coco_tiny beside the repository); files are named relative to it.

Writes into tests/golden/ (re-running rewrites the same files; the .npz files carry fixed zip timestamps):

- ``torchvision_resnet{18,34,50,101}.npz/.json``: ``torchvision.models.resnetD(weights=None)`` with its full state
  dict seeded (layer4 and fc included, as in a real .pth); ``torchvision_mobilenet_v3_large.npz/.json`` the same for
  ``mobilenet_v3_large(weights=None)`` (classifier included), outputs SSDLite's taps ``c4`` and ``c5``. Input: one COCO val image, 160x160 centre crop, uint8
  (``image`` [160, 160, 3]); ``to_tensor`` (x / 255) then ImageNet mean/std. Outputs ``layer2`` [1, 20, 20, C]
  and ``layer3`` [1, 10, 10, C], float32 NHWC.
- ``torchvision_ssd300_vgg16.npz/.json``: ``ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91)``
  in eval mode with its defaults, on three whole COCO val images of different sizes (PIL RGB, float [0, 1] CHW).
  Default boxes, samples of the transformed 300x300 inputs, raw head outputs (full ``bbox_regression``,
  ``cls_logits`` at a row subset), the final detections of ``model(images)``, backbone feature statistics.
- ``torchvision_ssdlite320_mobilenet_v3_large.npz/.json``: ``ssdlite320_mobilenet_v3_large(weights=None,
  weights_backbone=None, num_classes=91)`` (reduced tail) on the same three images, the same arrays.
- ``nvidia_ssd300.npz/.json`` and ``nvidia_input_{0,1,2}.jpg``: NVIDIA's SSD300-ResNet50 (``nvidia_ssd300.py``) on
  three 300x300 centre crops saved as JPEG (quality 90), so that their Resize((300, 300)) is an identity. Default
  boxes, raw ``locs`` (full) and ``confs`` (row subset), detections decoded as their evaluate.py does.

Each json's ``arrays`` describes the arrays of its npz. The TensorFlow-vs-PIL JPEG check runs
``check_jpeg_decode.py`` with $GOLDEN_TF_PYTHON (default ``python3``), an interpreter that has TensorFlow.
"""

import argparse
import copy
import hashlib
import io
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import PIL
from PIL import Image
import torch
import torchvision
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection import SSD300_VGG16_Weights
from torchvision.models.detection import ssdlite320_mobilenet_v3_large
from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights
import torchvision.transforms.functional as TF

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nvidia_ssd300 as nv  # noqa: E402
import seeded  # noqa: E402

REPO = HERE.parent.parent
COCO_DIR = pathlib.Path(os.environ.get("COCO_TINY_DIR", str(REPO.parent / "shared" / "data" / "coco_tiny")))
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

RESNET_SEEDS = {18: 1018, 34: 1034, 50: 1050, 101: 1101}
RESNET_IMAGE = "val2017/000000047112.jpg"
RESNET_CROP = 160

TV_SEED = 2300
TV_IMAGES = ["val2017/000000184324.jpg", "val2017/000000166918.jpg", "val2017/000000404484.jpg"]
NV_SEED = 3300
SSDLITE_SEED = 5320
MOBILENET_SEED = 5300
NV_IMAGES = ["val2017/000000376322.jpg", "val2017/000000357888.jpg", "val2017/000000025603.jpg"]
ROWS_SEED = 4000          # the seeded subset of default boxes whose class logits are stored
ROWS_RANDOM = 512         # ... plus the TOP_ROWS boxes of highest foreground score of each image
TOP_ROWS = 32
INPUT_SAMPLES_SEED = 4001
INPUT_SAMPLES = 2048

# Head weights. Backbone features of the seeded models have very different scales per level (torchvision's VGG
# reads 0..255 pixels: ~100 beyond the L2-normalized conv4_3), so each head convolution's std is set from the RMS
# of its input feature (measured with --calibrate on these images, rounded) to give outputs of a chosen std:
# regression ~1.5 (offsets of a few tenths of a box), class logits ~6 with the background logit raised by
# BG_BIAS through the bias. Random logits of std 6 over 80-90 classes give most boxes a clear background and a
# small share a foreground class with scores spread from the threshold up to ~1, i.e. dozens of detections.
REG_STD = 1.5
CLS_STD = 6.0
TV_FEATURE_RMS = [0.89, 90.4, 85.1, 97.0, 89.6, 97.9]
TV_BG_BIAS = 30.0
NV_FEATURE_RMS = [4.06, 2.24, 1.25, 0.893, 0.722, 0.442]
NV_BG_BIAS = 31.0
SSDLITE_BG_BIAS = 30.0


def versions():
  return {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": np.__version__,
          "pillow": PIL.__version__, "python": sys.version.split()[0]}


# ---------------------------------------------------------------------------------------------- writing files


def _compact(obj, indent=0, width=118):
  """JSON with short lists and dicts on one line."""
  flat = json.dumps(obj)
  if len(flat) + indent <= width or not isinstance(obj, (list, dict)) or not obj:
    return flat
  pad = " " * (indent + 1)
  if isinstance(obj, list):
    inner = ",\n".join(pad + _compact(v, indent + 1, width) for v in obj)
    return "[\n" + inner + "\n" + " " * indent + "]"
  inner = ",\n".join(pad + json.dumps(k) + ": " + _compact(v, indent + 1, width) for k, v in obj.items())
  return "{\n" + inner + "\n" + " " * indent + "}"


def write_json(name, obj):
  (HERE / name).write_text(_compact(obj) + "\n")


def write_npz(name, arrays):
  """np.savez_compressed with fixed zip timestamps (byte-identical re-runs)."""
  with zipfile.ZipFile(HERE / name, "w", compression=zipfile.ZIP_DEFLATED) as zf:
    for key, value in arrays.items():
      buf = io.BytesIO()
      np.lib.format.write_array(buf, np.ascontiguousarray(value), allow_pickle=False)
      info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      info.external_attr = 0o644 << 16
      zf.writestr(info, buf.getvalue())


def sha256_file(path):
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def pil_rgb(path):
  with Image.open(path) as image:
    return image.convert("RGB")


def rgb_sha256(image):
  return hashlib.sha256(np.ascontiguousarray(np.asarray(image)).tobytes()).hexdigest()


def tf_jpeg_check(paths):
  """Runs check_jpeg_decode.py with a TensorFlow interpreter; a note instead when that fails."""
  python = os.environ.get("GOLDEN_TF_PYTHON", "python3")
  cmd = [python, str(HERE / "check_jpeg_decode.py"), *map(str, paths)]
  try:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])
  except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
    return {"not_checked": f"{python} check_jpeg_decode.py failed: {err!r}"}


# ---------------------------------------------------------------------------------------------- seeded weights


def load_seeded(model, spec, seed):
  weights = seeded.make_state_dict(spec, seed)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
  return seeded.state_dict_digest(weights)


def key_summary(spec, n=6):
  return {"count": len(spec),
          "first": [[e[0], e[1]] for e in spec[:n]],
          "last": [[e[0], e[1]] for e in spec[-n:]]}


def head_overrides(weight_fmt, bias_fmt, cls_weight_fmt, state, rms, bg_slices):
  """Std of each head conv weight from its input's RMS; background slices added to the class bias."""
  overrides = []
  for level, level_rms in enumerate(rms):
    for fmt, target in ((weight_fmt, REG_STD), (cls_weight_fmt, CLS_STD)):
      name = fmt.format(level)
      fan_in = int(np.prod(state[name].shape[1:]))
      std = float(f"{target / (level_rms * math.sqrt(fan_in)):.6g}")
      overrides.append((name, {"std": std}))
    overrides.append((bias_fmt.format(level), {"dist": "normal", "a": 0.0, "b": 0.05,
                                               "adds": bg_slices[level]}))
  return overrides


def score_stats(max_fg, threshold, det_scores, det_labels):
  q = np.quantile(max_fg, [0.5, 0.9, 0.99, 0.999, 1.0])
  return {
      "max_foreground_score_quantiles_50_90_99_99.9_100": [round(float(v), 5) for v in q],
      "boxes_with_max_foreground_in_0.05_0.9": int(((max_fg > 0.05) & (max_fg < 0.9)).sum()),
      "boxes_with_max_foreground_above_threshold": int((max_fg > threshold).sum()),
      "detections": int(len(det_scores)),
      "detection_score_quantiles_0_25_50_75_100": [round(float(v), 5) for v in
                                                   np.quantile(det_scores, [0, 0.25, 0.5, 0.75, 1.0])],
      "distinct_labels": int(len(np.unique(det_labels))),
  }


def row_subset(max_fg_per_image, n_boxes):
  rng = np.random.default_rng(ROWS_SEED)
  rows = set(rng.choice(n_boxes, ROWS_RANDOM, replace=False).tolist())
  for max_fg in max_fg_per_image:
    rows.update(np.argsort(-max_fg, kind="stable")[:TOP_ROWS].tolist())
  return np.array(sorted(rows), dtype=np.int64)


# ---------------------------------------------------------------------------------------------- ResNets


def resnet_input():
  image = pil_rgb(COCO_DIR / RESNET_IMAGE)
  w, h = image.size
  left, top = (w - RESNET_CROP) // 2, (h - RESNET_CROP) // 2
  box = (left, top, left + RESNET_CROP, top + RESNET_CROP)
  crop = image.crop(box)
  x = TF.normalize(TF.to_tensor(crop), IMAGENET_MEAN, IMAGENET_STD)[None]
  return np.asarray(crop), x, {"file": RESNET_IMAGE, "size_wh": [w, h], "crop_box_ltrb": list(box),
                               "pil_rgb_sha256": rgb_sha256(image)}


def make_resnet(depth, crop, x, image_info):
  seed = RESNET_SEEDS[depth]
  model = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
  spec = seeded.spec_for(seeded.shapes_of(model.state_dict().items()), weight_gain=1.0)
  digest = load_seeded(model, spec, seed)
  taps = {}
  hooks = [getattr(model, name).register_forward_hook(
      lambda _m, _i, out, name=name: taps.__setitem__(name, out)) for name in ("layer2", "layer3")]
  with torch.no_grad():
    model(x)
  for hook in hooks:
    hook.remove()
  arrays = {"image": crop.astype(np.uint8),
            "layer2": taps["layer2"].permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32),
            "layer3": taps["layer3"].permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)}
  stats = {k: {"shape": list(v.shape), "mean": float(v.mean()), "std": float(v.std()),
               "abs_max": float(np.abs(v).max())} for k, v in arrays.items() if k != "image"}
  write_npz(f"torchvision_resnet{depth}.npz", arrays)
  write_json(f"torchvision_resnet{depth}.json", {
      "source": f"torchvision.models.resnet{depth}(weights=None), eval mode, float32",
      "seed": seed,
      **versions(),
      "image": image_info,
      "preprocess": "PIL RGB centre crop (uint8) -> torchvision.transforms.functional.to_tensor (x / 255) -> "
                    f"normalize(mean={IMAGENET_MEAN}, std={IMAGENET_STD})",
      "arrays": {"image": "uint8 [160, 160, 3] the crop, RGB",
                 "layer2": "float32 NHWC output of model.layer2 (forward hook on model(x))",
                 "layer3": "float32 NHWC output of model.layer3"},
      "output_stats": stats,
      "state_dict_keys": key_summary(spec),
      "weights_sha256": digest,
      "spec_rules": "seeded.spec_for(shapes, weight_gain=1.0): conv/linear weights normal(0, sqrt(1/fan_in)); "
                    "BN weight U(0.5,1.5), bias N(0,0.1), running_mean N(0,0.2), running_var U(0.5,1.5), "
                    "num_batches_tracked 0; fc.bias N(0,0.05)",
      "spec": spec,
  })
  print(f"resnet{depth}: layer2 std {stats['layer2']['std']:.3f}, layer3 std {stats['layer3']['std']:.3f}")


# ---------------------------------------------------------------------------------------------- torchvision SSD


def tv_model():
  return ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91).eval()


def tv_spec(model):
  state = model.state_dict()
  # Class logits channel c = a * 91 + k: background (k = 0) is every 91st channel.
  bg = [[[0, None, 91, TV_BG_BIAS]] for _ in range(6)]
  overrides = head_overrides("head.regression_head.module_list.{}.weight",
                             "head.classification_head.module_list.{}.bias",
                             "head.classification_head.module_list.{}.weight", state, TV_FEATURE_RMS, bg)
  return seeded.spec_for(seeded.shapes_of(state.items()), weight_gain=math.sqrt(2.0), overrides=overrides,
                         l2norm_names=("backbone.scale_weight",))


def tv_images():
  pil = [pil_rgb(COCO_DIR / f) for f in TV_IMAGES]
  return pil, [TF.to_tensor(p) for p in pil]


def make_torchvision_ssd(jpeg_check):
  model = tv_model()
  write_torchvision_detector("torchvision_ssd300_vgg16", model, tv_spec(model), TV_SEED,
                             "ssd300_vgg16(weights=None, weights_backbone=None, num_classes=91)",
                             SSD300_VGG16_Weights.COCO_V1.meta["categories"], TV_FEATURE_RMS, jpeg_check,
                             spec_rules="seeded.spec_for(shapes, weight_gain=sqrt(2), l2norm_names=['backbone.scale_weight'], "
                                        "overrides=head): conv weights N(0, sqrt(2/fan_in)); biases N(0, 0.05); scale_weight "
                                        "N(20, 2); head convs as head_calibration")


def write_torchvision_detector(name, model, spec, seed, builder, categories, feature_rms, jpeg_check, spec_rules,
                               exact_input=False):
  """Writes <name>.npz/.json: a torchvision SSD (model, eval mode) with ``spec``'s seeded weights on TV_IMAGES.

  ``exact_input``: also the raw head outputs for the first image's centre S x S crop (``crop``, uint8), which
  the transform does not resize, so that a converted network sees exactly torchvision's input.
  """
  digest = load_seeded(model, spec, seed)
  size = model.transform.fixed_size[0]
  pil, images = tv_images()
  with torch.no_grad():
    detections = model(images)
    # The same computation in steps, for the intermediate values.
    image_list, _ = model.transform(images)
    features = list(model.backbone(image_list.tensors).values())
    head = model.head(features)
    anchors = model.anchor_generator(image_list, features)
    again = model.transform.postprocess(
        model.postprocess_detections(head, anchors, image_list.image_sizes), image_list.image_sizes,
        [tuple(im.shape[-2:]) for im in images])
    grid = [list(f.shape[-2:]) for f in features]
    cxcywh = model.anchor_generator._grid_default_boxes(grid, [size, size])  # pylint: disable=protected-access
  for d, e in zip(detections, again):
    for k in ("boxes", "scores", "labels"):
      assert torch.equal(d[k], e[k]), k
  assert all(torch.equal(a, anchors[0]) for a in anchors)

  probs = torch.softmax(head["cls_logits"], dim=-1).numpy()
  max_fg = probs[..., 1:].max(-1)
  n_boxes = probs.shape[1]
  rows = row_subset(list(max_fg), n_boxes)
  tensors = image_list.tensors.numpy()
  rng = np.random.default_rng(INPUT_SAMPLES_SEED)
  sample_idx = np.sort(rng.choice(tensors[0].size, INPUT_SAMPLES, replace=False)).astype(np.int64)

  arrays = {
      "default_boxes_xyxy": anchors[0].numpy().astype(np.float32),
      "default_boxes_cxcywh": cxcywh.numpy().astype(np.float32),
      "input_sample_index": sample_idx,
      "input_samples": np.stack([t.reshape(-1)[sample_idx] for t in tensors]).astype(np.float32),
      "input_channel_mean": tensors.mean(axis=(2, 3)).astype(np.float32),
      "input_channel_std": tensors.std(axis=(2, 3)).astype(np.float32),
      "bbox_regression": head["bbox_regression"].numpy().astype(np.float32),
      "rows": rows,
      "cls_logits_rows": head["cls_logits"].numpy()[:, rows, :].astype(np.float32),
  }
  for i, det in enumerate(detections):
    arrays[f"det{i}_boxes"] = det["boxes"].numpy().astype(np.float32)
    arrays[f"det{i}_scores"] = det["scores"].numpy().astype(np.float32)
    arrays[f"det{i}_labels"] = det["labels"].numpy().astype(np.int64)
  feature_stats = []
  for level, f in enumerate(features):
    f0 = f[0].numpy()
    arrays[f"feature{level}_channel_mean"] = f0.mean(axis=(1, 2)).astype(np.float32)
    feature_stats.append({"shape_nchw": [1, *f0.shape], "mean": float(f0.mean()), "std": float(f0.std()),
                          "min": float(f0.min()), "max": float(f0.max()),
                          "rms": float(np.sqrt((f0.astype(np.float64) ** 2).mean()))})
  array_notes = {}
  if exact_input:
    image = pil[0]
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    crop = np.asarray(image.crop((left, top, left + size, top + size)))
    arrays["crop"] = crop
    for suffix, net, dtype in (("", model, torch.float32), ("_float64", copy.deepcopy(model).double(), torch.float64)):
      with torch.no_grad():
        crop_list, _ = net.transform([TF.to_tensor(crop).to(dtype)])
        crop_head = net.head(list(net.backbone(crop_list.tensors).values()))
      arrays[f"crop_bbox_regression{suffix}"] = crop_head["bbox_regression"].numpy()
      arrays[f"crop_cls_logits_rows{suffix}"] = crop_head["cls_logits"].numpy()[:, rows, :]
    array_notes = {"crop": f"uint8 [{size}, {size}, 3] centre crop (left {left}, top {top}) of image 0, PIL RGB",
                   "crop_bbox_regression": f"[1, {n_boxes}, 4] raw head output for the crop (no resize: same size)",
                   "crop_cls_logits_rows": "[1, R, 91] raw class logits for the crop at rows",
                   "crop_*_float64": "the same computed in float64 (model.double()): what float32 rounding "
                                     "alone costs torchvision, the yardstick for a converted float32 network"}
  write_npz(f"{name}.npz", arrays)

  stats = [score_stats(max_fg[i], model.score_thresh, arrays[f"det{i}_scores"], arrays[f"det{i}_labels"])
           for i in range(len(images))]
  coder = model.box_coder
  write_json(f"{name}.json", {
      "source": f"torchvision.models.detection.{builder}, eval mode, float32; model(list of images)",
      "seed": seed,
      **versions(),
      "images": [{"file": f, "size_wh": list(p.size), "pil_rgb_sha256": rgb_sha256(p)}
                 for f, p in zip(TV_IMAGES, pil)],
      "input": "PIL RGB, whole image -> to_tensor (float [0, 1] CHW); the model's GeneralizedRCNNTransform: "
               f"(x - mean) / std, then F.interpolate(size=({size}, {size}), mode='bilinear', align_corners=False) "
               "(no antialias), per image, normalization before the resize",
      "transform": {"image_mean": model.transform.image_mean, "image_std": model.transform.image_std,
                    "fixed_size": list(model.transform.fixed_size), "size_divisible": model.transform.size_divisible},
      "thresholds": {"score_thresh": model.score_thresh, "nms_thresh": model.nms_thresh,
                     "detections_per_img": model.detections_per_img, "topk_candidates": model.topk_candidates},
      "postprocess": "softmax over 91 columns; boxes decoded with BoxCoder(weights) from (dx, dy, dw, dh), dw/dh "
                     f"clamped at bbox_xform_clip, clipped to the {size}x{size} image; for each column 1..90: "
                     "score > score_thresh, top topk_candidates; batched_nms (per label) at nms_thresh; first "
                     f"detections_per_img by score; boxes scaled to the original image (x * W/{size}, y * H/{size})",
      "box_coder": {"weights": list(coder.weights), "bbox_xform_clip": coder.bbox_xform_clip},
      "anchor_generator": {"aspect_ratios": model.anchor_generator.aspect_ratios,
                           "scales": model.anchor_generator.scales, "steps": model.anchor_generator.steps,
                           "clip": model.anchor_generator.clip,
                           "order": f"per level {tuple(g[0] for g in grid)}: row y, column x, then the A pairs "
                                    "[s, s], [s', s'], then per ratio r [s*sqrt(r), s/sqrt(r)], [s/sqrt(r), s*sqrt(r)]"
                                    "; clip clamps only w, h to [0, 1] (cx, cy as computed: (j + 0.5) / (size / step), "
                                    "step = size / grid side when steps is None)",
                           "cx_cy_min_max": [float(cxcywh[:, :2].min()), float(cxcywh[:, :2].max())]},
      "head_layout": "conv output [B, A*K, H, W] -> view [B, A, K, H, W] -> permute [B, H, W, A, K] -> [B, HWA, K]; "
                     "channel c = a * K + k; box n = (y * W + x) * A + a within a level; levels concatenated",
      "categories": categories,
      "labels_note": "labels are column indices 0..90 of the categories list (COCO category ids; '__background__' "
                     "at 0, 'N/A' at unused ids); random weights also detect in 'N/A' columns",
      "jpeg_decode_check": jpeg_check,
      "arrays": {
          "default_boxes_xyxy": f"[{n_boxes}, 4] model.anchor_generator output for a {size}x{size} batch: pixel x1, y1, "
                                "x2, y2",
          "default_boxes_cxcywh": f"[{n_boxes}, 4] normalized cx, cy, w, h before the conversion (after the w, h clamp)",
          "input_sample_index": f"[S] flat indices into one CHW [3, {size}, {size}] transformed input",
          "input_samples": "[3 images, S] values of model.transform(images).tensors at those indices",
          "input_channel_mean": "[3 images, 3] per-channel mean of the transformed input",
          "input_channel_std": "[3 images, 3] per-channel std (population) of the transformed input",
          "bbox_regression": f"[3 images, {n_boxes}, 4] raw head output (dx, dy, dw, dh), torchvision box order",
          "rows": f"[R] box indices: {ROWS_RANDOM} drawn by default_rng({ROWS_SEED}).choice({n_boxes}, {ROWS_RANDOM}, "
                  f"replace=False) plus the {TOP_ROWS} highest max-foreground-score boxes of each image, sorted",
          "cls_logits_rows": "[3 images, R, 91] raw class logits at rows",
          **array_notes,
          "det{i}_boxes": "[D, 4] final detections of image i, original-image pixels x1, y1, x2, y2",
          "det{i}_scores": "[D] scores, descending", "det{i}_labels": "[D] int64 column index 1..90",
          "feature{l}_channel_mean": "[C] first image: per-channel mean of backbone feature map l",
      },
      "feature_stats_first_image": feature_stats,
      "score_stats": stats,
      "head_calibration": {"reg_std_target": REG_STD, "cls_std_target": CLS_STD, "feature_rms": feature_rms,
                           "background_bias_add": TV_BG_BIAS,
                           "rule": "head weight std = target / (feature_rms[level] * sqrt(fan_in)); class bias "
                                   "N(0, 0.05) plus background_bias_add on channels 0::91"},
      "state_dict_keys": key_summary(spec),
      "weights_sha256": digest,
      "spec_rules": spec_rules,
      "spec": spec,
  })
  for i, s in enumerate(stats):
    print(f"{name} image {i}: {s}")


# ---------------------------------------------------------------------------------------------- torchvision SSDLite


def ssdlite_model():
  return ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91).eval()


def ssdlite_head_rms(model, spec):
  """RMS of the input of each head's 1x1 conv (the depthwise conv-BN-ReLU6 output) per level, with the seeded
  weights of ``spec``: the head weights' std is set from it (their own values do not change it)."""
  load_seeded(model, spec, SSDLITE_SEED)
  _, images = tv_images()
  rms = []
  hooks = [block[0].register_forward_hook(lambda _m, _i, out: rms.append(float(out.pow(2).mean().sqrt())))
           for block in model.head.regression_head.module_list]
  with torch.no_grad():
    image_list, _ = model.transform(images)
    model.head(list(model.backbone(image_list.tensors).values()))
  for hook in hooks:
    hook.remove()
  return [float(f"{r:.3g}") for r in rms]


def ssdlite_spec(model, feature_rms):
  state = model.state_dict()
  bg = [[[0, None, 91, SSDLITE_BG_BIAS]] for _ in range(6)]
  overrides = head_overrides("head.regression_head.module_list.{}.1.weight",
                             "head.classification_head.module_list.{}.1.bias",
                             "head.classification_head.module_list.{}.1.weight", state, feature_rms, bg)
  return seeded.spec_for(seeded.shapes_of(state.items()), weight_gain=math.sqrt(2.0), overrides=overrides)


def make_torchvision_ssdlite():
  model = ssdlite_model()
  feature_rms = ssdlite_head_rms(model, ssdlite_spec(model, [1.0] * 6))
  write_torchvision_detector(
      "torchvision_ssdlite320_mobilenet_v3_large", model, ssdlite_spec(model, feature_rms), SSDLITE_SEED,
      "ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)",
      SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"], feature_rms, jpeg_check=None,
      spec_rules="seeded.spec_for(shapes, weight_gain=sqrt(2), overrides=head): conv weights N(0, sqrt(2/fan_in)) "
                 "(depthwise fan_in = k * k); BN weight U(0.5,1.5), bias N(0,0.1), running_mean N(0,0.2), "
                 "running_var U(0.5,1.5); squeeze-excite biases N(0, 0.05); the heads' 1x1 convs as "
                 "head_calibration, feature_rms measured at their inputs (ssdlite_head_rms)", exact_input=True)


def make_torchvision_mobilenet(crop, x, image_info):
  """mobilenet_v3_large(weights=None) with its full state dict seeded, on the ResNets' crop: SSDLite's taps."""
  model = torchvision.models.mobilenet_v3_large(weights=None).eval()
  spec = seeded.spec_for(seeded.shapes_of(model.state_dict().items()), weight_gain=math.sqrt(2.0))
  digest = load_seeded(model, spec, MOBILENET_SEED)
  taps = {}
  hooks = [model.features[13].block[0].register_forward_hook(lambda _m, _i, out: taps.__setitem__("c4", out)),
           model.features[16].register_forward_hook(lambda _m, _i, out: taps.__setitem__("c5", out))]
  with torch.no_grad():
    model(x)
  for hook in hooks:
    hook.remove()
  arrays = {"image": crop.astype(np.uint8),
            **{k: v.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32) for k, v in taps.items()}}
  stats = {k: {"shape": list(v.shape), "mean": float(v.mean()), "std": float(v.std()),
               "abs_max": float(np.abs(v).max())} for k, v in arrays.items() if k != "image"}
  write_npz("torchvision_mobilenet_v3_large.npz", arrays)
  write_json("torchvision_mobilenet_v3_large.json", {
      "source": "torchvision.models.mobilenet_v3_large(weights=None), eval mode, float32",
      "seed": MOBILENET_SEED,
      **versions(),
      "image": image_info,
      "preprocess": "PIL RGB centre crop (uint8) -> torchvision.transforms.functional.to_tensor (x / 255) -> "
                    f"normalize(mean={IMAGENET_MEAN}, std={IMAGENET_STD})",
      "arrays": {"image": "uint8 [160, 160, 3] the crop, RGB",
                 "c4": "float32 NHWC output of model.features[13].block[0] (block 13's expansion, SSDLite's first tap)",
                 "c5": "float32 NHWC output of model.features[16] (the last conv, SSDLite's second tap)"},
      "output_stats": stats,
      "state_dict_keys": key_summary(spec),
      "weights_sha256": digest,
      "spec_rules": "seeded.spec_for(shapes, weight_gain=sqrt(2)): conv/linear weights normal(0, sqrt(2/fan_in)); "
                    "BN weight U(0.5,1.5), bias N(0,0.1), running_mean N(0,0.2), running_var U(0.5,1.5), "
                    "num_batches_tracked 0; other biases N(0,0.05)",
      "spec": spec,
  })
  print(f"mobilenet_v3_large: c4 std {stats['c4']['std']:.3f}, c5 std {stats['c5']['std']:.3f}")


# ---------------------------------------------------------------------------------------------- NVIDIA SSD


def nv_spec(model):
  state = model.state_dict()
  # conf channel c = k * A + a (bbox_view's reshape): background (k = 0) is channels 0 .. A-1.
  bg = [[[0, a, 1, NV_BG_BIAS]] for a in nv.NUM_DEFAULTS]
  overrides = head_overrides("loc.{}.weight", "conf.{}.bias", "conf.{}.weight", state, NV_FEATURE_RMS, bg)
  return seeded.spec_for(seeded.shapes_of(state.items()), weight_gain=1.0, overrides=overrides)


def nv_inputs(directory=HERE):
  """Centre 300x300 crops saved as JPEG files, then read back as their val pipeline reads images."""
  infos, tensors = [], []
  for i, f in enumerate(NV_IMAGES):
    image = pil_rgb(COCO_DIR / f)
    w, h = image.size
    left, top = (w - 300) // 2, (h - 300) // 2
    box = (left, top, left + 300, top + 300)
    name = f"nvidia_input_{i}.jpg"
    image.crop(box).save(directory / name, format="JPEG", quality=90)
    saved = pil_rgb(directory / name)
    resized = TF.resize(saved, [300, 300])  # their trans_val: Resize((300, 300)), ToTensor, Normalize
    assert np.array_equal(np.asarray(resized), np.asarray(saved))
    tensors.append(TF.normalize(TF.to_tensor(resized), IMAGENET_MEAN, IMAGENET_STD))
    infos.append({"file": name, "source": f, "source_size_wh": [w, h], "crop_box_ltrb": list(box),
                  "jpeg_sha256": sha256_file(directory / name), "pil_rgb_sha256": rgb_sha256(saved)})
  return infos, torch.stack(tensors)


def nv_check_layout(model, feeds, locs, confs):
  """locs[:, k, off + a*H*W + y*W + x] == loc conv channel k*A + a at (y, x); same for confs."""
  off = 0
  for level, f in enumerate(feeds):
    a_num = nv.NUM_DEFAULTS[level]
    h, w = f.shape[-2:]
    loc_out = model.loc[level](f)
    conf_out = model.conf[level](f)
    for a in range(a_num):
      for k in range(4):
        got = locs[:, k, off + a * h * w: off + (a + 1) * h * w].reshape(-1, h, w)
        assert torch.equal(got, loc_out[:, k * a_num + a]), (level, a, k)
      for k in (0, 1, 80):
        got = confs[:, k, off + a * h * w: off + (a + 1) * h * w].reshape(-1, h, w)
        assert torch.equal(got, conf_out[:, k * a_num + a]), (level, a, k)
    off += a_num * h * w
  assert off == locs.shape[2] == 8732


def coco_label_map():
  data = json.loads((COCO_DIR / "annotations" / "instances_val2017.json").read_text())
  return [{"label": i + 1, "category_id": c["id"], "name": c["name"]} for i, c in enumerate(data["categories"])]


def make_nvidia_ssd(tv_cxcywh):
  model = nv.SSD300().eval()
  spec = nv_spec(model)
  digest = load_seeded(model, spec, NV_SEED)
  infos, x = nv_inputs()
  dboxes = nv.default_boxes_xywh()
  with torch.no_grad():
    locs, confs = model(x)
    feeds = model.features(x)
    again = model.heads(feeds)
    assert torch.equal(again[0], locs) and torch.equal(again[1], confs)
    nv_check_layout(model, feeds, locs, confs)
    detections = nv.decode_batch(locs.clone(), confs.clone(), torch.from_numpy(dboxes),
                                 criteria=nv.EVAL_CRITERIA, max_output=nv.EVAL_MAX_OUTPUT)
    probs = torch.softmax(confs, dim=1).numpy()
  max_fg = probs[:, 1:, :].max(axis=1)
  rows = row_subset(list(max_fg), dboxes.shape[0])

  # Their order (a, y, x) per level vs torchvision's (y, x, a); both list the same (w, h) pairs per level.
  order = []
  off = 0
  for size, a_num in zip(nv.FEAT_SIZE, nv.NUM_DEFAULTS):
    idx = np.arange(a_num * size * size).reshape(a_num, size, size).transpose(1, 2, 0).reshape(-1)
    order.append(off + idx)
    off += a_num * size * size
  order = np.concatenate(order)
  diff = np.abs(dboxes[order] - tv_cxcywh).max(axis=1)
  tv_diff = {"max_abs": float(diff.max()), "boxes_differing": int((diff > 1e-6).sum()),
             "why": "torchvision clamps only w, h; NVIDIA also clamps cx, cy to 1, which matters on the 10x10 "
                    "level (step 32): the last row and column have centres (9 + 0.5) / (300 / 32) = 1.0133"}

  arrays = {"default_boxes_xywh": dboxes, "default_boxes_ltrb": nv.default_boxes_ltrb(dboxes),
            "locs": locs.numpy().astype(np.float32), "rows": rows,
            "confs_rows": confs.numpy()[:, :, rows].astype(np.float32),
            "torchvision_order": order.astype(np.int64)}
  stats = []
  for i, (boxes, labels, scores) in enumerate(detections):
    arrays[f"det{i}_boxes_ltrb"] = boxes.numpy().astype(np.float32)
    arrays[f"det{i}_boxes_pixels"] = (boxes * 300.0).numpy().astype(np.float32)
    arrays[f"det{i}_scores"] = scores.numpy().astype(np.float32)
    arrays[f"det{i}_labels"] = labels.numpy().astype(np.int64)
    stats.append(score_stats(max_fg[i], nv.SCORE_THRESH, arrays[f"det{i}_scores"], arrays[f"det{i}_labels"]))
  feature_stats = [{"shape_nchw": [1, *f.shape[1:]], "mean": float(f[0].mean()), "std": float(f[0].std()),
                    "max": float(f[0].max()), "rms": float(f[0].pow(2).mean().sqrt())} for f in feeds]
  write_npz("nvidia_ssd300.npz", arrays)
  write_json("nvidia_ssd300.json", {
      "source": "tests/golden/nvidia_ssd300.py SSD300(): NVIDIA DeepLearningExamples PyTorch/Detection/SSD "
                "ssd/model.py SSD300(backbone=ResNet('resnet50')) rebuilt with their parameter names; eval mode",
      "seed": NV_SEED,
      **versions(),
      "checkpoint_format": "their files (nvidia_ssdpyt_amp_200703.pt, main.py's epoch_<n>.pt) are a dict: the "
                           "state dict under 'model' (also epoch, iteration, optimizer, scheduler, label_map); "
                           "keys may carry a DistributedDataParallel 'module.' prefix, which their hub loader strips",
      "images": infos,
      "input": "saved 300x300 JPEG -> PIL RGB -> Resize((300, 300)) (identity here) -> to_tensor -> "
               f"normalize(mean={IMAGENET_MEAN}, std={IMAGENET_STD})",
      "default_boxes": {"fig_size": nv.FIG_SIZE, "feat_size": nv.FEAT_SIZE, "steps": nv.STEPS, "scales": nv.SCALES,
                        "aspect_ratios": nv.ASPECT_RATIOS, "scale_xy": nv.SCALE_XY, "scale_wh": nv.SCALE_WH,
                        "order": "per level: the (w, h) pairs [s, s], [s', s'], then per ratio r [s*sqrt(r), "
                                 "s/sqrt(r)], [s/sqrt(r), s*sqrt(r)]; for each pair row i, column j; "
                                 "cx = (j + 0.5) / (300 / step); cx, cy, w, h all clamped to [0, 1]",
                        "compared_with_torchvision_cxcywh_after_reorder": tv_diff},
      "head_layout": "conv output [B, A*4, H, W] .reshape(B, 4, A*H*W) (bbox_view): coordinate k (x, y, w, h) in "
                     "channels k*A .. k*A+A-1, box n = a*H*W + y*W + x within a level (anchor-major); confs the "
                     "same with 81 rows (0 = background); levels concatenated on the last axis",
      "decode": {"function": "Encoder.decode_batch(ploc, plabel, criteria, max_output) as in ssd/evaluate.py",
                 "criteria": nv.EVAL_CRITERIA, "max_output": nv.EVAL_MAX_OUTPUT,
                 "score_threshold": nv.SCORE_THRESH, "per_class_topk": nv.PER_CLASS_TOPK,
                 "nms": "greedy per class: keep a box, drop the rest with IoU >= criteria (keep IoU < criteria)",
                 "boxes": "normalized ltrb, not clipped; evaluate.py scales x by image width, y by height",
                 "their_output_order": "ascending score (sort, last max_output); stored here descending"},
      "label_map": coco_label_map(),
      "jpeg_decode_check": None,  # filled below
      "arrays": {
          "default_boxes_xywh": "[8732, 4] their dboxes(order='xywh'): cx, cy, w, h, NVIDIA order",
          "default_boxes_ltrb": "[8732, 4] their dboxes(order='ltrb')",
          "torchvision_order": "[8732] index into NVIDIA order for each torchvision-ordered box: "
                               "nvidia[torchvision_order] lines up with torchvision's default_boxes_cxcywh",
          "locs": "[3 images, 4, 8732] raw loc output (x, y, w, h offsets), NVIDIA layout",
          "rows": f"[R] box indices: {ROWS_RANDOM} drawn by default_rng({ROWS_SEED}).choice(8732, {ROWS_RANDOM}, "
                  f"replace=False) plus the {TOP_ROWS} highest max-foreground-score boxes of each image, sorted",
          "confs_rows": "[3 images, 81, R] raw class logits at rows, NVIDIA layout",
          "det{i}_boxes_ltrb": "[D, 4] detections of image i, normalized l, t, r, b",
          "det{i}_boxes_pixels": "[D, 4] the same times 300 (the input is the 300x300 image)",
          "det{i}_scores": "[D] descending", "det{i}_labels": "[D] int64 label 1..80 (label_map)",
      },
      "feature_stats_first_image": feature_stats,
      "score_stats": stats,
      "head_calibration": {"reg_std_target": REG_STD, "cls_std_target": CLS_STD, "feature_rms": NV_FEATURE_RMS,
                           "background_bias_add": NV_BG_BIAS,
                           "rule": "head weight std = target / (feature_rms[level] * sqrt(fan_in)); conf bias "
                                   "N(0, 0.05) plus background_bias_add on channels 0 .. A-1"},
      "state_dict_keys": key_summary(spec),
      "weights_sha256": digest,
      "spec_rules": "seeded.spec_for(shapes, weight_gain=1.0, overrides=head): conv weights N(0, sqrt(1/fan_in)); "
                    "BN weight U(0.5,1.5), bias N(0,0.1), running_mean N(0,0.2), running_var U(0.5,1.5), "
                    "num_batches_tracked 0; head as head_calibration",
      "spec": spec,
  })
  for i, s in enumerate(stats):
    print(f"nvidia ssd300 image {i}: {s}")
  return [HERE / info["file"] for info in infos]


def add_jpeg_check(name, check):
  """Stores the check; also whether PIL gave the same pixels here as in the TensorFlow interpreter."""
  path = HERE / name
  data = json.loads(path.read_text())
  files = check.get("files", {})
  same = [files[pathlib.Path(im["file"]).name]["pil_rgb_sha256"] == im["pil_rgb_sha256"]
          for im in data["images"] if pathlib.Path(im["file"]).name in files]
  data["jpeg_decode_check"] = dict(check, pil_same_pixels_in_both_interpreters=bool(same) and all(same))
  write_json(name, data)


# ---------------------------------------------------------------------------------------------- calibration


def calibrate():
  """Feature RMS per level of the seeded backbones on the golden images (head weights do not matter)."""
  model = tv_model()
  load_seeded(model, tv_spec(model), TV_SEED)
  _, images = tv_images()
  with torch.no_grad():
    image_list, _ = model.transform(images)
    feats = list(model.backbone(image_list.tensors).values())
  print("torchvision feature rms", [round(float(f.pow(2).mean().sqrt()), 3) for f in feats])
  model = nv.SSD300().eval()
  load_seeded(model, nv_spec(model), NV_SEED)
  with tempfile.TemporaryDirectory() as tmp:
    _, x = nv_inputs(pathlib.Path(tmp))
  with torch.no_grad():
    feats = model.features(x)
  print("nvidia feature rms", [round(float(f.pow(2).mean().sqrt()), 3) for f in feats])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--calibrate", action="store_true", help="print feature RMS per level, write nothing")
  args = parser.parse_args()
  torch.set_num_threads(2)
  torch.manual_seed(0)
  if args.calibrate:
    calibrate()
    return
  crop, x, info = resnet_input()
  for depth in sorted(RESNET_SEEDS):
    make_resnet(depth, crop, x, info)
  make_torchvision_mobilenet(crop, x, info)
  make_torchvision_ssd(jpeg_check=None)
  make_torchvision_ssdlite()
  tv_cxcywh = np.load(HERE / "torchvision_ssd300_vgg16.npz")["default_boxes_cxcywh"]
  nv_files = make_nvidia_ssd(tv_cxcywh)
  check = tf_jpeg_check([COCO_DIR / f for f in TV_IMAGES] + nv_files)
  add_jpeg_check("torchvision_ssd300_vgg16.json", check)
  add_jpeg_check("nvidia_ssd300.json", check)
  add_jpeg_check("torchvision_ssdlite320_mobilenet_v3_large.json", check)
  print("jpeg decode check:", json.dumps(check))


if __name__ == "__main__":
  main()
