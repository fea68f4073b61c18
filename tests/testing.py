"""Shared test helpers: the layer test, the saving test, and fresh interpreters.

Public Keras API only. `run_layer_test` does what every layer owes its users: config
round trip, symbolic call, eager call, one `fit` step, mixed precision.
`run_saving_test` saves models as `.keras` and loads them back, in this process or in
a fresh one, and compares classes and outputs.
"""

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def load_script(path):
    """Imports a script (an example, which is not a package module) from its path."""
    name = os.path.splitext(os.path.basename(path))[0] + "_under_test"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_images(shape, seed=0):
    return np.random.default_rng(seed).uniform(size=shape).astype("float32")


def dtype_of(tensor):
    return keras.backend.standardize_dtype(tensor.dtype)


@contextlib.contextmanager
def global_dtype_policy(policy):
    """Sets the global dtype policy, and always restores the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _shapes(outputs):
    return [tuple(output.shape) for output in _as_list(outputs)]


def run_layer_test(
    cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights=0,
    float32_outputs=(),
    jit_compile=True,
):
    """Config round trip, symbolic call, eager call, one fit step, mixed precision.

    Args:
        cls: the layer class.
        init_kwargs: its constructor arguments.
        input_data: a NumPy array, or a list of them for a layer called on a list.
        expected_output_shape: the eager output shape, or a tuple of shapes for a
            layer with several outputs.
        expected_num_trainable_weights: after the layer is built.
        float32_outputs: indices of the outputs that stay float32 under a mixed
            precision policy (the others are in the compute dtype).
        jit_compile: for the fit step.
    """
    several_inputs = isinstance(input_data, (list, tuple))
    expected = (
        [tuple(s) for s in expected_output_shape]
        if isinstance(expected_output_shape[0], (list, tuple))
        else [tuple(expected_output_shape)]
    )

    # Config round trip, directly and through the registered name.
    layer = cls(**init_kwargs)
    config = layer.get_config()
    json.dumps(config)  # a .keras file stores it as JSON
    assert cls.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is cls and revived.get_config() == config

    # Symbolic call: the batch stays unknown.
    inputs = [keras.Input(x.shape[1:], dtype=dtype_of(x)) for x in _as_list(input_data)]
    symbolic = layer(inputs if several_inputs else inputs[0])
    assert _shapes(symbolic) == [(None, *s[1:]) for s in expected]
    assert len(layer.trainable_weights) == expected_num_trainable_weights

    # Eager call; the revived layer with the same weights gives the same outputs.
    outputs = layer(input_data)
    assert _shapes(outputs) == expected
    for output, spec in zip(_as_list(outputs), _as_list(symbolic)):
        assert dtype_of(output) == dtype_of(spec)
    revived(input_data)
    revived.set_weights(layer.get_weights())
    for output, again in zip(_as_list(outputs), _as_list(revived(input_data))):
        np.testing.assert_array_equal(again, output)

    # One fit step moves the trainable weights.
    model = keras.Model(inputs if several_inputs else inputs[0], symbolic)
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
    before = [keras.ops.convert_to_numpy(w) for w in layer.trainable_weights]
    targets = [np.zeros(s, "float32") for s in expected]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The model does not have any trainable weights")
        history = model.fit(
            input_data, targets if len(targets) > 1 else targets[0],
            batch_size=len(targets[0]), epochs=1, verbose=0,
        )
    assert np.isfinite(history.history["loss"]).all()
    if before:
        after = [keras.ops.convert_to_numpy(w) for w in layer.trainable_weights]
        assert any(np.any(a != b) for a, b in zip(after, before))

    # Mixed precision: float32 variables, outputs in the compute dtype.
    for policy in MIXED_POLICIES:
        layer = cls(**init_kwargs, dtype=policy)
        symbolic = layer(inputs if several_inputs else inputs[0])
        outputs = layer(input_data)
        assert all(dtype_of(w) == "float32" for w in layer.weights)
        for index, (output, spec) in enumerate(zip(_as_list(outputs), _as_list(symbolic))):
            dtype = "float32" if index in float32_outputs else layer.compute_dtype
            assert dtype_of(output) == dtype_of(spec) == dtype, (policy, index)
            assert np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(output, "float32"))).all()


def layer_classes(layer, prefix=""):
    """`["path:Class:policy", ...]` for a layer and every layer it holds."""
    path = prefix + layer.name
    found = [f"{path}:{type(layer).__name__}:{layer.dtype_policy.name}"]
    children = list(getattr(layer, "layers", []))
    children += [getattr(layer, "localisation", None), getattr(layer, "regressor", None)]
    for child in children:
        if isinstance(child, keras.layers.Layer):
            found += layer_classes(child, path + "/")
    return found


def flat_outputs(model, input_data):
    """The model's outputs as a list of float32 NumPy arrays."""
    return [
        keras.ops.convert_to_numpy(keras.ops.cast(o, "float32"))
        for o in _as_list(model(input_data))
    ]


_LOAD_IN_FRESH_PROCESS = """
import json, sys
import numpy as np, keras
import keras_stn  # registers the package's classes, as a user's program would
sys.path.insert(0, sys.argv[1])
from tests.testing import flat_outputs, layer_classes

saved = json.load(open("saved.json"))
arrays = np.load("inputs.npz")
data = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
data = data if saved["several_inputs"] else data[0]
report = {}
for name in saved["models"]:
    model = keras.models.load_model(f"{name}.keras")  # safe_mode=True
    report[name] = {
        "classes": layer_classes(model),
        "outputs": [o.tolist() for o in flat_outputs(model, data)],
    }
print(json.dumps(report))
"""


def run_saving_test(models, input_data, directory, fresh_process=False, atol=1e-6):
    """Saves each model as `.keras`, loads it back and compares.

    The load runs here, or with `fresh_process=True` in a new interpreter that
    imports only `keras_stn`, as a user's program would. Loading uses the default
    `safe_mode=True`; no `Lambda` layer may appear in a saved config.

    Args:
        models: `{name: model}`, each called on `input_data`.
        input_data: a NumPy array, or a list of them for models with several inputs.
        directory: a `pathlib.Path` for the files.
    """
    directory = os.fspath(directory)
    expected = {}
    for name, model in models.items():
        path = os.path.join(directory, f"{name}.keras")
        model.save(path)
        with zipfile.ZipFile(path) as archive:
            assert '"Lambda"' not in archive.read("config.json").decode(), name
        expected[name] = (layer_classes(model), flat_outputs(model, input_data))
    if fresh_process:
        with open(os.path.join(directory, "saved.json"), "w") as file:
            several_inputs = isinstance(input_data, (list, tuple))
            json.dump({"models": sorted(models), "several_inputs": several_inputs}, file)
        np.savez(os.path.join(directory, "inputs.npz"), *_as_list(input_data))
        report = run_python(_LOAD_IN_FRESH_PROCESS, ROOT, cwd=directory)
        loaded = {n: (r["classes"], [np.array(o) for o in r["outputs"]]) for n, r in report.items()}
    else:
        loaded = {}
        for name in models:
            model = keras.models.load_model(os.path.join(directory, f"{name}.keras"))
            loaded[name] = (layer_classes(model), flat_outputs(model, input_data))
    assert sorted(loaded) == sorted(expected)
    for name, (classes, outputs) in expected.items():
        assert loaded[name][0] == classes, name
        assert len(loaded[name][1]) == len(outputs), name
        for output, again in zip(outputs, loaded[name][1]):
            np.testing.assert_allclose(again, output, atol=atol, rtol=0, err_msg=name)


def start_python(code, *args, cwd=None, env=None):
    """Starts `code` in a fresh interpreter; finish it with `finish_python`."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_python(process, timeout=240):
    """Waits for `process`; fails on a non-zero exit, returns its last line as JSON."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        process.kill()
    assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def run_python(code, *args, cwd=None, env=None, timeout=240):
    """Runs `code` in a fresh interpreter; returns the JSON it printed last."""
    return finish_python(start_python(code, *args, cwd=cwd, env=env), timeout)


def arange_images(shape, dtype="float32"):
    """`np.arange` images: every pixel different, so a wrong read shows."""
    return np.arange(np.prod(shape), dtype=dtype).reshape(shape)


def assert_value_error_names(call, argument):
    """`call()` raises a ValueError naming `argument` and saying what it received."""
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert argument in message, message
    assert "Received" in message, message


def value_and_gradients(function, *arrays):
    """`function(*tensors)` -> a scalar; returns its value and its gradient with
    respect to each array, as NumPy, on the current Keras backend. A gradient that
    does not reach an array is zeros."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = function(*tensors)
        grads = tape.gradient(
            value, tensors, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
    elif backend == "jax":
        import jax

        value, grads = jax.value_and_grad(function, argnums=tuple(range(len(arrays))))(
            *[jax.numpy.asarray(a) for a in arrays]
        )
    elif backend == "torch":
        import torch

        tensors = [torch.tensor(np.asarray(a), requires_grad=True) for a in arrays]
        value = function(*tensors)
        if value.requires_grad:  # else no array reaches it
            value.backward()
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in tensors]
    else:
        raise NotImplementedError(backend)
    numpy = keras.ops.convert_to_numpy
    return numpy(value), [numpy(g) for g in grads]
