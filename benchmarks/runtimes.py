r"""One SSD through every runtime ssd_tf exports to, timed interleaved in one run; one JSON line out.

The SSD of --config (random weights, or --checkpoint) is built in float32 and, with the same weights, under
mixed_bfloat16, then exported to each runtime. Every row runs --threads threads (TensorFlow: the process's
cores) on real COCO photos (the first of $COCO_TINY_DIR/val2017 by name, decoded and resized to --height x
--width uint8, as a camera would send them), at batch 1 and --batch_size:

  runtime      precision      model (the whole detector)                  network (alone)
  tensorflow   float32, bf16  the SavedModel's serving_images             ssd.network in a tf.function (bf16: its
                                                                          kernels read in bf16, as the SavedModel's)
  onnxruntime  float32        model.onnx                                  the network as ONNX
  openvino     f32, bf16      model.xml compiled at the precision         the network as IR
                              (INFERENCE_PRECISION_HINT)
  tflite       float32, int8  model.tflite, batch 1 only (model_at_s)     the network + softmax .tflite

Parts: ``model`` takes the photos (the resize to S x S is inside), ``model_at_s`` the same detector given the
photos already resized to S x S (uint8; the TFLite model's only input), ``network`` float32 [B, S, S, 3]. After --warmup untimed calls of each row, the rows take turns
in a new random order each round, each time one untimed call then 4 timed ones, until --steps are timed, so
that a slower or faster stretch of the machine falls on all of them alike and no row pays for the runtime
before it (the threads ONNX Runtime, OpenVINO and XNNPACK leave spinning after a call slowed the next row's
first call up to 1.5x). ONNX Runtime's spinning is off unless --onnxruntime_spinning. Each
row: median ms per call, images/s, and speedup = TensorFlow float32's median of the same part and batch / its
own (when TensorFlow is among --runtimes). Random weights make NMS a worst case (nearly every box passes the score threshold); a --checkpoint of a
trained run gives its real load.

  python benchmarks/runtimes.py --config=configs/quickstart.py --checkpoint=runs/quickstart/checkpoints/ckpt-2000
  python benchmarks/runtimes.py --config=configs/ssd300_resnet18_coco.py
"""

import contextlib
import io
import json
import os
import random
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np

import harness
import machine

sys.path.insert(0, str(harness.REPO))
from ssd_tf import cli  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = harness.define_model_flags(
    batch_size_help="The larger batch (batch 1 is always measured).",
    coco_dir_help="COCO 2017 layout with the val2017 JPEGs.",
    checkpoint_help="Checkpoint prefix to export (default: random weights).")
# Timed calls of a row in a row; its untimed call before them pays for the runtime switch (the threads the
# previous runtime left spinning, cold caches).
BLOCK = 4
RUNTIMES = ("tensorflow", "onnxruntime", "openvino", "tflite")

_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls of each row first.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed calls of each row.")
_THREADS = flags.DEFINE_integer("threads", 2, "Threads of ONNX Runtime, OpenVINO and TFLite.")
_HEIGHT = flags.DEFINE_integer("height", 480, "Height the photos are sent at.")
_WIDTH = flags.DEFINE_integer("width", 640, "Width the photos are sent at.")
_RUNTIMES = flags.DEFINE_multi_enum("runtimes", list(RUNTIMES), RUNTIMES,
                                    "The runtimes to build and time (one alone: none of the others in the process).")
_SPINNING = flags.DEFINE_bool("onnxruntime_spinning", False, "Let ONNX Runtime's threads spin between calls "
                                "(its default; they then slow the rows that follow theirs).")
_CALIBRATION = flags.DEFINE_integer("calibration_images", 20, "TFLite int8: photos it calibrates on.")


def exported_rows(ssd32, ssd16, photos, workdir, threads, runtimes=RUNTIMES):
  """{(runtime, precision, part): fn(batch) -> outputs} of the module docstring's table for ``runtimes``; batch is
  {"photos": uint8 [B, H, W, 3], "resized": uint8 [B, S, S, 3], "images": float32 [B, S, S, 3]}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ssd_tf import export  # pylint: disable=g-import-not-at-top
  from ssd_tf import onnx_export  # pylint: disable=g-import-not-at-top
  from ssd_tf import onnx_model  # pylint: disable=g-import-not-at-top
  from ssd_tf import tflite_export  # pylint: disable=g-import-not-at-top
  from ssd_tf.label_map import LabelMap  # pylint: disable=g-import-not-at-top
  label_map = LabelMap([dict(label=i, category_id=i, name=f"class {i}") for i in range(1, ssd32.num_classes + 1)])
  label_map_path = os.path.join(workdir, "label_map.json")
  label_map.save(label_map_path)
  rows = {}
  for name, ssd in (("float32", ssd32), ("bf16", ssd16)) if "tensorflow" in runtimes else ():
    with contextlib.redirect_stdout(io.StringIO()):
      path = export.export_saved_model(ssd, label_map, label_map_path, os.path.join(workdir, f"saved_model_{name}"))
    serve = tf.saved_model.load(path).signatures["serving_images"]
    network = _network_function(ssd)
    rows["tensorflow", name, "model"] = lambda b, serve=serve: serve(images=tf.constant(b["photos"]))
    rows["tensorflow", name, "model_at_s"] = lambda b, serve=serve: serve(images=tf.constant(b["resized"]))
    rows["tensorflow", name, "network"] = lambda b, network=network: network(tf.constant(b["images"]))
  for part, network_only in (("model", False), ("network", True)) if {"onnxruntime", "openvino"} & set(runtimes) else ():
    model = onnx_export.to_onnx(ssd32, label_map, network_only=network_only)
    onnx_path = onnx_export.write(model, label_map, os.path.join(workdir, f"onnx_{part}"))
    openvino_path = onnx_export.write(onnx_export.to_openvino(model), label_map,
                                      os.path.join(workdir, f"openvino_{part}"))
    inputs = {"model": "photos", "model_at_s": "resized"} if part == "model" else {"network": "images"}
    sessions = [("onnxruntime", "float32", onnx_model.OnnxModel(onnx_path, threads, spinning=_SPINNING.value))]
    sessions += [("openvino", precision, onnx_model.OpenVinoModel(openvino_path, threads, precision))
                 for precision in onnx_model.PRECISIONS]
    for runtime, precision, session in (s for s in sessions if s[0] in runtimes):
      for name, key in inputs.items():
        rows[runtime, precision, name] = lambda b, session=session, key=key: session(b[key])
  calibration = [tflite_export.resize_image(p, ssd32.image_size, ssd32.config.model.resize_antialias)[0]
                 for p in photos[:_CALIBRATION.value]]
  for quantize, name in (("none", "float32"), ("int8", "int8")) if "tflite" in runtimes else ():
    for part, post_process in (("model", True), ("network", False)):
      with contextlib.redirect_stdout(io.StringIO()):
        content = tflite_export.convert(ssd32, quantize, calibration, post_process=post_process)
      run = tf.lite.Interpreter(model_content=content, num_threads=threads).get_signature_runner()
      rows["tflite", name, "model_at_s" if post_process else "network"] = lambda b, run=run: run(image=b["resized"])
  return rows


def _network_function(ssd):
  """ssd.network as a tf.function, reading its weights as the SavedModel does (export.compute_dtype_copies)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ssd_tf import export  # pylint: disable=g-import-not-at-top
  copies = export.compute_dtype_copies(ssd.network)

  @tf.function
  def network(images):
    with export.reading_copies(copies):
      return ssd(images, training=False)

  return network


def measure(rows, batches, warmup, steps):
  """[{runtime, precision, part, batch, ms_median, ms_mean, images_per_s, speedup}]: in each round every row,
  in a new random order, makes one untimed call and BLOCK timed ones (module docstring)."""
  results = []
  for size, batch in batches.items():
    calls = {key: fn for key, fn in rows.items() if size == 1 or key[0] != "tflite"}
    for fn in calls.values():
      for _ in range(warmup):
        fn(batch)
    times = {key: [] for key in calls}
    order = random.Random(size)
    for _ in range(-(-steps // BLOCK)):
      for key in order.sample(list(calls), len(calls)):
        times[key] += harness.time_calls(lambda key=key: calls[key](batch), 1, BLOCK)
    for (runtime, precision, part), seconds in times.items():
      results.append(dict(runtime=runtime, precision=precision, part=part, batch=size,
                          **harness.timing(seconds, size)))
  for row in results:
    base = [r for r in results if r["runtime"] == "tensorflow" and r["precision"] == "float32"
            and r["part"] == row["part"] and r["batch"] == row["batch"]]
    if base:
      row["speedup"] = round(base[0]["ms_median"] / row["ms_median"], 2)
  return results


def main(argv):
  with cli.user_errors(_MODEL.traceback.value):
    config = harness.config_from_flags(_MODEL, argv)
    config.train.mixed_precision = ""
    import keras  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    photos = harness.photos(_MODEL.coco_dir.value, max(_MODEL.batch_size.value, _CALIBRATION.value),
                            _HEIGHT.value, _WIDTH.value)
    ssd32 = harness.load_ssd(config, _MODEL.checkpoint.value)
    config16 = config.copy_and_resolve_references()
    config16.train.mixed_precision = "mixed_bfloat16"
    ssd16 = harness.load_ssd(config16)
    ssd16.network.set_weights(ssd32.network.get_weights())
    keras.mixed_precision.set_global_policy("float32")
    from ssd_tf import images  # pylint: disable=g-import-not-at-top
    batches = {}
    for size in sorted({1, _MODEL.batch_size.value}):
      chosen = photos[:size]
      resized = images.resize(tf.constant(chosen, tf.float32), ssd32.image_size, ssd32.config.model.resize_antialias)
      batches[size] = dict(photos=chosen, images=resized.numpy(),
                           resized=np.round(np.clip(resized.numpy(), 0, 255)).astype(np.uint8))
    with tempfile.TemporaryDirectory() as workdir:
      rows = exported_rows(ssd32, ssd16, photos, workdir, _THREADS.value, _RUNTIMES.value)
      results = measure(rows, batches, _WARMUP.value, _STEPS.value)
    print(json.dumps(dict(bench="ssd_tf_runtimes", **harness.model_facts(ssd32), checkpoint=_MODEL.checkpoint.value,
                          photo_size=[_HEIGHT.value, _WIDTH.value], threads=_THREADS.value, runtimes=_RUNTIMES.value,
                          warmup=_WARMUP.value, steps=_STEPS.value, rows=results,
                          machine=machine.facts(xla=False))), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
