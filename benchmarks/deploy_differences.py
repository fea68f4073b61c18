"""How far each deployment path is from Keras: SavedModel (what TF Serving loads),
LiteRT and ONNX (tf2onnx + onnxruntime), for an ST-CNN and for transformers with
points at infinity (tests/test_deploy.py's model).

Run from the repository root on the TensorFlow backend:

    python benchmarks/deploy_differences.py

Prints the largest absolute difference from Keras' output, per model and path, and
whether any output is non-finite. docs/deploying.md has the figures.
"""

import os
import sys
import tempfile
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_stn  # noqa: E402
from tests.test_deploy import transformer_model  # noqa: E402


def st_cnn(seed=0):
    """The paper's ST-CNN on 42x42 digits, its weights moved off the identity."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((42, 42, 1)),
        keras_stn.SpatialTransformer("affine", output_size=(28, 28)),
        keras.layers.Conv2D(32, 9, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0, 0.02, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def as_list(outputs):
    return [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def savedmodel_outputs(model, images, directory):
    import tensorflow as tf

    path = os.path.join(directory, "savedmodel")
    model.export(path, verbose=False)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    result = serve(tf.constant(images))
    return [result[k].numpy() for k in sorted(result, key=_index)]


def litert_outputs(model, images, directory):
    import tensorflow as tf

    path = os.path.join(directory, "model.tflite")
    model.export(path, format="litert", verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = tf.lite.Interpreter(model_path=path).get_signature_runner()
    (name,) = runner.get_input_details()
    parts = []
    for i in range(len(images)):
        result = runner(**{name: images[i : i + 1]})
        parts.append([result[k] for k in sorted(result, key=_index)])
    return [np.concatenate(p) for p in zip(*parts)]


def onnx_outputs(model, images, directory):
    import onnxruntime

    path = os.path.join(directory, "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})


def _index(name):
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else 0


def main():
    rng = np.random.default_rng(0)
    models = {
        "ST-CNN (affine, 42x42 -> 28x28)": (st_cnn(), rng.uniform(size=(4, 42, 42, 1))),
        "transformers with points at infinity": (
            transformer_model(), rng.uniform(size=(3, 12, 12, 2)) + 0.5),
    }
    paths = {"SavedModel (TF Serving)": savedmodel_outputs, "LiteRT": litert_outputs,
             "ONNX (tf2onnx + onnxruntime)": onnx_outputs}
    print("| model | path | max abs difference | non-finite outputs |")
    print("|---|---|---|---|")
    for model_name, (model, images) in models.items():
        images = images.astype("float32")
        expected = as_list(model(images))
        for path_name, run in paths.items():
            with tempfile.TemporaryDirectory() as directory:
                got = run(model, images, directory)
            difference = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected))
            finite = all(np.isfinite(g).all() for g in got)
            print(f"| {model_name} | {path_name} | {difference:.1e} | "
                  f"{'none' if finite else 'yes'} |", flush=True)


if __name__ == "__main__":
    main()
