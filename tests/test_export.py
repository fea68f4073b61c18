"""SavedModel export: served by a process in which keras_stn cannot be imported, at
any batch size, without XLA; images and volumes."""

import os
import subprocess
import sys

import keras
import numpy as np

import keras_stn
from tests import testing

BATCHES = (1, 3, 7)

SERVE = """
import json, sys
sys.modules["keras_stn"] = None  # keras_stn cannot be imported in this process
try:
    import keras_stn
    raise SystemExit("keras_stn was importable")
except ImportError:
    pass
import numpy as np, tensorflow as tf

served = tf.saved_model.load("served")
serve = served.signatures["serving_default"]
graph = serve.graph.as_graph_def()
functions = list(graph.library.function)
nodes = list(graph.node) + [n for f in functions for n in f.node_def]
must_compile = [n.name for n in nodes if n.attr["_XlaMustCompile"].b]
must_compile += [f.signature.name for f in functions if f.attr["_XlaMustCompile"].b]
with open("served/saved_model.pb", "rb") as file:
    must_compile += ["saved_model.pb"] if b"_XlaMustCompile" in file.read() else []
data = np.load("expected.npz")
outputs = {}
for batch in sys.argv[1:]:
    served_outputs = serve(tf.constant(data["images"][: int(batch)]))
    outputs[batch] = {k: v.numpy().tolist() for k, v in served_outputs.items()}
print(json.dumps({
    "outputs": outputs,
    "must_compile": must_compile,
    "xla_ops": sorted({n.op for n in nodes if n.op.startswith("Xla")}),
}))
"""


def several_transformers():
    """Transformers side by side: the families with the most distinct graphs, and a
    pair input whose theta is also an output."""
    inputs = keras.Input((16, 16, 1))
    small = keras.layers.AveragePooling2D(2)(inputs)
    sampled = [
        keras_stn.SpatialTransformer(name, output_size=(8, 8))(inputs)
        for name in ("affine", "projective", "tps")
    ]
    attended, theta = keras_stn.SpatialTransformer(
        "attention", output_size=(8, 8), return_transform=True
    )([inputs, small])
    # The training aids and options, two transformers side by side.
    sampled.append(
        keras_stn.SpatialTransformer(
            "affine", output_size=(8, 8), antialias=True, padding_mode="constant",
            fill_value=0.5, num_transformers=2, initial_transform="tiles",
            learning_rate_multiplier=0.1, identity_penalty=0.01,
        )(inputs)
    )
    merged = keras.layers.Concatenate()([*sampled, attended])
    logits = keras.layers.Dense(4)(keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(merged)))
    return keras.Model(inputs, [logits, theta])


def volume_transformers():
    """The volume path: a 3-D affine transformer and two attention3d transformers
    started on tiles, each projected to 2-D and read by a 2-D network."""
    inputs = keras.Input((8, 10, 12, 1))
    turned = keras_stn.SpatialTransformer("affine3d", output_size=(4, 6, 6))(inputs)
    tiled = keras_stn.SpatialTransformer(
        "attention3d", output_size=(4, 6, 6), num_transformers=2, initial_transform="tiles",
        antialias=True,
    )(inputs)
    projected = [keras_stn.DepthProjection("sum")(turned), keras_stn.DepthProjection("max")(tiled)]
    merged = keras.layers.Concatenate()(projected)
    logits = keras.layers.Dense(4)(keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(merged)))
    return keras.Model(inputs, logits)


def export_and_serve(model, images, directory):
    """Fits one XLA step, moves the weights off the identity, exports, and serves
    `images` at each of `BATCHES` in a process without keras_stn. Returns the
    served report, `saved_model_cli show`'s text and the Keras outputs per batch."""
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)  # training may use XLA
    targets = [np.ones((len(images), *o.shape[1:])) for o in model.outputs]
    model.fit(images, targets if len(targets) > 1 else targets[0], epochs=1, verbose=0)
    rng = np.random.default_rng(1)
    for variable in model.weights:  # off the identity
        variable.assign(variable + rng.normal(0, 0.02, variable.shape).astype("float32"))
    model.export(str(directory / "served"), verbose=False)
    np.savez(directory / "expected.npz", images=images)
    expected = {b: testing.flat_outputs(model, images[:b]) for b in BATCHES}

    serving = testing.start_python(SERVE, *BATCHES, cwd=directory)
    cli = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "show",
         "--dir", "served", "--tag_set", "serve", "--signature_def", "serving_default"],
        cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        report = testing.finish_python(serving)
        shown, errors = cli.communicate(timeout=240)
    finally:
        cli.kill()
    assert cli.returncode == 0, errors
    return report, shown, expected


def assert_served_as_keras(report, expected):
    assert report["must_compile"] == [] and report["xla_ops"] == [], report
    for batch in BATCHES:
        served = report["outputs"][str(batch)]
        assert sorted(served) == [f"output_{i}" for i in range(len(expected[batch]))]
        for index, want in enumerate(expected[batch]):
            got = np.array(served[f"output_{index}"])
            assert got.shape == want.shape and want.shape[0] == batch
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_exported_savedmodel_serves_without_keras_stn(tmp_path):
    keras.utils.set_random_seed(0)
    images = testing.random_images((7, 16, 16, 1))
    report, shown, expected = export_and_serve(several_transformers(), images, tmp_path)
    assert "shape: (-1, 16, 16, 1)" in shown, shown  # the batch is not fixed
    assert "shape: (-1, 4)" in shown and "shape: (-1, 3)" in shown, shown
    assert_served_as_keras(report, expected)


def test_exported_volume_model_serves_without_keras_stn(tmp_path):
    keras.utils.set_random_seed(0)
    volumes = testing.random_images((7, 8, 10, 12, 1))
    report, shown, expected = export_and_serve(volume_transformers(), volumes, tmp_path)
    assert "shape: (-1, 8, 10, 12, 1)" in shown, shown
    assert "shape: (-1, 4)" in shown, shown
    assert_served_as_keras(report, expected)
