"""The training loop: a custom distributed step, checkpoints that resume, TensorBoard.

Why a custom loop and not ``model.fit``: Keras 3.15's fit fails under
MultiWorkerMirroredStrategy; ``strategy.run`` + ``optimizer.apply`` works under
every strategy. The MultiBox loss of each replica is already divided by the
number of positives of the *global* batch, so summing replica gradients (what
the optimizer does) gives the gradient of the global-batch loss; nothing else
divides by the replica count.

Checkpoints hold the model, the optimizer and the number of steps run, and are
written every ``checkpoint_every`` steps and at the end; the last
``keep_checkpoints`` are kept, plus the best by COCO AP under ``best/``.
TensorBoard summaries of a step are written once a checkpoint holds that step
(TensorFlow puts each summary in the event file at once, flush or not), so after
a crash the event files hold no step that the resumed run writes again.
"""

import contextlib
import math
import os
import random
import shutil
import time

from absl import logging
import keras
import tensorflow as tf

from ssd_tf import anchors as anchors_lib
from ssd_tf import distribute
from ssd_tf import losses as losses_lib
from ssd_tf import matching
from ssd_tf import model as model_lib
from ssd_tf import optim
from ssd_tf.data import pipeline

LOSS_KEYS = ("loss", "loc_loss", "cls_loss", "weight_decay")


def set_precision_policy(train_config):
  """Global Keras dtype policy from config.train.mixed_precision ('' = float32)."""
  policy = train_config.mixed_precision or "float32"
  if policy not in ("float32", "mixed_float16", "mixed_bfloat16"):
    raise ValueError(f"config.train.mixed_precision={policy!r}: choose '', 'mixed_float16' or "
                     "'mixed_bfloat16'")
  keras.mixed_precision.set_global_policy(policy)


def use_jit_compile(train_config, num_replicas):
  """Whether the replica step is XLA-compiled: config.train.jit_compile with one replica only.

  Measured with two replicas (MirroredStrategy on 2 logical CPUs): the compiled step
  cannot reach the second replica's variables ("Trying to access resource ... located
  in device CPU:1 from device CPU:0"); the step also holds cross-replica all-reduces
  (loss normalizer, synchronized BatchNorm, gradients). Keras' own jit_compile="auto"
  is off under any strategy too. With more replicas the step runs without XLA and a
  warning says so (configs that ask for XLA, like the quickstart, still run on many GPUs).
  """
  if train_config.jit_compile and num_replicas > 1:
    logging.warning("config.train.jit_compile=True ignored: XLA compiles the training step for one "
                    "replica only and this strategy has %d; training without XLA", num_replicas)
    return False
  return bool(train_config.jit_compile)


def per_replica_batch_size(global_batch, num_replicas):
  if global_batch % num_replicas:
    raise ValueError(f"config.train.batch_size={global_batch} is not divisible by the "
                     f"{num_replicas} replicas")
  return global_batch // num_replicas


class Trainer:
  """Owns the model, optimizer, checkpoints and summaries of one training run."""

  def __init__(self, config, workdir, strategy):
    self.config = config
    self.workdir = workdir
    self.strategy = strategy
    self.is_chief = distribute.is_chief(strategy)
    self.num_replicas = strategy.num_replicas_in_sync
    per_replica_batch_size(config.train.batch_size, self.num_replicas)
    self.jit_compile = use_jit_compile(config.train, self.num_replicas)
    set_precision_policy(config.train)
    # The same initial weights on every run of a config: Keras draws each initializer's seed from
    # Python's `random`. (Not keras.utils.set_random_seed: a TF global seed of 0 breaks tf.data's
    # shuffle with a tensor seed, which the training pipeline uses.)
    random.seed(config.seed)
    with strategy.scope():
      self.model = model_lib.build_ssd(config)
      self.optimizer = optim.make_optimizer(config.train)
      self.optimizer.build(self.model.trainable_variables)
    # Training steps run (= batches consumed). Not optimizer.iterations: under mixed_float16 the
    # LossScaleOptimizer skips the update (and its iteration) of a step with non-finite gradients.
    self.steps_run = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_run")
    self.anchors = tf.constant(anchors_lib.default_boxes(config.anchors, config.model.image_size))
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.steps_run)
    self._checkpoint_dir = self._writable_dir("checkpoints")
    self.manager = tf.train.CheckpointManager(self.checkpoint, self._checkpoint_dir,
                                              max_to_keep=config.train.keep_checkpoints)
    self._best_dir = self._writable_dir("best")
    self.best_manager = tf.train.CheckpointManager(self.checkpoint, self._best_dir, max_to_keep=1)
    self.best_ap = _read_best_ap(self._best_dir)
    self.writer = (tf.summary.create_file_writer(os.path.join(workdir, "train"))
                   if self.is_chief else tf.summary.create_noop_writer())
    self._pending_summaries = []  # (step, function writing that step's summaries)
    self._saved_step = 0  # the step of the newest checkpoint
    self.train_step = self._make_train_step()  # distributed iterator -> summed loss terms

  @property
  def step(self):
    """Training steps run so far (restored from checkpoints)."""
    return int(self.steps_run.numpy())

  def _writable_dir(self, name):
    """workdir/name on the chief; a per-task scratch dir on other workers (they must save too)."""
    if self.is_chief:
      return os.path.join(self.workdir, name)
    return os.path.join(self.workdir, "tmp", distribute.task_name(self.strategy), name)

  def restore(self):
    """Resumes from the newest checkpoint in workdir; returns the step reached (0 if none)."""
    latest = self.manager.latest_checkpoint
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      logging.info("Resumed from %s at step %d", latest, self.step)
    self._saved_step = self.step
    return self.step

  # --- the step -------------------------------------------------------------------------------

  def targets(self, batch):
    """Matching: (loc_targets [B, N, 4], cls_targets [B, N]) of a batch's ground truth."""
    cfg = self.config
    return matching.match(batch["boxes"], batch["labels"], batch["is_crowd"], self.anchors,
                          iou_threshold=cfg.matching.iou_threshold,
                          crowd_ioa_threshold=cfg.matching.crowd_ioa_threshold,
                          variances=tuple(cfg.box_coder.variances))

  def losses(self, outputs, targets):
    """MultiBox loss terms of the model ``outputs`` against ``targets``, plus the weight decay term.

    Returns dict(loss (total, weight decay included), loc_loss, cls_loss, weight_decay).
    """
    cfg = self.config
    losses = losses_lib.multibox_loss(outputs["loc"], outputs["logits"], *targets,
                                      neg_pos_ratio=cfg.loss.neg_pos_ratio, loc_weight=cfg.loss.loc_weight)
    decay = optim.weight_decay_loss(self.model.trainable_variables, cfg.train.weight_decay,
                                    self.num_replicas)
    return {"loss": losses["loss"] + decay, "loc_loss": losses["loc_loss"],
            "cls_loss": losses["cls_loss"], "weight_decay": decay}

  def gradients(self, batch, targets):
    """(loss terms, gradients of the total loss w.r.t. the trainable variables, loss-scaled)."""
    with tf.GradientTape() as tape:
      losses = self.losses(self.model(batch["image"], training=True), targets)
      scaled = self.optimizer.scale_loss(losses["loss"])
    return losses, tape.gradient(scaled, self.model.trainable_variables)

  def apply_gradients(self, gradients):
    """Clips (config.train.grad_clip_norm) and applies one replica's gradients."""
    if self.config.train.grad_clip_norm > 0:
      loss_scale = getattr(self.optimizer, "dynamic_scale", 1.0)
      gradients = optim.clip_gradients(gradients, self.config.train.grad_clip_norm, loss_scale)
    self.optimizer.apply(gradients, self.model.trainable_variables)

  def _replica_step(self, batch):
    losses, gradients = self.gradients(batch, self.targets(batch))
    self.apply_gradients(gradients)
    return losses

  def _make_train_step(self):
    replica_step = self._replica_step
    if self.jit_compile:
      replica_step = tf.function(replica_step, jit_compile=True)

    @tf.function
    def train_step(iterator):
      per_replica = self.strategy.run(replica_step, args=(next(iterator),))
      self.steps_run.assign_add(1)
      # Each replica's terms are already normalized for the global batch: their sum is the loss.
      return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
              for k, v in per_replica.items()}

    return train_step

  def dataset_iterator(self, start_step=0):
    """The distributed training input, positioned after ``start_step`` batches."""
    cfg = self.config

    def dataset_fn(input_context):
      return pipeline.train_dataset(cfg, input_context, skip_batches=start_step)

    return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

  # --- the loop -------------------------------------------------------------------------------

  def fit(self, evaluate_fn=None):
    """Trains to config.train.steps from wherever the checkpoints left off.

    evaluate_fn(model, step) -> metrics dict with "AP" (and optionally "images":
    uint8 [K,H,W,3] drawings) is called every eval.every_steps and at the end.
    Returns the last losses as floats.
    """
    cfg = self.config.train
    start = self.restore()
    if start >= cfg.steps:
      logging.info("Nothing to train: checkpoint step %d >= train.steps %d", start, cfg.steps)
      return {}
    self._log_setup(start)
    iterator = self.dataset_iterator(start)
    eval_every = self.config.eval.every_steps if evaluate_fn else 0
    tick, tick_step = time.time(), start
    losses = {}
    for step in range(start + 1, cfg.steps + 1):
      losses = {k: float(v) for k, v in self.train_step(iterator).items()}
      if not math.isfinite(losses["loss"]):
        raise FloatingPointError(
            f"loss is {losses['loss']} at step {step} (loc {losses['loc_loss']}, cls "
            f"{losses['cls_loss']}); training stopped, no checkpoint written for this step. "
            f"Last good checkpoint: {self.manager.latest_checkpoint}")
      last = step == cfg.steps
      if step % cfg.log_every == 0 or last:
        elapsed = time.time() - tick
        images_per_second = (step - tick_step) * cfg.batch_size / max(elapsed, 1e-9)
        self._log_step(step, losses, images_per_second)
        tick, tick_step = time.time(), step
      if step % cfg.checkpoint_every == 0 or last:
        self.save(step)
      if eval_every and (step % eval_every == 0 or last):
        self._evaluate_and_keep_best(evaluate_fn, step)
        tick, tick_step = time.time(), step
    self._cleanup_scratch()
    return losses

  def save(self, step):
    if not self._weights_finite():
      raise FloatingPointError(f"non-finite weights after step {step}; checkpoint not written. "
                               f"Last good checkpoint: {self.manager.latest_checkpoint}")
    path = self.manager.save(checkpoint_number=step)
    self._saved_step = step
    self._write_summaries()
    logging.info("Saved checkpoint %s", path)

  def _summarize(self, step, write):
    """Runs write() (tf.summary calls) at `step` once a checkpoint holds that step."""
    self._pending_summaries.append((step, write))
    self._write_summaries()

  def _write_summaries(self):
    ready = [(step, write) for step, write in self._pending_summaries if step <= self._saved_step]
    self._pending_summaries = self._pending_summaries[len(ready):]
    for step, write in ready:
      with self.writer.as_default(step=step):
        write()
    self.writer.flush()

  def _weights_finite(self):
    return all(bool(tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))))
               for v in self.model.weights if "float" in str(v.dtype))

  def _log_setup(self, start):
    cfg = self.config.train
    per_replica = per_replica_batch_size(cfg.batch_size, self.num_replicas)
    logging.info("Strategy %s: %d replica(s); global batch %d, per replica %d; peak learning rate "
                 "%.5g (base %.5g%s); precision %s; XLA %s; steps %d -> %d",
                 distribute.strategy_kind(self.strategy), self.num_replicas, cfg.batch_size, per_replica,
                 optim.peak_learning_rate(cfg), cfg.base_learning_rate,
                 f" x {cfg.batch_size}/{cfg.lr_reference_batch}" if cfg.scale_lr_with_batch else "",
                 cfg.mixed_precision or "float32", self.jit_compile, start, cfg.steps)

  def _log_step(self, step, losses, images_per_second):
    cfg = self.config.train
    learning_rate = float(self.optimizer.learning_rate)
    eta = (cfg.steps - step) * cfg.batch_size / max(images_per_second, 1e-9)
    logging.info("step %d/%d  loss %.4f (loc %.4f, cls %.4f)  lr %.5g  %.2f img/s  %.2f steps/s  ETA %s",
                 step, cfg.steps, losses["loss"], losses["loc_loss"], losses["cls_loss"],
                 learning_rate, images_per_second, images_per_second / cfg.batch_size,
                 _format_seconds(eta))

    def write():
      for key in LOSS_KEYS:
        tf.summary.scalar(f"loss/{key}", losses[key])
      tf.summary.scalar("learning_rate", learning_rate)
      tf.summary.scalar("images_per_second", images_per_second)

    self._summarize(step, write)

  def _evaluate_and_keep_best(self, evaluate_fn, step):
    metrics = evaluate_fn(self.model, step) if self.is_chief else {}
    if not self.is_chief:
      return

    def write():
      for key, value in metrics.items():
        if isinstance(value, (int, float)) and key[:2] in ("AP", "AR"):
          tf.summary.scalar(f"eval/{key}", value)
      if metrics.get("images") is not None:
        tf.summary.image("eval/detections", metrics["images"], max_outputs=len(metrics["images"]))

    self._summarize(step, write)
    ap = metrics.get("AP", -1.0)
    if ap > self.best_ap:
      self.best_ap = ap
      self.best_manager.save(checkpoint_number=step)
      _write_best_ap(self._best_dir, ap, step)
      logging.info("New best AP %.4f at step %d, kept in %s", ap, step, self._best_dir)

  def _cleanup_scratch(self):
    """Removes this worker's scratch dir, and workdir/tmp once no worker uses it."""
    if not self.is_chief:
      scratch_root = os.path.join(self.workdir, "tmp")
      shutil.rmtree(os.path.join(scratch_root, distribute.task_name(self.strategy)), ignore_errors=True)
      with contextlib.suppress(OSError):
        os.rmdir(scratch_root)


def _read_best_ap(best_dir):
  path = os.path.join(best_dir, "best_ap.txt")
  if not os.path.exists(path):
    return -1.0
  with open(path) as f:
    return float(f.read().split()[0])


def _write_best_ap(best_dir, ap, step):
  with open(os.path.join(best_dir, "best_ap.txt"), "w") as f:
    f.write(f"{ap} {step}\n")


def _format_seconds(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def latest_checkpoint(workdir):
  """Newest checkpoint path in workdir/checkpoints, or a FileNotFoundError naming workdir."""
  path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
  if not path:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}: train first "
                            "(--mode=train) or point --workdir at a training run")
  return path


def restore_model(config, workdir=None, checkpoint=None):
  """A model with weights from a checkpoint (the newest in workdir unless a path is given)."""
  set_precision_policy(config.train)
  model = model_lib.build_ssd(config)
  path = checkpoint or latest_checkpoint(workdir)
  if not tf.io.gfile.exists(f"{path}.index"):
    raise FileNotFoundError(f"checkpoint {path} not found: give a checkpoint prefix such as "
                            "<workdir>/checkpoints/ckpt-1000 (the part before .index)")
  tf.train.Checkpoint(model=model).restore(path).expect_partial()
  logging.info("Restored model weights from %s", path)
  return model, path

