r"""Evaluation speed: images/s of ssd_tf's eval mode on the COCO sample, printed as one JSON line.

Prepares --split of --coco_dir (default: val2017 of $COCO_TINY_DIR) into temporary TFRecords,
loads the SSD of --config (random weights, or --checkpoint), and runs the evaluation of
eval mode (ssd_tf.evaluate.Evaluator: eval pipeline, SSD.detect, COCO json conversion,
pycocotools COCOeval, metrics.json/detections.json; no drawings, as in eval mode) --rounds
times with the same Evaluator and model:

  eval_mode    what `main.py --mode=eval` spends after its imports: model load + Evaluator
               setup (eval dataset, ground truth) + the first round (which traces the predict
               function), as images/s.
  rounds       each round's wall time and images/s; predict_s (the prediction loop: input
               pipeline, network, NMS, COCO conversion), cocoeval_s (pycocotools), other_s
               (results files), pycocotools_share = cocoeval_s / wall_s.
  warm         the median of rounds 2.. (the function already traced): an evaluation
               during train_and_eval.

NB: a random model's every box scores ~1/(C+1) > 0.01, so each image has the full
config.postprocess.max_detections detections (as a trained model at 0.01 often has).

  python benchmarks/eval_speed.py --config=configs/ssd300_resnet18_coco.py
"""

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

import harness
import machine

sys.path.insert(0, str(harness.REPO))
from ssd_tf import cli  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

_MODEL = harness.define_model_flags(
    batch_size_help="config.eval.batch_size.", coco_dir_help="COCO 2017 layout to evaluate on.",
    checkpoint_help="Checkpoint prefix (default: random weights).")
_SPLIT = flags.DEFINE_string("split", "val2017", "The split evaluated.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Evaluations with the same Evaluator (the first one traces).")
flags.adopt_module_key_flags(harness)  # --help lists the shared flags too


def measure(config, checkpoint, coco_dir, split, rounds, workdir):
  """Eval mode's figures (see the module docstring)."""
  from ssd_tf.evaluate import Evaluator  # pylint: disable=g-import-not-at-top
  from ssd_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  if rounds < 1:
    raise ValueError(f"--rounds must be at least 1, got {rounds}")
  config.data.eval_split = split
  harness.prepare_coco(config, coco_dir, split, os.path.join(workdir, "data"))
  start = time.perf_counter()
  ssd = harness.load_ssd(config, checkpoint)
  evaluator = Evaluator(config, os.path.join(workdir, "run"), pipeline.label_map(config))
  setup_s = time.perf_counter() - start
  results = []
  for _ in range(rounds):
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the evaluator prints its report; stdout is the JSON line
      metrics = evaluator(ssd, drawings=False)  # as eval mode
    wall_s = time.perf_counter() - start
    results.append(dict(
        wall_s=round(wall_s, 3), images_per_s=round(metrics["num_images"] / wall_s, 3),
        predict_s=round(metrics["predict_seconds"], 3), cocoeval_s=round(metrics["cocoeval_seconds"], 3),
        other_s=round(wall_s - metrics["predict_seconds"] - metrics["cocoeval_seconds"], 3),
        pycocotools_share=round(metrics["cocoeval_seconds"] / wall_s, 3)))
  num_images = metrics["num_images"]
  eval_mode_s = setup_s + results[0]["wall_s"]
  report = dict(**harness.model_facts(ssd), num_images=num_images, detections_per_image=round(metrics["num_detections"] / num_images, 1),
                AP=round(metrics["AP"], 4), setup_s=round(setup_s, 3),
                eval_mode=dict(wall_s=round(eval_mode_s, 3), images_per_s=round(num_images / eval_mode_s, 3),
                               pycocotools_share=round(results[0]["cocoeval_s"] / eval_mode_s, 3)),
                rounds=results)
  if rounds > 1:
    report["warm"] = {key: round(statistics.median(r[key] for r in results[1:]), 3)
                      for key in ("wall_s", "images_per_s", "pycocotools_share")}
  return report


def main(argv):
  with cli.user_errors(_MODEL.traceback.value):
    config = harness.config_from_flags(_MODEL, argv)
    with tempfile.TemporaryDirectory() as workdir:
      ours = measure(config, _MODEL.checkpoint.value, _MODEL.coco_dir.value, _SPLIT.value, _ROUNDS.value,
                     workdir)
    report = dict(bench="ssd_tf_eval", precision=_MODEL.precision.value,
                  checkpoint=_MODEL.checkpoint.value, split=_SPLIT.value, batch_size=_MODEL.batch_size.value,
                  score_threshold=config.postprocess.score_threshold, **ours, machine=machine.facts(xla=False))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
