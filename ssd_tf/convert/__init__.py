"""Converters of published PyTorch weights into this package's Keras models.

``pth``: reads a PyTorch checkpoint file (.pth / .pt) into NumPy arrays, and the
accounting that proves a converter used every entry. ``torchvision_resnet``:
torchvision's ImageNet ResNet-18/34/50/101 into the "torchvision" variant of
``ssd_tf.backbones.resnet``. Only reading a .pth file needs torch.
"""
