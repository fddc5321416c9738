"""main.py --mode=predict: image files -> detections.json and annotated PNGs.

detections.json: {"images": [{"file", "width", "height", "annotated", "detections": [{"bbox":
[x, y, w, h] pixels (COCO), "category_id", "name", "score"}]}], "failed": [{"file", "error"}],
"not_images": [files of a given folder skipped for their extension], "score_threshold"}. When
no image could be processed, detections.json is still written and predict raises ValueError
(main.py exits non-zero).
"""

import glob
import os
import sys

import numpy as np

from ssd_tf import files
from ssd_tf import visualize

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def find_images(patterns):
  """Files, folders and glob patterns -> (unique image paths, files of the folders skipped for their
  extension). A folder gives its files with an image extension (IMAGE_EXTENSIONS), sorted."""
  paths, not_images = [], []
  for pattern in patterns:
    if os.path.isdir(pattern):
      for name in sorted(os.listdir(pattern)):
        path = os.path.join(pattern, name)
        if name.lower().endswith(IMAGE_EXTENSIONS):
          paths.append(path)
        elif os.path.isfile(path):
          not_images.append(path)
    elif any(ch in pattern for ch in "*?["):
      paths += sorted(glob.glob(pattern)) or [pattern]  # no match: reported like a missing file
    else:
      paths.append(pattern)
  return list(dict.fromkeys(paths)), not_images


def _record(path, image, detections, output_path, label_map):
  """One image's entry of detections.json; draws its detections to output_path."""
  height, width = image.shape[:2]
  scale = np.array([width, height, width, height], np.float64)
  boxes = np.array([d.box for d in detections], np.float64).reshape(-1, 4) / scale  # xyxy, normalized
  visualize.save_png(output_path, visualize.draw_detections(
      image, boxes[:, [1, 0, 3, 2]], np.array([d.label for d in detections], int),
      np.array([d.score for d in detections]), label_map.names()))
  return dict(file=path, width=width, height=height, annotated=output_path, detections=[
      dict(bbox=[round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
           category_id=d.category_id, name=d.name, score=round(d.score, 4))
      for d in detections for x0, y0, x1, y1 in [d.box]])


def predict(detector, patterns, output_dir, score_threshold=0.3):
  """Detects objects in image files with an ssd_tf.api.Detector; writes to output_dir.

  An unreadable file is reported by name and the other images are still processed.
  Returns the list of per-image records of detections.json.
  """
  from ssd_tf import api  # pylint: disable=g-import-not-at-top  (TensorFlow)
  paths, not_images = find_images(patterns)
  for path in not_images:
    print(f"predict: skipping {path}: not an image extension ({', '.join(IMAGE_EXTENSIONS)})", file=sys.stderr)
  if not paths:
    raise FileNotFoundError(f"no images found in {', '.join(patterns)}")
  files.check_writable(output_dir)
  results, failures, used_stems = [], [], set()
  for path in paths:
    try:
      with open(path, "rb") as f:
        encoded = f.read()
      detections = detector.detect(encoded, min_score=score_threshold)  # refuses oversized images first
      image = api.decode_rgb(encoded)
    except (OSError, ValueError) as error:
      message = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
      print(f"predict: skipping {path}: {message}", file=sys.stderr)
      failures.append(dict(file=path, error=message))
      continue
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"{stem}.png" if stem not in used_stems else f"{stem}_{len(results)}.png"
    used_stems.add(stem)
    results.append(_record(path, image, detections, os.path.join(output_dir, name), detector.label_map))
  files.write_json(os.path.join(output_dir, "detections.json"),
                   dict(images=results, failed=failures, not_images=not_images,
                        score_threshold=score_threshold), indent=1)
  if not results:
    raise ValueError(f"predict: none of the {len(paths)} images could be read (listed in "
                     f"{os.path.join(output_dir, 'detections.json')})")
  print(f"predict: {len(results)} images, {sum(len(r['detections']) for r in results)} detections "
        f"(score >= {score_threshold}), {len(failures)} unreadable; written to {output_dir}", flush=True)
  return results
