"""A training run's records: checkpoints (newest and best by AP), the best AP, TensorBoard summaries.

Checkpoints hold the network, the optimizer and the number of steps run. The last
``keep`` are kept in ``checkpoints/``, the best by COCO AP in ``best/`` with
``best/best_ap.txt`` ("<AP> <step>"). TensorBoard summaries of a step are written once
a checkpoint holds that step (TensorFlow puts each summary in the event file at once,
flush or not), so after a crash the event files hold no step that the resumed run
writes again. Only the chief writes into the run directory; other workers of a
multi-worker run must save too (the save is collective) and do so in a scratch folder,
but every worker restores from the chief's ``checkpoints/`` (on a filesystem all workers
share), so a restarted cluster resumes at one step whatever each scratch folder holds. The paths
are ssd_tf/run_dir.py's.
"""

import contextlib
import os
import shutil

from absl import logging
import tensorflow as tf

from ssd_tf import distribute
from ssd_tf import files
from ssd_tf import run_dir


def _read_best_ap(path):
  """The AP of the best checkpoint so far (-1 when there is none), from best_ap.txt at ``path``."""
  if not os.path.exists(path):
    return -1.0
  with open(path) as f:
    return float(f.read().split()[0])


class Bookkeeper:
  """Saves, restores and keeps the best checkpoint of one run; defers summaries to checkpoints."""

  def __init__(self, checkpoint, run, strategy, keep, on_first_save=None):
    """checkpoint: tf.train.Checkpoint whose ``step`` is the int64 variable of steps run; run: the
    RunDir; on_first_save(): called on the chief before this process's first checkpoint."""
    self.checkpoint = checkpoint
    self.run = run
    self.strategy = strategy
    self.is_chief = distribute.is_chief(strategy)
    # The chief writes into the run; other workers into their own scratch folders.
    own = run if self.is_chief else run_dir.RunDir(run.scratch(distribute.task_name(strategy)))
    self.latest = tf.train.CheckpointManager(checkpoint, own.checkpoints, max_to_keep=keep)
    self.best = tf.train.CheckpointManager(checkpoint, own.best, max_to_keep=1)
    self._best_ap_path = own.best_ap
    self.best_ap = _read_best_ap(own.best_ap)
    self._writer = None  # made at the first summary written: a run that fails before adds no event file
    self._on_first_save = on_first_save if self.is_chief else None
    self._pending = []  # (step, function writing that step's summaries)
    self._saved_step = 0  # the step of the newest checkpoint

  @property
  def latest_checkpoint(self):
    """The chief's newest checkpoint (None before the first), as every worker sees it."""
    return self.run.latest_checkpoint()

  def restore(self):
    """Restores the chief's newest checkpoint, if any; returns the step it holds (0 if none).

    Every worker of a multi-worker run must find the same one: ValueError on each otherwise.
    """
    path = self.latest_checkpoint
    if path:
      self.checkpoint.restore(path).assert_existing_objects_matched()
      logging.info("Resumed from %s at step %d", path, int(self.checkpoint.step))
    self._saved_step = int(self.checkpoint.step)
    steps = distribute.per_worker(self.strategy, self._saved_step)
    if len(set(steps)) > 1:
      raise ValueError(
          f"the workers would resume at different steps ({', '.join(map(str, steps))}; "
          f"{distribute.task_name(self.strategy)} at {self._saved_step}): every worker restores from the "
          f"chief's checkpoints (here {self.run.checkpoints}), so all need the same "
          f"--workdir on a filesystem they share")
    return self._saved_step

  def save(self, step):
    """Saves the newest checkpoint and writes the summaries it now covers; returns its path."""
    if self._on_first_save:
      self._on_first_save()
      self._on_first_save = None
    path = self.latest.save(checkpoint_number=step)
    self._saved_step = step
    self._write_summaries()
    logging.info("Saved checkpoint %s", path)
    return path

  def keep_if_best(self, ap, step):
    """Saves to best/ (and records the AP) when ``ap`` beats every earlier evaluation (chief only)."""
    if ap <= self.best_ap:
      return
    self.best_ap = ap
    self.best.save(checkpoint_number=step)
    files.write_atomic(self._best_ap_path, f"{ap} {step}\n")
    logging.info("New best AP %.4f at step %d, kept in %s", ap, step, self.best.directory)

  def summarize(self, step, write):
    """Runs write() (tf.summary calls) at ``step`` once a checkpoint holds that step."""
    self._pending.append((step, write))
    self._write_summaries()

  def _write_summaries(self):
    ready = [(step, write) for step, write in self._pending if step <= self._saved_step]
    self._pending = self._pending[len(ready):]
    if not ready:
      return
    if self._writer is None:
      self._writer = (tf.summary.create_file_writer(self.run.train) if self.is_chief
                      else tf.summary.create_noop_writer())
    for step, write in ready:
      with self._writer.as_default(step=step):
        write()
    self._writer.flush()

  def close(self):
    """Removes this worker's scratch dir, and workdir/tmp once no worker uses it."""
    if not self.is_chief:
      shutil.rmtree(self.run.scratch(distribute.task_name(self.strategy)), ignore_errors=True)
      with contextlib.suppress(OSError):
        os.rmdir(self.run.tmp)
