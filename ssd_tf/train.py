"""The training loop: a custom distributed step over an SSD, checkpoints that resume, TensorBoard.

Why a custom loop and not ``model.fit``: Keras 3.15's fit fails under
MultiWorkerMirroredStrategy; ``strategy.run`` + ``optimizer.apply`` works under
every strategy. The MultiBox loss of each replica is already divided by the
number of positives of the *global* batch, so summing replica gradients (what
the optimizer does) gives the gradient of the global-batch loss; nothing else
divides by the replica count. Checkpoints, the best AP and summaries are kept by
ssd_tf.bookkeeping.
"""

import math
import random
import time

from absl import logging
import tensorflow as tf

from ssd_tf import bookkeeping
from ssd_tf import distribute
from ssd_tf import init_from
from ssd_tf import optim
from ssd_tf import progress
from ssd_tf import run_dir
from ssd_tf.data import pipeline
from ssd_tf.data import service
from ssd_tf.ssd import SSD

LOSS_KEYS = ("loss", "loc_loss", "cls_loss", "weight_decay")
# The global norm of each step's gradient (loss scale removed, before clipping) is logged beside the
# loss terms with one replica, or with train.grad_clip_norm set: only then is the summed gradient at hand.
GRAD_NORM = "grad_norm"


def use_jit_compile(train_config, num_replicas):
  """Whether the replica step is XLA-compiled: config.train.jit_compile with one replica only.

  Measured with two replicas (MirroredStrategy on 2 logical CPUs): the compiled step
  cannot reach the second replica's variables ("Trying to access resource ... located
  in device CPU:1 from device CPU:0"); the step also holds cross-replica all-reduces
  (loss normalizer, synchronized BatchNorm, gradients). Keras' own jit_compile="auto"
  is off under any strategy too. With more replicas the step runs without XLA and a
  warning says so (configs that ask for XLA still run on many GPUs).
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
  """Trains the SSD of a config in a run directory under a tf.distribute strategy."""

  def __init__(self, config, workdir, strategy, label_map=None):
    """label_map: the data's; given, the run's config.json and label_map.json are written with
    this process's first checkpoint (so a start or resume that fails before it changes neither)."""
    self.config = config
    self.strategy = strategy
    self.is_chief = distribute.is_chief(strategy)
    self.num_replicas = strategy.num_replicas_in_sync
    per_replica_batch_size(config.train.batch_size, self.num_replicas)
    self.jit_compile = use_jit_compile(config.train, self.num_replicas)
    self.logged = LOSS_KEYS + ((GRAD_NORM,) if self.num_replicas == 1 or config.train.grad_clip_norm > 0 else ())
    # The same initial weights on every run of a config: Keras draws each initializer's seed from
    # Python's `random`. (Not keras.utils.set_random_seed: a TF global seed of 0 breaks tf.data's
    # shuffle with a tensor seed, which the training pipeline uses.)
    random.seed(config.seed)
    with strategy.scope():
      self.ssd = SSD(config, backbone_weights=init_from.backbone_weights(config.model))
      self.optimizer = optim.make_optimizer(config.train)
      self.optimizer.build(self.ssd.network.trainable_variables)
    # Training steps run (= batches consumed). Not optimizer.iterations: under mixed_float16 the
    # LossScaleOptimizer skips the update (and its iteration) of a step with non-finite gradients.
    self.steps_run = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_run")
    run = run_dir.RunDir(workdir)
    self.books = bookkeeping.Bookkeeper(
        self.ssd.checkpoint(optimizer=self.optimizer, step=self.steps_run), run, strategy,
        keep=config.train.keep_checkpoints,
        on_first_save=(lambda: run.write(config, label_map)) if label_map is not None else None)
    if config.model.init_from:
      self._init_from(config.model.init_from)
    self.train_loop = self._make_train_loop()  # (distributed iterator, num_steps) -> steps, losses

  @property
  def step(self):
    """Training steps run so far (restored from checkpoints)."""
    return int(self.steps_run.numpy())

  def _init_from(self, source):
    """Fine-tuning: a fresh run takes the weights of ``source``; a resumed one its own checkpoint's."""
    own = self.books.latest_checkpoint
    if own:
      logging.info("model.init_from=%s ignored: the run resumes from its own checkpoint %s", source, own)
    else:
      init_from.apply(self.ssd, source)

  # --- the step -------------------------------------------------------------------------------

  def losses(self, outputs, targets):
    """MultiBox loss terms of the network ``outputs`` against ``targets``, plus weight decay.

    Returns dict(loss (total, weight decay included), loc_loss, cls_loss, weight_decay).
    """
    multibox = self.ssd.loss(outputs, targets)
    decay = optim.weight_decay_loss(self.ssd.network.trainable_variables, self.config.train.weight_decay,
                                    self.num_replicas)
    return {"loss": multibox["loss"] + decay, "loc_loss": multibox["loc_loss"],
            "cls_loss": multibox["cls_loss"], "weight_decay": decay}

  def gradients(self, batch, targets):
    """(loss terms, gradients of the total loss w.r.t. the trainable variables, loss-scaled)."""
    variables = self.ssd.network.trainable_variables
    with tf.GradientTape() as tape:
      losses = self.losses(self.ssd(batch["image"], training=True), targets)
      scaled = self.optimizer.scale_loss(losses["loss"])
    return losses, tape.gradient(scaled, variables)

  def apply_gradients(self, gradients):
    """Clips (config.train.grad_clip_norm) and applies one replica's gradients.

    Returns the global norm of the global-batch gradient before clipping (GRAD_NORM), or None when
    it is not logged (several replicas and no clipping).
    """
    norm = None
    if GRAD_NORM in self.logged:
      loss_scale = getattr(self.optimizer, "dynamic_scale", 1.0)
      gradients, norm = optim.clip_gradients(gradients, self.config.train.grad_clip_norm, loss_scale)
    self.optimizer.apply(gradients, self.ssd.network.trainable_variables)
    return norm

  def _replica_step(self, batch):
    targets = self.ssd.targets(batch["boxes"], batch["labels"], batch["is_crowd"])
    losses, gradients = self.gradients(batch, targets)
    norm = self.apply_gradients(gradients)
    if norm is not None:
      # Each replica holds the same global norm; the loop sums replicas, so each adds its share.
      losses[GRAD_NORM] = norm / self.num_replicas
    return losses

  def _make_train_loop(self):
    """tf.function (distributed iterator, num_steps int32) -> (steps run, the last step's loss
    terms, their sums over the steps run): the terms of self.logged.

    Runs up to num_steps training steps in one call, a loop in the graph (no host round trip
    between steps), and returns after the first step whose total loss is not finite. The loss is
    all-reduced, so every worker of a cluster stops at the same step.
    """
    replica_step = self._replica_step
    if self.jit_compile:
      replica_step = tf.function(replica_step, jit_compile=True)
    keys = self.logged

    @tf.function
    def train_loop(iterator, num_steps):
      losses = {k: tf.constant(0.0) for k in keys}
      sums = dict(losses)
      steps = tf.constant(0)
      for _ in tf.range(num_steps):
        per_replica = self.strategy.run(replica_step, args=(next(iterator),))
        self.steps_run.assign_add(1)
        steps += 1
        # Each replica's terms are already normalized for the global batch: their sum is the loss.
        losses = {k: tf.cast(self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None),
                             tf.float32) for k in keys}
        sums = {k: sums[k] + losses[k] for k in keys}
        if not tf.math.is_finite(losses["loss"]):
          break
      return steps, losses, sums

    return train_loop

  def train_step(self, iterator):
    """One training step: the summed loss terms (tensors) of the next batch of ``iterator``."""
    return self.train_loop(iterator, tf.constant(1))[1]

  def dataset_iterator(self, start_step=0):
    """The distributed training input: the in-process pipeline positioned after ``start_step``
    batches, or with config.data.service_address the batches of the tf.data service's data workers
    (ssd_tf.data.service: one job per run and ``start_step``, not positioned)."""
    cfg = self.config

    def dataset_fn(input_context):
      if cfg.data.service_address:
        return service.train_dataset(cfg, input_context, service.job_name(self.books.run.path, start_step))
      return pipeline.train_dataset(cfg, input_context, skip_batches=start_step)

    return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

  # --- the loop -------------------------------------------------------------------------------

  def fit(self, evaluate_fn=None):
    """Trains to config.train.steps from wherever the checkpoints left off.

    evaluate_fn(ssd, step) -> metrics dict with "AP" (and optionally "images": uint8
    [K,H,W,3] drawings) is called every eval.every_steps (0: only at the end) and at the end.
    Returns the last losses as floats. On a multi-worker task whose peer dies (or becomes
    unreachable) raises distribute.WorkerLostError, without writing a checkpoint.
    """
    cfg = self.config.train
    start = self.books.restore()
    if start >= cfg.steps:
      logging.info("Nothing to train: checkpoint step %d >= train.steps %d", start, cfg.steps)
      return {}
    self._log_setup(start)
    try:
      return self._train(start, evaluate_fn)
    except distribute.PEER_ERRORS as error:
      if distribute.strategy_kind(self.strategy) != "multi_worker":
        raise
      raise distribute.worker_lost(self.strategy, error, self.books.latest_checkpoint) from error

  def _train(self, start, evaluate_fn):
    """The steps after ``start`` (fit's loop); returns the last losses."""
    cfg = self.config.train
    iterator = self.dataset_iterator(start)
    eval_every = self.config.eval.every_steps if evaluate_fn else 0
    tick, tick_step = time.time(), start
    losses = {}  # the last step's terms
    interval, interval_steps = {}, 0  # the sums of the terms over the steps since the last log
    step = start
    while step < cfg.steps:
      first = step + 1
      ran, losses, sums = self.train_loop(iterator, tf.constant(self._loop_end(step, eval_every) - step))
      step += int(ran)
      losses = {k: float(v) for k, v in losses.items()}
      interval = {k: interval.get(k, 0.0) + float(v) for k, v in sums.items()}
      interval_steps += int(ran)
      if not math.isfinite(losses["loss"]):
        raise FloatingPointError(
            f"loss is {losses['loss']} at step {step} (loc {losses['loc_loss']}, cls "
            f"{losses['cls_loss']}; steps {first}-{step} ran in one loop); training stopped, no "
            f"checkpoint written for this step. Last good checkpoint: {self.books.latest_checkpoint}")
      last = step == cfg.steps
      if step % cfg.log_every == 0 or last:
        elapsed = time.time() - tick
        images_per_second = (step - tick_step) * cfg.batch_size / max(elapsed, 1e-9)
        self._log_step(step, {k: v / interval_steps for k, v in interval.items()}, images_per_second)
        tick, tick_step, interval, interval_steps = time.time(), step, {}, 0
      if step % cfg.checkpoint_every == 0 or last:
        self.save(step)
      if (eval_every and step % eval_every == 0) or (evaluate_fn and last):
        self._evaluate(evaluate_fn, step)
        tick, tick_step = time.time(), step
    self.books.close()
    return losses

  def _loop_end(self, step, eval_every):
    """The step the training loop after ``step`` runs to: train.steps_per_loop steps later, or the
    first log, checkpoint or evaluation step (eval_every; 0: none) or the last step before that."""
    cfg = self.config.train
    ends = [step + cfg.steps_per_loop, cfg.steps]
    ends += [(step // every + 1) * every for every in (cfg.log_every, cfg.checkpoint_every, eval_every) if every]
    return min(ends)

  def save(self, step):
    """Checkpoints the run at ``step``, unless a weight is not finite (FloatingPointError)."""
    if not self._weights_finite():
      raise FloatingPointError(f"non-finite weights after step {step}; checkpoint not written. "
                               f"Last good checkpoint: {self.books.latest_checkpoint}")
    self.books.save(step)

  def _weights_finite(self):
    return all(bool(tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))))
               for v in self.ssd.network.weights if "float" in str(v.dtype))

  def _log_setup(self, start):
    cfg = self.config.train
    per_replica = per_replica_batch_size(cfg.batch_size, self.num_replicas)
    logging.info("Strategy %s: %d replica(s); global batch %d, per replica %d; peak learning rate "
                 "%.5g (base %.5g%s); precision %s; XLA %s; steps %d -> %d",
                 distribute.strategy_kind(self.strategy), self.num_replicas, cfg.batch_size, per_replica,
                 optim.peak_learning_rate(cfg), cfg.base_learning_rate,
                 f" x {cfg.batch_size}/{cfg.lr_reference_batch}" if cfg.scale_lr_with_batch else "",
                 cfg.mixed_precision or "float32", self.jit_compile, start, cfg.steps)

  def _log_step(self, step, means, images_per_second):
    """Logs and summarizes ``means``: the logged terms averaged over the steps since the last log."""
    cfg = self.config.train
    learning_rate = float(self.optimizer.learning_rate)
    eta = (cfg.steps - step) * cfg.batch_size / max(images_per_second, 1e-9)
    norm = f"  grad norm {means[GRAD_NORM]:.3g}" if GRAD_NORM in means else ""
    logging.info("step %d/%d  loss %.4f (loc %.4f, cls %.4f)%s  lr %.5g  %.2f img/s  %.2f steps/s  ETA %s",
                 step, cfg.steps, means["loss"], means["loc_loss"], means["cls_loss"], norm,
                 learning_rate, images_per_second, images_per_second / cfg.batch_size,
                 progress.format_duration(eta))

    def write():
      for key in LOSS_KEYS:
        tf.summary.scalar(f"loss/{key}", means[key])
      if GRAD_NORM in means:
        tf.summary.scalar("gradient_norm", means[GRAD_NORM])
      tf.summary.scalar("learning_rate", learning_rate)
      tf.summary.scalar("images_per_second", images_per_second)

    self.books.summarize(step, write)

  def _evaluate(self, evaluate_fn, step):
    """Evaluates on the chief, logs the metrics to TensorBoard, keeps the best checkpoint."""
    if not self.is_chief:
      return
    metrics = evaluate_fn(self.ssd, step)

    def write():
      for key, value in metrics.items():
        if isinstance(value, (int, float)) and key[:2] in ("AP", "AR"):
          tf.summary.scalar(f"eval/{key}", value)
      if metrics.get("images") is not None:
        tf.summary.image("eval/detections", metrics["images"], max_outputs=len(metrics["images"]))

    self.books.summarize(step, write)
    self.books.keep_if_best(metrics.get("AP", -1.0), step)
