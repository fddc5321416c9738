"""TF Serving's road into a SavedModel, for the export tests: session loader + REST request mapping.

  python tests/serving_client.py SAVED_MODEL_DIR REQUESTS.json RESULTS.pkl

Loads the SavedModel the way TF Serving's C++ loader does (tf.compat.v1.saved_model.loader.load:
import the MetaGraph into a Session, run its restore and init ops; no eager execution), then
maps each REST predict body of REQUESTS.json ({name: body}) onto the signature def the loader
returned, as TF Serving's REST API does (row format: "signature_name", default
"serving_default"; "instances" rows -> the batch dimension of the single input; {"b64": s} ->
the bytes of a DT_STRING value), and runs it. RESULTS.pkl holds {"signatures": {name:
serialized SignatureDef}, "assets": [AssetFileDef filename], "responses": {name: {"outputs":
{output name: ndarray}} or {"error": (error class name, message)}}}: a body that does not fit the
signature (ValueError) or an op error (e.g. InvalidArgumentError) is an error response.
"""

import base64
import json
import pickle
import sys

import numpy as np
import tensorflow as tf


def rest_feed(body, signature_def):
  """A row-format predict body -> {input tensor name: ndarray}; ValueError if it does not fit."""
  if len(signature_def.inputs) != 1:
    raise ValueError(f"rows of bare values need a single-input signature, got {list(signature_def.inputs)}")
  (key, info), = signature_def.inputs.items()
  dtype = tf.dtypes.as_dtype(info.dtype)
  rows = []
  for row in body["instances"]:
    if isinstance(row, dict):
      if set(row) != {"b64"} or dtype != tf.string:
        raise ValueError(f"input {key} is {dtype.name}: an instance object must be {{'b64': ...}} "
                         f"of a string input, got keys {sorted(row)}")
      row = base64.b64decode(row["b64"])
    rows.append(row)
  if dtype == tf.string:
    array = np.empty(len(rows), object)
    array[:] = rows
  else:
    values = np.array(rows)
    array = values.astype(dtype.as_numpy_dtype)
    if not np.array_equal(array, values):
      raise ValueError(f"input {key} is {dtype.name}: the instances do not fit it")
  if not tf.TensorShape(info.tensor_shape).is_compatible_with(array.shape):
    raise ValueError(f"input {key} has shape {tf.TensorShape(info.tensor_shape)}, the instances {array.shape}")
  return {info.name: array}


def main(saved_model_dir, requests_path, results_path):
  tf.compat.v1.disable_eager_execution()
  with open(requests_path) as f:
    requests = json.load(f)
  with tf.compat.v1.Session(graph=tf.Graph()) as session:
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], saved_model_dir)
    signatures = meta_graph.signature_def
    responses = {}
    for name, body in requests.items():
      signature = signatures[body.get("signature_name", "serving_default")]
      fetches = {key: info.name for key, info in signature.outputs.items()}
      try:
        responses[name] = {"outputs": session.run(fetches, rest_feed(body, signature))}
      except (tf.errors.OpError, ValueError) as e:  # an error response, as the server gives, not a crash
        responses[name] = {"error": (type(e).__name__, str(e))}
  with open(results_path, "wb") as f:
    pickle.dump({"signatures": {key: s.SerializeToString() for key, s in signatures.items()},
                 "assets": [asset.filename for asset in meta_graph.asset_file_def],
                 "responses": responses}, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
