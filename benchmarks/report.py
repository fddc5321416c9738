"""The README's performance tables (markdown) from the JSON lines the benchmarks printed.

  python benchmarks/report.py results/*.jsonl > performance.md

Reads every line that is a JSON object with a known "bench" (train_throughput.py,
inference.py, eval_speed.py, input_pipeline.py, data_service.py; other lines are skipped), and prints
a line stating the machine, then one table per benchmark kind, rows in input order.
"""

import argparse
import json
import sys

BENCHES = ("ssd_tf_train", "ssd_tf_inference", "ssd_tf_eval", "ssd_tf_input_pipeline", "ssd_tf_data_service")
BACKBONE_NAMES = {"resnet": "ResNet", "vgg": "VGG"}


def read_records(paths):
  """Benchmark JSON objects of the given JSON lines files, in order."""
  records = []
  for path in paths:
    with open(path) as f:
      for line in f:
        line = line.strip()
        if not line.startswith("{"):
          continue
        try:
          record = json.loads(line)
        except ValueError:
          continue
        if record.get("bench") in BENCHES:
          records.append(record)
  return records


def model_name(record):
  """'SSD300-ResNet18' (taps appended when not the backbone's default)."""
  backbone = record["backbone"]
  for prefix, name in BACKBONE_NAMES.items():
    if backbone.startswith(prefix):
      backbone = name + backbone[len(prefix):]
  taps = record.get("backbone_taps") or []
  return f"SSD{record['image_size']}-{backbone}" + (f" ({'+'.join(taps)})" if taps else "")


def _table(header, rows):
  lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def _weights(record):
  return "checkpoint" if record.get("checkpoint") else "random"


def _ratio(value):
  return f"{value:.2f}x" if value is not None else "-"


def _peer(record, key, digits=2):
  value = record.get("peer", {})
  for part in key.split("/"):
    value = value.get(part, {}) if isinstance(value, dict) else {}
  return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def _peer_precision(record):
  """'float32', 'autocast bfloat16' (peer_autocast.py), or '-' without a peer."""
  if "peer" not in record:
    return "-"
  return f"autocast {record['peer']['autocast']}" if record["peer"].get("autocast") else "float32"


def machine_line(records):
  """Where and when: CPU, core count, TensorFlow/Keras (and the peer's torch) versions, dates."""
  machines = sorted({(r["machine"]["cpu"], r["machine"]["nproc"], r["machine"].get("tensorflow", "?"),
                      r["machine"].get("keras", "?")) for r in records})
  dates = sorted({r["machine"]["date"][:10] for r in records})
  text = "; ".join(f"{cpu}, {nproc} logical CPUs, TensorFlow {tf}, Keras {keras}"
                   for cpu, nproc, tf, keras in machines)
  text = f"Measured on {text}, no GPU, on {dates[0]}" + (f" to {dates[-1]}" if len(dates) > 1 else "")
  torch = sorted({(r["peer"]["torch"], r["peer"]["torchvision"])
                  for r in records if "torch" in r.get("peer", {})})
  if torch:
    text += "; peer: torch " + ", ".join(f"{t} / torchvision {tv}" for t, tv in torch) + ", in the same sittings"
  return text + "."


def _gflops(record):
  """'181 (37% of 484)': achieved GFLOP/s, its fraction of the peak measured in its run; '181 (-)' without one
  (mixed_float16, or lines from before the peak was measured, whose fraction was of a fixed ceiling)."""
  text = f"{record['achieved_gflop_per_s']:.0f}"
  if record.get("peak_fraction") is None:
    return f"{text} (-)"
  return f"{text} ({100 * record['peak_fraction']:.0f}% of {record['peak_gflop_per_s']:.0f})"


def train_table(records):
  header = ("model", "batch", "precision", "XLA", "input", "img/s", "step ms", "GFLOP/s (of measured peak)",
            "peer precision", "peer img/s", "vs peer")
  rows = [(model_name(r), r["batch_size"], r["precision"], "on" if r["jit_compile"] else "off", r["input"],
           f"{r['images_per_s']:.2f}", f"{r['step_ms_median']:.0f}", _gflops(r), _peer_precision(r),
           _peer(r, "images_per_s"),
           _ratio(r.get("speedup_vs_peer")))
          for r in records]
  return _table(header, rows)


def inference_table(records):
  header = ("model", "weights", "score threshold", "precision", "batch B", "SavedModel batch-1 ms",
            "SavedModel img/s (B)", "SSD.detect batch-1 ms", "SSD.detect img/s (B)", "pre / net / post ms (B)",
            "post share (B)", "NMS candidates/img", "peer precision", "peer batch-1 ms", "peer img/s (B)", "vs peer img/s (B)",
            "vs peer batch-1 latency")
  rows = []
  for r in records:
    big, one = r[f"batch{r['batch_size']}"], r["batch1"]
    ratios = r.get("speedup_vs_peer", {})
    parts = " / ".join(f"{big[part]['ms_median']:.0f}" for part in ("preprocess", "network", "postprocess"))
    rows.append((model_name(r), _weights(r), f"{r['score_threshold']:g}", r["precision"], r["batch_size"],
                 f"{one['saved_model']['ms_median']:.0f}",
                 f"{big['saved_model']['images_per_s']:.2f}", f"{one['detector']['ms_median']:.0f}",
                 f"{big['detector']['images_per_s']:.2f}", parts, f"{100 * big['postprocess_share']:.0f}%",
                 f"{big['nms_candidates_per_image']:.0f}", _peer_precision(r),
                 _peer(r, "batch1/latency_ms_median", 0),
                 _peer(r, f"batch{r['batch_size']}/images_per_s"),
                 _ratio(ratios.get(f"saved_model_batch{r['batch_size']}_images_per_s")),
                 _ratio(ratios.get("saved_model_batch1_latency"))))
  return _table(header, rows)


def tflite_table(records):
  """Batch-1 latency of the .tflite models beside the SavedModel's, inference lines with TFLite rows."""
  header = ("model", "weights", "score threshold (pre-NMS top k)", "threads", "SavedModel batch-1 ms (precision)",
            "decode + resize ms", "TFLite float32 ms (net / post)", "TFLite float16 ms (net / post)",
            "TFLite int8 ms (net / post)", "int8 vs SavedModel latency")
  rows = []
  for r in records:
    one, lite = r["batch1"], r["tflite"]
    cells = [f"{lite[q]['model']['ms_median']:.1f} ({lite[q]['network']['ms_median']:.1f} / "
             f"{lite[q]['postprocess_ms']:.1f})" for q in ("float32", "float16", "int8")]
    ratio = lite["int8"]["model"]["ms_median"] / one["saved_model"]["ms_median"]
    top_k = f" (top {r['pre_nms_top_k']})" if r.get("pre_nms_top_k") else ""
    rows.append((model_name(r), _weights(r), f"{r['score_threshold']:g}{top_k}", lite["threads"],
                 f"{one['saved_model']['ms_median']:.1f} ({r['precision']})",
                 f"{one['preprocess']['ms_median']:.1f}", *cells, f"{ratio:.2f}"))
  return _table(header, rows)


def eval_table(records):
  header = ("model", "weights", "images", "batch", "eval mode img/s", "pycocotools share", "warm img/s",
            "pycocotools share (warm)")
  rows = []
  for r in records:
    mode, warm = r["eval_mode"], r.get("warm")
    rows.append((model_name(r), _weights(r), r["num_images"], r["batch_size"], f"{mode['images_per_s']:.2f}",
                 f"{100 * mode['pycocotools_share']:.0f}%", f"{warm['images_per_s']:.2f}" if warm else "-",
                 f"{100 * warm['pycocotools_share']:.0f}%" if warm else "-"))
  return _table(header, rows)


def pipeline_table(records):
  header = ("image size", "batch", "img/s (SSD augmentation)", "decode + resize img/s", "peer img/s", "vs peer")
  rows = [(r["image_size"], r["batch"], f"{r['images_per_s']:.1f}", f"{r['decode_resize_images_per_s']:.1f}",
           _peer(r, "images_per_s", 1), _ratio(r.get("speedup_vs_peer"))) for r in records]
  return _table(header, rows)


def service_table(records):
  header = ("image size", "batch", "in-process img/s", "1 data worker img/s", "2 data workers img/s",
            "2 workers vs in-process")
  rows = [(r["image_size"], r["batch"], *(f"{r[name]['images_per_s']:.1f}" for name in
                                          ("in_process", "service_1_worker", "service_2_workers")),
           _ratio(r["service_2_workers_vs_in_process"])) for r in records]
  return _table(header, rows)


TFLITE_TITLE = "TFLite, batch 1, uint8 image in, beside the SavedModel (benchmarks/inference.py)"
SECTIONS = (
    ("ssd_tf_train", "Training, steady-state images/s of the full step (benchmarks/train_throughput.py)",
     train_table),
    ("ssd_tf_inference", "Inference, JPEG bytes to detections (benchmarks/inference.py)", inference_table),
    ("ssd_tf_eval", "Evaluation on the COCO sample (benchmarks/eval_speed.py)", eval_table),
    ("ssd_tf_input_pipeline", "Training input pipeline (benchmarks/input_pipeline.py)", pipeline_table),
    ("ssd_tf_data_service", "Training input through tf.data service, local data worker processes "
     "(benchmarks/data_service.py)", service_table),
)


def render(records):
  """The markdown: the machine line, then a titled table per benchmark kind present."""
  if not records:
    raise ValueError("no benchmark JSON lines found")
  parts = [machine_line(records)]
  for bench, title, table in SECTIONS:
    rows = [r for r in records if r["bench"] == bench]
    if rows:
      parts.append(f"**{title}**\n\n{table(rows)}")
  lite = [r for r in records if r["bench"] == "ssd_tf_inference" and "tflite" in r]
  if lite:
    parts.append(f"**{TFLITE_TITLE}**\n\n{tflite_table(lite)}")
  return "\n\n".join(parts)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("files", nargs="+", help="JSON lines files written by the benchmarks")
  args = parser.parse_args()
  try:
    print(render(read_records(args.files)))
  except (OSError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  main()
