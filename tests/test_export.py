"""SavedModel export: served by a process in which keras_stn cannot be imported, at
any batch size, without XLA."""

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


def test_exported_savedmodel_serves_without_keras_stn(tmp_path):
    keras.utils.set_random_seed(0)
    model = several_transformers()
    images = testing.random_images((7, 16, 16, 1))
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)  # training may use XLA
    model.fit(images, [np.ones((7, 4)), np.zeros((7, 3))], epochs=1, verbose=0)
    rng = np.random.default_rng(1)
    for variable in model.weights:  # off the identity
        variable.assign(variable + rng.normal(0, 0.02, variable.shape).astype("float32"))
    model.export(str(tmp_path / "served"), verbose=False)
    np.savez(tmp_path / "expected.npz", images=images)
    expected = {b: testing.flat_outputs(model, images[:b]) for b in BATCHES}

    serving = testing.start_python(SERVE, *BATCHES, cwd=tmp_path)
    cli = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "show",
         "--dir", "served", "--tag_set", "serve", "--signature_def", "serving_default"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        report = testing.finish_python(serving)
        shown, errors = cli.communicate(timeout=240)
    finally:
        cli.kill()

    assert cli.returncode == 0, errors
    assert "shape: (-1, 16, 16, 1)" in shown, shown  # the batch is not fixed
    assert "shape: (-1, 4)" in shown and "shape: (-1, 3)" in shown, shown
    assert report["must_compile"] == [] and report["xla_ops"] == [], report
    for batch in BATCHES:
        served = report["outputs"][str(batch)]
        assert sorted(served) == ["output_0", "output_1"]
        for index, want in enumerate(expected[batch]):
            got = np.array(served[f"output_{index}"])
            assert got.shape == want.shape and want.shape[0] == batch
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
