"""torchvision's SSD300-VGG16 COCO detector (SSD300_VGG16_Weights.COCO_V1), exactly.

Convert the published file, then evaluate, predict, export or fine-tune the run directory:

  python main.py --mode=convert --config=configs/ssd300_vgg16_torchvision.py \
      --source=ssd300_vgg16_coco-b556d3b4.pth --workdir=runs/ssd300_vgg16_torchvision

Where it differs from configs/ssd300_vgg16_coco.py (read from torchvision's detection code):
RGB minus the mean pixel (123, 117, 104) without scaling; resize to 300x300 bilinear without
antialiasing; extra levels are convs with biases and no BatchNorm, stride-2 ones padded 1 on
every side; default boxes clamp width and height (not corners) to the image; 91 class columns
indexed by COCO category id (90 labels, 10 unused, named "N/A"); post-processing clips boxes
before NMS and keeps each class's 400 best boxes above score 0.01 for NMS at IoU 0.45, then
the best 200. torchvision's recipe: SGD 0.002 at batch 32, momentum 0.9, weight decay 5e-4.
"""

from ssd_tf import defaults


def get_config():
  config = defaults.base_config()
  config.name = "ssd300_vgg16_torchvision"
  m = config.model
  m.backbone = "vgg16"
  m.backbone_weights = None        # the converted checkpoint sets every weight
  m.input_normalization = "rgb_mean"
  m.resize_antialias = False
  m.num_classes = 90
  m.extra_layers = ((256, 512, 2, "symmetric"), (128, 256, 2, "symmetric"), (128, 256, 1, "valid"),
                    (128, 256, 1, "valid"))
  m.extra_batchnorm = False
  config.anchors.clip = "size"
  config.postprocess.update(score_threshold=0.01, iou_threshold=0.45, pre_nms_top_k=400,
                            max_detections_per_class=400, max_detections=200, clip_boxes="before_nms")
  config.train.base_learning_rate = 2e-3
  return config
