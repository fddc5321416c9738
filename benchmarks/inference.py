r"""Inference speed of the exported SavedModel and of the in-process SSD.detect, printed as one JSON line.

Exports the SSD of --config (random weights, or --checkpoint) with ssd_tf.export to a
temporary SavedModel at --score_threshold, loads it, and times on real JPEGs (the first
images of $COCO_TINY_DIR/val2017, by name), at batch 1 and at --batch_size (the same
images every call, after --warmup untimed calls, --steps timed ones):

  saved_model   serving_default: JPEG bytes in, detections out (decode, resize, network,
                decoding, NMS), end to end.
  detector      the in-process SSD.detect (network + post-processing) as a
                tf.function on the decoded, resized images: what the peer's infer mode measures.
  preprocess    DetectionModule.decode_batch alone (decode + resize, serving_default's own).
  network       the model alone on the same images.
  postprocess   ssd_tf.postprocess.postprocess alone (box decoding, softmax, per-class NMS)
                on the network's outputs for those images.

Each row gives the median ms per call and images/s (images over total time, as the
peer counts); postprocess_share = postprocess / (preprocess + network + postprocess).
nms_candidates_per_image counts the (box, class) scores above the threshold, which is
what NMS sorts. NB: with random weights every softmax score is near 1/(C+1) > 0.01, so
nearly every candidate passes: a worst case, as for the peer.

TFLite rows (--tflite_threads > 0; ssd_tf.tflite_export): the SSD built in float32 is converted to
float32, float16 and int8 (calibrated on the first --calibration_images JPEGs of the split,
decoded and resized) .tflite models, each timed at batch 1 in tf.lite.Interpreter (XNNPACK,
--tflite_threads threads) on the same images, decoded and resized to uint8 beforehand:

  model         the whole .tflite (network, softmax, detection post-processing).
  network       the same conversion without the post-processing (network and softmax alone);
                model - network is the post-processing's share.

--peer_python runs torchvision's SSD of the same design ($PEER_DIR/torch_ssd_bench.py
--mode infer, on random tensors, its own transform + network + postprocess) right after.

  python benchmarks/inference.py --config=configs/ssd300_resnet18_coco.py \
      --peer_python=/tmp/peer/venv/bin/python
"""

import contextlib
import io
import json
import os
import pathlib
import sys
import tempfile

from absl import app
from absl import flags

import harness
import machine
import peer

sys.path.insert(0, str(harness.REPO))
from ssd_tf import cli  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = harness.define_model_flags(
    batch_size_help="The larger batch (batch 1 is always measured).",
    coco_dir_help="COCO 2017 layout with the val2017 JPEGs.",
    checkpoint_help="Checkpoint prefix to export (default: random weights).")
_TIMING = harness.define_timing_flags(
    warmup=(2, "Untimed calls first (the first one traces)."),
    steps=(10, "Timed calls per batch size and measurement."),
    peer_steps=(5, "Peer: timed calls per batch size."), peer_warmup=(2, "Peer: untimed calls first."))
_SCORE_THRESHOLD = flags.DEFINE_float("score_threshold", 0.01, "config.postprocess.score_threshold.")
_SPLIT = flags.DEFINE_string("split", "val2017", "Split whose JPEGs (and categories) are used.")
_TFLITE_THREADS = flags.DEFINE_integer("tflite_threads", 2, "TFLite rows: interpreter threads (0: no TFLite rows).")
_CALIBRATION = flags.DEFINE_integer("calibration_images", 50, "TFLite int8: JPEGs of the split it calibrates on.")
flags.adopt_module_key_flags(harness)  # --help lists the shared flags too


def read_jpegs(coco_dir, split, count):
  """The bytes of the first `count` images (by file name) of <coco_dir>/<split> (count 0: all)."""
  folder = pathlib.Path(coco_dir) / split
  if not folder.is_dir():
    raise FileNotFoundError(f"{folder} not found: point --coco_dir (or COCO_TINY_DIR) at a COCO 2017 layout")
  paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
  count = count or len(paths)
  if len(paths) < count:
    raise ValueError(f"{folder} has {len(paths)} JPEGs, --batch_size={count} needs that many")
  return [p.read_bytes() for p in paths[:count]]


def coco_label_map(config, coco_dir, split, path):
  """The label map of the split's categories, saved to path (the SavedModel's asset)."""
  from ssd_tf.data import coco  # pylint: disable=g-import-not-at-top
  label_map = coco.read_split(coco_dir, split).label_map
  if label_map.num_classes != config.model.num_classes:
    raise ValueError(f"config.model.num_classes={config.model.num_classes} but {coco_dir} {split} has "
                     f"{label_map.num_classes} categories")
  label_map.save(path)
  return label_map


def measure(ssd, label_map, label_map_path, export_dir, jpegs, warmup, steps):
  """{"batch<B>": figures} for B = 1 and len(jpegs) (see the module docstring)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ssd_tf import export  # pylint: disable=g-import-not-at-top

  with contextlib.redirect_stdout(io.StringIO()):  # the SavedModel writer's notes
    export.export_saved_model(ssd, label_map, label_map_path, export_dir)
  serving_default = tf.saved_model.load(export_dir).signatures["serving_default"]
  module = export.DetectionModule(ssd, label_map, label_map_path)
  detect = tf.function(ssd.detect)
  preprocess = tf.function(module.decode_batch)
  network = tf.function(lambda images: ssd(images, training=False))
  post = tf.function(ssd.postprocess)

  results = {}
  for batch_size in sorted({1, len(jpegs)}):
    encoded = tf.constant(jpegs[:batch_size])
    images = preprocess(encoded)
    outputs = network(images)
    detections = post(outputs)

    calls = {"saved_model": lambda: serving_default(images=encoded), "detector": lambda: detect(images),
             "preprocess": lambda: preprocess(encoded), "network": lambda: network(images),
             "postprocess": lambda: post(outputs)}
    row = {name: harness.timing(harness.time_calls(call, warmup, steps), batch_size)
           for name, call in calls.items()}
    parts_ms = sum(row[part]["ms_median"] for part in ("preprocess", "network", "postprocess"))
    scores = tf.nn.softmax(tf.cast(outputs["logits"], tf.float32), axis=-1)[..., 1:]
    row.update(
        postprocess_share=round(row["postprocess"]["ms_median"] / parts_ms, 3),
        nms_candidates_per_image=round(float(tf.reduce_sum(tf.cast(scores > ssd.config.postprocess.score_threshold,
                                                                   tf.float32))) / batch_size, 1),
        detections_per_image=round(float(tf.reduce_mean(tf.cast(detections["num_detections"], tf.float32))), 1))
    results[f"batch{batch_size}"] = row
  return results


def measure_tflite(ssd, jpegs, calibration_jpegs, threads, warmup, steps):
  """{quantization name: figures} of the TFLite models (module docstring), on jpegs[0] at batch 1."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ssd_tf import images  # pylint: disable=g-import-not-at-top
  from ssd_tf import tflite_export  # pylint: disable=g-import-not-at-top

  def pixels(encoded):
    return tflite_export.resize_image(images.decode(tf.constant(encoded)), ssd.image_size,
                                      ssd.config.model.resize_antialias)

  image = pixels(jpegs[0])
  calibration = [pixels(encoded)[0] for encoded in calibration_jpegs]
  results = {}
  for quantize, name in (("none", "float32"), ("float16", "float16"), ("int8", "int8")):
    row = {}
    for part, post_process in (("model", True), ("network", False)):
      with contextlib.redirect_stdout(io.StringIO()):
        content = tflite_export.convert(ssd, quantize, calibration, post_process=post_process)
      run = tf.lite.Interpreter(model_content=content, num_threads=threads).get_signature_runner()
      outputs = run(image=image)
      row[part] = harness.timing(harness.time_calls(lambda: run(image=image), warmup, steps), 1)  # pylint: disable=cell-var-from-loop
      if post_process:
        row["size_mb"] = round(len(content) / 2**20, 2)
        row["detections_per_image"] = int(np.asarray(outputs["num_detections"])[0])
    row["postprocess_ms"] = round(row["model"]["ms_median"] - row["network"]["ms_median"], 2)
    results[name] = row
  return results


def peer_ratios(ours, theirs, batch_size):
  """How many times faster than the peer: images/s at batch_size, and batch-1 latency (median ms)."""
  big, one = f"batch{batch_size}", "batch1"
  ratios = {}
  for name in ("saved_model", "detector"):
    ratios[f"{name}_{big}_images_per_s"] = round(ours[big][name]["images_per_s"] / theirs[big]["images_per_s"], 2)
    ratios[f"{name}_batch1_latency"] = round(theirs[one]["latency_ms_median"] / ours[one][name]["ms_median"], 2)
  ratios["peer_postprocess_share"] = {
      key: round(theirs[key]["postprocess_ms_mean"] / theirs[key]["latency_ms_mean"], 3) for key in (one, big)}
  return ratios


def main(argv):
  with cli.user_errors(_MODEL.traceback.value):
    config = harness.config_from_flags(_MODEL, argv)
    config.postprocess.score_threshold = _SCORE_THRESHOLD.value
    if _TIMING.peer_python.value:
      peer.ssd_model(config)  # no peer model for this config: say so before measuring
    jpegs = read_jpegs(_MODEL.coco_dir.value, _SPLIT.value, _MODEL.batch_size.value)
    with tempfile.TemporaryDirectory() as workdir:
      label_map_path = os.path.join(workdir, "label_map.json")
      label_map = coco_label_map(config, _MODEL.coco_dir.value, _SPLIT.value, label_map_path)
      ssd = harness.load_ssd(config, _MODEL.checkpoint.value)
      ours = measure(ssd, label_map, label_map_path, os.path.join(workdir, "saved_model"), jpegs,
                     _TIMING.warmup.value, _TIMING.steps.value)
      if _TFLITE_THREADS.value > 0:
        float32_ssd = ssd
        if _MODEL.precision.value != "float32":  # TFLite converts the float32 network
          float32_config = config.copy_and_resolve_references()
          float32_config.train.mixed_precision = ""
          float32_ssd = harness.load_ssd(float32_config, _MODEL.checkpoint.value)
        ours["tflite"] = dict(threads=_TFLITE_THREADS.value, calibration_images=_CALIBRATION.value, **measure_tflite(
            float32_ssd, jpegs, read_jpegs(_MODEL.coco_dir.value, _SPLIT.value, 0)[:_CALIBRATION.value],
            _TFLITE_THREADS.value, _TIMING.warmup.value, _TIMING.steps.value))
    report = dict(bench="ssd_tf_inference", **harness.model_facts(ssd), precision=_MODEL.precision.value,
                  checkpoint=_MODEL.checkpoint.value, score_threshold=_SCORE_THRESHOLD.value,
                  pre_nms_top_k=int(config.postprocess.pre_nms_top_k),
                  images=str(pathlib.Path(_MODEL.coco_dir.value) / _SPLIT.value),
                  batch_size=_MODEL.batch_size.value, warmup=_TIMING.warmup.value, steps=_TIMING.steps.value,
                  **ours, machine=machine.facts(xla=False))
    if _TIMING.peer_python.value:
      theirs = peer.run_ssd_bench(_TIMING.peer_python.value, config, "infer", _MODEL.batch_size.value,
                                  _TIMING.peer_steps.value, _TIMING.peer_warmup.value, _SCORE_THRESHOLD.value,
                                  harness.peer_precision(_TIMING, _MODEL))
      report["peer"] = theirs
      report["speedup_vs_peer"] = peer_ratios(ours, theirs, _MODEL.batch_size.value)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
