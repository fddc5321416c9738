"""torchvision's SSDLite320-MobileNetV3-Large COCO detector (SSDLite320_MobileNet_V3_Large_Weights.COCO_V1), exactly.

Convert the published file (21.3 box AP on COCO val2017, 3.4 M parameters, 0.58 GFLOPs), then evaluate,
predict, export or fine-tune the run directory:

  python main.py --mode=convert --config=configs/ssdlite320_mobilenet_v3_large_torchvision.py \\
      --source=ssdlite320_mobilenet_v3_large_coco-a79551df.pth --workdir=runs/ssdlite320

Read from torchvision's detection/ssdlite.py: MobileNetV3-Large with the reduced tail (torchvision
builds it so when no ImageNet backbone is loaded, as for the COCO file), tapped at block 13's expansion
(20x20x672) and the last conv (10x10x480); four SSDLite extra levels (1x1 to half, depthwise 3x3
stride 2 padded 1 on every side, 1x1; conv-BN-ReLU6) to 5x5x512, 3x3x256, 2x2x256, 1x1x128;
depthwise-separable heads; BatchNorm epsilon 0.001, momentum 0.03 (Keras' 0.97); 6 default boxes per
cell (DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95): 3234 boxes), width and height
clamped to the image; input RGB to [-1, 1] (mean = std = 0.5), resized to 320x320 bilinear without
antialiasing; 91 class columns indexed by COCO category id (as torchvision's SSD300); post-processing
clips boxes before NMS and keeps each class's 300 best boxes above score 0.001 for NMS at IoU 0.55,
then the best 300. torchvision's recipe (references/detection/README.md): SGD 0.15 at batch 192 (24 on
each of 8 GPUs), 660 epochs, cosine, weight decay 4e-5, its "ssdlite" augmentation (no photometric
distortion, no expand).
"""

from ssd_tf import defaults


def get_config():
  config = defaults.base_config()
  config.name = "ssdlite320_mobilenet_v3_large_torchvision"
  m = config.model
  m.backbone = "mobilenet_v3_large"
  m.backbone_variant = "reduced_tail"
  m.backbone_weights = None        # the converted checkpoint sets every weight
  m.input_normalization = "tf"
  m.resize_antialias = False
  m.image_size = 320
  m.num_classes = 90
  m.ssdlite = True
  m.extra_layers = ((256, 512, 2, "symmetric"), (128, 256, 2, "symmetric"), (128, 256, 2, "symmetric"),
                    (64, 128, 2, "symmetric"))
  m.batchnorm_epsilon = 1e-3
  m.batchnorm_momentum = 0.97
  config.anchors = defaults.anchor_config(dict(feature_map_sizes=(20, 10, 5, 3, 2, 1),
                                               aspect_ratios=((2, 3),) * 6),
                                          clip="size", min_scale=0.2, max_scale=0.95)
  config.postprocess.update(score_threshold=0.001, iou_threshold=0.55, pre_nms_top_k=300,
                            max_detections_per_class=300, max_detections=300, clip_boxes="before_nms")
  config.train.update(base_learning_rate=0.15, lr_reference_batch=192, weight_decay=4e-5)
  return config
