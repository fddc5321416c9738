"""Converted published weights, in small modules with one job each.

``pth`` reads a PyTorch checkpoint file (the one place torch is imported); ``weights`` accounts
for every entry and every Keras weight while copying; ``torchvision_resnet`` (ImageNet ResNets
-> backbone weights), ``torchvision_ssd`` and ``nvidia_ssd`` (COCO detectors -> whole SSDs) map
names and layouts; ``detectors`` recognizes a detector checkpoint and converts it.
"""
