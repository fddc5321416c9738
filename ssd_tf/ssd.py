"""An SSD: the Keras network with its default boxes, box coding, matching, loss and detection.

Built from a config (ssd_tf/defaults.py). The default boxes are laid on the feature
maps the built network produces, so a config never has to state their sizes; when
it does (``anchors.feature_map_sizes``, as the released SSD300/SSD512 specs do next to
their pixel strides), they are checked against the network. Training, evaluation,
export, prediction and the benchmarks all go through this one object; the pure
functions it calls (anchors, matching, losses, postprocess) know nothing of configs.
"""

import keras
import tensorflow as tf

from ssd_tf import anchors
from ssd_tf import losses
from ssd_tf import matching
from ssd_tf import model
from ssd_tf import postprocess
from ssd_tf import run_dir


def set_precision_policy(train_config):
  """Global Keras dtype policy from config.train.mixed_precision ('' = float32)."""
  policy = train_config.mixed_precision or "float32"
  if policy not in ("float32", "mixed_float16", "mixed_bfloat16"):
    raise ValueError(f"config.train.mixed_precision={policy!r}: choose '', 'mixed_float16' or "
                     "'mixed_bfloat16'")
  keras.mixed_precision.set_global_policy(policy)


class SSD:
  """One SSD detector of a config.

  Attributes:
    config: the ml_collections config it was built from.
    network: keras.Model, images float [B, S, S, 3] RGB 0..255 -> {"loc": [B, N, 4] offsets
      (dy, dx, dh, dw), "logits": [B, N, 1 + C]}, float32 outputs under any precision policy.
    feature_map_sizes: [int] side of each level's feature map, finest first.
    default_boxes: float32 [N, 4] normalized [ymin, xmin, ymax, xmax], row n = output row n.
  """

  def __init__(self, config, backbone_weights=None):
    """Builds the network under config.train.mixed_precision (set as Keras' global policy).

    ``backbone_weights``: None (random, or a checkpoint restores every weight), "imagenet" or
    a weights file; training passes config.model.backbone_weights (None when model.init_from
    gives the weights: ssd_tf/init_from.py).
    """
    set_precision_policy(config.train)
    self.config = config
    self.network = model.build_network(config, backbone_weights)
    self.feature_map_sizes = model.feature_map_sizes(self.network)
    stated = list(config.anchors.feature_map_sizes)
    if stated and stated != self.feature_map_sizes:
      m = config.model
      raise ValueError(
          f"model.image_size={m.image_size} with backbone {m.backbone} and model.extra_layers gives "
          f"feature maps {self.feature_map_sizes}, but anchors.feature_map_sizes is {stated}: set "
          f"anchors.feature_map_sizes (and strides) to {self.feature_map_sizes}, leave them empty, "
          "or change image_size / extra_layers")
    self.default_boxes = tf.constant(anchors.default_boxes(config.anchors, self.image_size,
                                                           self.feature_map_sizes))
    self.variances = tuple(config.box_coder.variances)

  @classmethod
  def from_run(cls, path, checkpoint=None, config=None):
    """The SSD of run directory ``path`` with the weights of ``checkpoint``, by default the one
    the run means (best, else newest: RunDir.checkpoint). ``config``: built from this instead
    of the run's config.json, which it must agree with (RunDir.check_config)."""
    run = run_dir.RunDir(path)
    if config is None:
      config = run.load_config()
    else:
      run.check_config(config)
    ssd = cls(config)
    ssd.restore(checkpoint or run.checkpoint())
    return ssd

  @property
  def image_size(self):
    """S: the network takes S x S images."""
    return int(self.config.model.image_size)

  @property
  def boxes_per_cell(self):
    """Default boxes per feature-map cell, one int per level."""
    return anchors.boxes_per_cell(self.config.anchors)

  @property
  def num_classes(self):
    """C foreground classes (labels 1..C; 0 is background)."""
    return int(self.config.model.num_classes)

  def __call__(self, images, training=False):
    """float [B, S, S, 3] RGB 0..255 -> {"loc", "logits"} (see the class docstring)."""
    return self.network(images, training=training)

  def targets(self, boxes, labels, is_crowd):
    """Matching: ground truth [B, M, 4] yxyx / [B, M] labels (-1 padding) / [B, M] bool ->
    (loc_targets float32 [B, N, 4], cls_targets int32 [B, N]) as matching.match returns."""
    m = self.config.matching
    return matching.match(boxes, labels, is_crowd, self.default_boxes, iou_threshold=m.iou_threshold,
                          crowd_ioa_threshold=m.crowd_ioa_threshold, variances=self.variances)

  def loss(self, outputs, targets):
    """MultiBox loss of network ``outputs`` against ``targets``: losses.multibox_loss's dict."""
    c = self.config.loss
    return losses.multibox_loss(outputs["loc"], outputs["logits"], *targets,
                                neg_pos_ratio=c.neg_pos_ratio, loc_weight=c.loc_weight)

  def postprocess(self, outputs):
    """Network outputs -> detections, as postprocess.postprocess returns (labels 1..C)."""
    return postprocess.postprocess(outputs["loc"], outputs["logits"], self.default_boxes,
                                   variances=self.variances, **dict(self.config.postprocess))

  def detect(self, images):
    """float [B, S, S, 3] RGB 0..255 -> detections: boxes [B, K, 4] normalized yxyx, scores,
    labels 1..C, num_detections (postprocess.postprocess)."""
    return self.postprocess(self(images, training=False))

  def checkpoint(self, **extra):
    """tf.train.Checkpoint of the network (key "model", as every ssd_tf checkpoint has it)."""
    return tf.train.Checkpoint(model=self.network, **extra)

  def restore(self, path):
    """Sets every network weight from checkpoint ``path`` (optimizer state there is ignored).

    A checkpoint that does not fit this SSD (another architecture or class count) is one
    ValueError naming it and the first variable that does not fit.
    """
    if not tf.io.gfile.exists(f"{path}.index"):
      raise FileNotFoundError(f"checkpoint {path} not found: give a checkpoint prefix such as "
                              "<workdir>/checkpoints/ckpt-1000 (the part before .index)")
    try:
      self.checkpoint().restore(path).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, IndexError, UnicodeDecodeError) as error:  # what TF raises for damaged files
      raise ValueError(f"checkpoint {path} is not readable (truncated, corrupt or not a checkpoint): "
                       f"{str(getattr(error, 'message', error)).splitlines()[0]}") from None
    except (ValueError, AssertionError) as error:
      m = self.config.model
      raise ValueError(f"checkpoint {path} does not fit this SSD ({m.backbone}, {self.image_size} px, "
                       f"{self.num_classes} classes): {str(error).splitlines()[0]}") from None
    return path
