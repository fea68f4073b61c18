""".keras round trips and SavedModel serving, each checked in a fresh process."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_stn

FAMILIES = sorted(keras_stn.transforms.FAMILIES)


def run_python(code, cwd, timeout=240):
    """Runs `code` in a fresh interpreter; returns its stdout, fails on non-zero exit."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def localisation_networks():
    inputs = keras.Input((16, 16, 1))
    functional = keras.Model(
        inputs, keras.layers.Dense(6, activation="tanh")(keras.layers.Flatten()(inputs))
    )
    return {
        "layer": keras.layers.Flatten(),
        "sequential": keras.Sequential(
            [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D()]
        ),
        "functional": functional,
    }


def classifier(transformer):
    return keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            transformer,
            keras.layers.Conv2D(3, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )


def perturb(model, seed):
    """Moves every weight off its initial value so that a lost weight shows."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(variable + rng.normal(0, 0.02, variable.shape).astype("float32"))


def test_keras_round_trip_in_a_fresh_process(tmp_path):
    images = np.random.default_rng(0).uniform(size=(3, 16, 16, 1)).astype("float32")
    models = {f"family_{name}": keras_stn.SpatialTransformer(name) for name in FAMILIES}
    models["tps_custom_points"] = keras_stn.SpatialTransformer(
        keras_stn.transforms.TPS(control_points=[[-1, -1], [1, -1], [0, 1], [0, 0]]),
        output_size=(12, 10),
        padding_mode="border",
    )
    for name, localisation in localisation_networks().items():
        models[f"localisation_{name}"] = keras_stn.SpatialTransformer(
            "affine", localisation=localisation
        )
    expected = {}
    for seed, (name, transformer) in enumerate(models.items()):
        model = classifier(transformer)
        perturb(model, seed)
        model.save(tmp_path / f"{name}.keras")
        expected[name] = keras.ops.convert_to_numpy(model(images))
    np.savez(tmp_path / "expected.npz", images=images, **expected)

    output = run_python(
        """
        import json, numpy as np, keras, keras_stn
        data = np.load("expected.npz")
        report = {}
        for name in [k for k in data.files if k != "images"]:
            model = keras.models.load_model(f"{name}.keras")  # safe_mode=True
            layer = model.layers[0]
            report[name] = {
                "class": type(layer).__name__,
                "error": float(np.abs(model(data["images"]) - data[name]).max()),
            }
        print(json.dumps(report))
        """,
        cwd=tmp_path,
    )
    report = json.loads(output.strip().splitlines()[-1])
    assert set(report) == set(models)
    for name, result in report.items():
        assert result["class"] == "SpatialTransformer", name
        assert result["error"] <= 1e-6, (name, result)


@pytest.mark.parametrize("name", ["affine", "tps"])
def test_exported_savedmodel_serves_without_keras_stn(tmp_path, name):
    keras.utils.set_random_seed(0)
    model = classifier(keras_stn.SpatialTransformer(name))
    model.compile("adam", "mse", jit_compile=True)
    images = np.random.default_rng(1).uniform(size=(7, 16, 16, 1)).astype("float32")
    model.fit(images, np.ones((7, 4)), epochs=1, verbose=0)
    perturb(model, 3)
    model.export(str(tmp_path / "served"))
    expected = {str(n): keras.ops.convert_to_numpy(model(images[:n])) for n in (1, 3, 7)}
    np.savez(tmp_path / "expected.npz", images=images, **expected)

    output = run_python(
        """
        import json, sys
        sys.modules["keras_stn"] = None  # keras_stn cannot be imported here
        try:
            import keras_stn
            raise SystemExit("keras_stn was importable")
        except ImportError:
            pass
        import numpy as np, tensorflow as tf
        data = np.load("expected.npz")
        served = tf.saved_model.load("served")
        serve = served.signatures["serving_default"]
        graph = serve.graph.as_graph_def()
        nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
        xla = [n.name for n in nodes
               if "_XlaMustCompile" in n.attr and n.attr["_XlaMustCompile"].b]
        errors = {}
        for n in ("1", "3", "7"):
            out = serve(tf.constant(data["images"][: int(n)]))
            (out,) = out.values()
            errors[n] = float(np.abs(out.numpy() - data[n]).max())
        print(json.dumps({"errors": errors, "xla": xla}))
        """,
        cwd=tmp_path,
    )
    report = json.loads(output.strip().splitlines()[-1])
    assert report["xla"] == []
    for batch, error in report["errors"].items():
        assert error <= 1e-5, (batch, error)

    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [cli, "show", "--dir", str(tmp_path / "served"), "--tag_set", "serve",
         "--signature_def", "serving_default"],
        capture_output=True, text=True, timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "shape: (-1, 16, 16, 1)" in shown.stdout, shown.stdout
