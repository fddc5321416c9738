"""ssd_tf: SSD (Single Shot MultiBox Detector) in TensorFlow 2 / Keras 3.

Conventions held everywhere in the package (see README "Conventions"):

* Boxes are ``[ymin, xmin, ymax, xmax]`` float32, normalized to [0, 1] of the
  network input. COCO ``[x, y, w, h]`` pixel boxes exist only where annotations
  are read and where detections are written.
* Labels: 0 is background, 1..C are the foreground classes in contiguous order;
  ``label_map.json`` maps them to dataset category ids. Padded ground-truth rows
  carry label -1.
* Model inputs are RGB images in [0, 255] (any float dtype); each backbone's
  pretraining normalization is the first layer of the model.

Importing this package does not import TensorFlow.
"""

__version__ = "0.1.0"
