"""NVIDIA DeepLearningExamples' SSD300-ResNet50 COCO detector (nvidia_ssdpyt_amp_200703.pt), exactly.

  python main.py --mode=convert --config=configs/ssd300_resnet50_nvidia.py \
      --source=nvidia_ssdpyt_amp_200703.pt --workdir=runs/ssd300_resnet50_nvidia

Where it differs from configs/ssd300_resnet50_coco.py (read from NVIDIA's PyTorch/Detection/SSD):
torchvision's ResNet-50 ("v1.5": stride on the 3x3 conv, no conv biases, BatchNorm epsilon
1e-5) with ImageNet mean/std input normalization; stride-2 extra levels padded 1 on every side;
default boxes clamp centre, width and height to [0, 1]; post-processing keeps each class's 200
best boxes above score 0.05 for NMS at IoU 0.5, then the best 200, and does not clip boxes.
Training from ImageNet as NVIDIA does: --config.model.backbone_weights=resnet50-0676ba61.pth
(torchvision's IMAGENET1K_V1 file).
"""

from ssd_tf import defaults


def get_config():
  config = defaults.base_config()
  config.name = "ssd300_resnet50_nvidia"
  m = config.model
  m.backbone = "resnet50"
  m.backbone_variant = "torchvision"
  m.backbone_weights = None        # the converted checkpoint sets every weight
  m.extra_layers = tuple((mid, out, stride, "symmetric" if stride == 2 else padding)
                         for mid, out, stride, padding in defaults.SSD300_EXTRAS)
  config.anchors.clip = "centre_size"
  config.postprocess.update(score_threshold=0.05, iou_threshold=0.5, pre_nms_top_k=200,
                            max_detections_per_class=200, max_detections=200, clip_boxes="none")
  return config
