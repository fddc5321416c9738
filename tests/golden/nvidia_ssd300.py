"""NVIDIA DeepLearningExamples' SSD300-ResNet50 (PyTorch/Detection/SSD), rebuilt for the golden files (torch only).

Written from reading their ``ssd/model.py`` and ``ssd/utils.py``; the parameter names and tensor layouts are
theirs, so ``state_dict()`` has the keys of their checkpoint:

  feature_extractor.feature_extractor.{0,1}.*        conv1, bn1 of torchvision's resnet50
  feature_extractor.feature_extractor.{4,5,6}.<block>.*   layer1, layer2, layer3 (children 2, 3 are ReLU, maxpool)
  additional_blocks.<i>.{0,1,3,4}.*                  conv1x1 (no bias), BN, conv3x3 (no bias), BN; i = 0..4
  loc.<i>.{weight,bias}, conf.<i>.{weight,bias}       3x3 heads, i = 0..5

The published checkpoint (``nvidia_ssdpyt_amp_200703.pt``, and every ``epoch_<n>.pt`` their main.py saves) is a
dict: the state dict is under ``"model"`` (beside ``epoch``, ``iteration``, ``optimizer``, ``scheduler``,
``label_map``). Their hub entry point strips a ``module.`` prefix (``module.1.`` too) when the keys carry one
(DistributedDataParallel).

Layout: ``bbox_view`` reshapes a head's [B, A*4, H, W] output to [B, 4, A*H*W] with a plain ``reshape``, so
coordinate ``k`` (x, y, w, h) lives in conv channels ``k*A .. k*A + A - 1`` and box ``n = a*H*W + y*W + x`` takes
channel ``k*A + a`` at (y, x): the boxes of a level are anchor-major (a, y, x). The class head is the same with
81 rows (row 0 background). Their default boxes (``DefaultBoxes``) loop (w, h) pair, then row i, then column j:
the same (a, y, x) order.

Decoding (``Encoder.scale_back_batch`` + ``decode_single``) as their evaluate.py calls it
(``decode_batch(ploc, plabel, 0.50, 200)``): offsets (x, y, w, h) scaled by 0.1 / 0.2 against the default boxes
(cx, cy, w, h, clamped to [0, 1]), softmax over 81, then for each class 1..80: score > 0.05, the 200 highest,
greedy NMS keeping boxes whose IoU with a kept box is < criteria; finally the max_output highest over all classes.
Boxes are normalized ltrb and are not clipped. Their decode_single returns the kept detections in ascending score
order; ``decode`` here returns them in descending order (same set).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import resnet50

FIG_SIZE = 300
FEAT_SIZE = [38, 19, 10, 5, 3, 1]
STEPS = [8, 16, 32, 64, 100, 300]
SCALES = [21, 45, 99, 153, 207, 261, 315]
ASPECT_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
SCALE_XY = 0.1
SCALE_WH = 0.2
NUM_DEFAULTS = [4, 6, 6, 6, 4, 4]
LABEL_NUM = 81
OUT_CHANNELS = [1024, 512, 512, 256, 256, 256]
MID_CHANNELS = [256, 256, 128, 128, 128]
SCORE_THRESH = 0.05
PER_CLASS_TOPK = 200
EVAL_CRITERIA = 0.5
EVAL_MAX_OUTPUT = 200


class ResNet50Trunk(nn.Module):
  """Their ``ResNet('resnet50')``: torchvision resnet50's first seven children, layer3's first block at stride 1."""

  def __init__(self):
    super().__init__()
    trunk = resnet50(weights=None)
    self.feature_extractor = nn.Sequential(*list(trunk.children())[:7])
    first = self.feature_extractor[-1][0]  # layer3, block 0
    first.conv1.stride = (1, 1)
    first.conv2.stride = (1, 1)
    first.downsample[0].stride = (1, 1)
    self.out_channels = list(OUT_CHANNELS)

  def forward(self, x):
    return self.feature_extractor(x)


def _extra_block(cin, mid, cout, strided):
  conv3 = (
    nn.Conv2d(mid, cout, kernel_size=3, stride=2, padding=1, bias=False)
    if strided
    else nn.Conv2d(mid, cout, kernel_size=3, bias=False)
  )
  return nn.Sequential(
    nn.Conv2d(cin, mid, kernel_size=1, bias=False),
    nn.BatchNorm2d(mid),
    nn.ReLU(inplace=True),
    conv3,
    nn.BatchNorm2d(cout),
    nn.ReLU(inplace=True),
  )


class SSD300(nn.Module):
  def __init__(self):
    super().__init__()
    self.feature_extractor = ResNet50Trunk()
    self.label_num = LABEL_NUM
    chans = self.feature_extractor.out_channels
    self.additional_blocks = nn.ModuleList(
      _extra_block(cin, mid, cout, strided=i < 3)
      for i, (cin, cout, mid) in enumerate(zip(chans[:-1], chans[1:], MID_CHANNELS))
    )
    self.num_defaults = list(NUM_DEFAULTS)
    self.loc = nn.ModuleList(nn.Conv2d(c, a * 4, kernel_size=3, padding=1) for a, c in zip(NUM_DEFAULTS, chans))
    self.conf = nn.ModuleList(
      nn.Conv2d(c, a * LABEL_NUM, kernel_size=3, padding=1) for a, c in zip(NUM_DEFAULTS, chans)
    )

  def features(self, x):
    x = self.feature_extractor(x)
    feeds = [x]
    for block in self.additional_blocks:
      x = block(x)
      feeds.append(x)
    return feeds

  def heads(self, feeds):
    n = feeds[0].shape[0]
    locs = torch.cat([head(f).reshape(n, 4, -1) for f, head in zip(feeds, self.loc)], dim=2)
    confs = torch.cat([head(f).reshape(n, LABEL_NUM, -1) for f, head in zip(feeds, self.conf)], dim=2)
    return locs.contiguous(), confs.contiguous()

  def forward(self, x):
    """locs [B, 4, 8732], confs [B, 81, 8732]."""
    return self.heads(self.features(x))


def default_boxes_xywh() -> np.ndarray:
  """dboxes300_coco in their order: [8732, 4] float32 (cx, cy, w, h), clamped to [0, 1] after the float32 cast."""
  fk = FIG_SIZE / np.array(STEPS)
  rows = []
  for idx, size in enumerate(FEAT_SIZE):
    s1 = SCALES[idx] / FIG_SIZE
    s2 = SCALES[idx + 1] / FIG_SIZE
    pairs = [(s1, s1), (math.sqrt(s1 * s2), math.sqrt(s1 * s2))]
    for ratio in ASPECT_RATIOS[idx]:
      r = math.sqrt(ratio)
      pairs += [(s1 * r, s1 / r), (s1 / r, s1 * r)]
    for w, h in pairs:
      for i, j in itertools.product(range(size), repeat=2):
        rows.append(((j + 0.5) / fk[idx], (i + 0.5) / fk[idx], w, h))
  return np.clip(np.array(rows, dtype=np.float32), 0.0, 1.0)


def default_boxes_ltrb(xywh: np.ndarray) -> np.ndarray:
  d = torch.from_numpy(xywh)
  return torch.cat([d[:, :2] - 0.5 * d[:, 2:], d[:, :2] + 0.5 * d[:, 2:]], dim=1).numpy()


def scale_back(locs: torch.Tensor, confs: torch.Tensor, dboxes_xywh: torch.Tensor):
  """[B, 4, N], [B, 81, N] -> boxes [B, N, 4] normalized ltrb, probabilities [B, N, 81]."""
  t = locs.permute(0, 2, 1)
  d = dboxes_xywh.unsqueeze(0)
  xy = (SCALE_XY * t[:, :, :2]) * d[:, :, 2:] + d[:, :, :2]
  wh = (SCALE_WH * t[:, :, 2:]).exp() * d[:, :, 2:]
  boxes = torch.cat([xy - 0.5 * wh, xy + 0.5 * wh], dim=2)
  return boxes, F.softmax(confs.permute(0, 2, 1), dim=-1)


def _iou_one(boxes: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
  lt = torch.maximum(boxes[:, :2], box[:2])
  rb = torch.minimum(boxes[:, 2:], box[2:])
  inter = (rb - lt).clamp(min=0).prod(dim=1)
  area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)
  area1 = (box[2:] - box[:2]).prod()
  return inter / (area + area1 - inter)


def decode_single(boxes, probs, criteria=EVAL_CRITERIA, max_output=EVAL_MAX_OUTPUT):
  """One image: boxes [N, 4] ltrb, probs [N, 81] -> (boxes [D, 4], labels [D], scores [D]), scores descending."""
  out_boxes, out_scores, out_labels = [], [], []
  for label in range(1, probs.shape[1]):
    score = probs[:, label]
    keep = score > SCORE_THRESH
    cand_boxes, cand_scores = boxes[keep], score[keep]
    if cand_scores.numel() == 0:
      continue
    order = torch.argsort(cand_scores, descending=True)[:PER_CLASS_TOPK]
    kept = []
    while order.numel() > 0:
      best = order[0]
      kept.append(int(best))
      iou = _iou_one(cand_boxes[order], cand_boxes[best])
      order = order[iou < criteria]
    out_boxes.append(cand_boxes[kept])
    out_scores.append(cand_scores[kept])
    out_labels += [label] * len(kept)
  if not out_boxes:
    return torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64), torch.zeros((0,))
  b = torch.cat(out_boxes)
  s = torch.cat(out_scores)
  lab = torch.tensor(out_labels, dtype=torch.int64)
  top = torch.argsort(s, descending=True)[:max_output]
  return b[top], lab[top], s[top]


def decode_batch(locs, confs, dboxes_xywh, criteria=EVAL_CRITERIA, max_output=EVAL_MAX_OUTPUT):
  boxes, probs = scale_back(locs, confs, dboxes_xywh)
  return [decode_single(b, p, criteria, max_output) for b, p in zip(boxes, probs)]
