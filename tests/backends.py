"""The checks that every Keras backend must pass alike, as one list of cases.

Each case computes NumPy arrays with the public API only (`keras`, `keras.ops`,
`keras_stn`, `tests.testing.value_and_gradients`) on whatever backend Keras runs.
`tests/test_backends.py` runs them on TensorFlow in its own process and on JAX and
PyTorch in fresh interpreters (`python -m tests.backends run DIRECTORY OUT.npz` with
`KERAS_BACKEND` set) and compares the arrays: one suite, results compared, not
re-derived per backend.

The models come from `.keras` files that TensorFlow wrote (`make_models`), so the
other backends also show that the files load there; after `fit`, each backend saves
its model again and TensorFlow loads that file.
"""

import os
import sys

import keras
import numpy as np

import keras_stn
from keras_stn import ops
from tests import testing

IMAGE = (2, 5, 6, 3)
OUT = (4, 5)
INTERPOLATIONS = ("bilinear", "nearest")
# Each interpolation with each padding mode, both conventions among them.
SAMPLE_SETTINGS = (
    ("bilinear", "zeros", False),
    ("bilinear", "zeros", True),
    ("bilinear", "border", False),
    ("bilinear", "reflection", True),
    ("bilinear", "constant", False),
    ("nearest", "zeros", False),
    ("nearest", "border", True),
    ("nearest", "reflection", False),
    ("nearest", "constant", True),
)
FILL = [0.5, -1.0, 2.0]
FAMILIES = ("affine", "projective", "tps", "attention", "similarity", "translation")
FIT_JIT = (False, True)
# `jit_compile=True` on PyTorch is torch.compile, which builds C++ with a compiler:
# tens of minutes on a loaded 2-core machine, so the suite leaves it out there.
FIT_JIT_BACKENDS = {"tensorflow": FIT_JIT, "jax": FIT_JIT, "torch": (False,)}
# JAX computes in float64 only with JAX_ENABLE_X64=1, which changes its defaults for
# every other case too; without it float64 inputs are float32 there.
FLOAT64_BACKENDS = ("tensorflow", "torch")


# ------------------------------------------------------------------ inputs


def images(shape=IMAGE, seed=0):
    return testing.random_images(shape, seed) + 0.25


def bad_points_grid():
    """An affine grid turned and scaled past the borders, with rows of NaN, +inf,
    -inf and huge points: `(2, 4, 5, 2)`."""
    theta = np.array([[1.2, 0.3, 0.1, -0.2, 1.1, 0.05], [0.7, -0.1, -0.3, 0.2, 0.8, 0.2]], "f4")
    grid = np.asarray(keras.ops.convert_to_numpy(ops.affine_grid(theta, OUT)))
    grid = grid.copy()
    grid[0, 0, 1, 0] = np.nan
    grid[0, 1, 2, 1] = np.inf
    grid[1, 2, 0, 0] = -np.inf
    grid[1, 3, 4] = (1e20, -3e10)
    return grid


def weights_for(output):
    """A fixed upstream gradient: each output value weighs differently."""
    shape = tuple(output.shape)
    return keras.ops.reshape(
        keras.ops.cos(keras.ops.arange(int(np.prod(shape)), dtype=output.dtype)), shape
    )


def read_and_gradients(function, *arrays):
    """`function(*tensors)` -> an output; returns it and the gradients of its weighted
    sum with respect to each array."""
    out = np.asarray(keras.ops.convert_to_numpy(_compiled(function)(*arrays)))
    grads = gradients(lambda *tensors: _weighted_sum(function(*tensors)), *arrays)
    return {"out": out, **{f"grad{i}": g for i, g in enumerate(grads)}}


def gradients(loss, *arrays):
    """The gradients of `loss(*tensors)` (a scalar) with respect to each array. JAX
    compiles the whole function (op by op, each of its many small ops would be
    compiled on its own, which takes minutes); the others run it eagerly."""
    if keras.backend.backend() == "jax":
        import jax

        grads = jax.jit(jax.grad(loss, argnums=tuple(range(len(arrays)))))(*arrays)
        return [np.asarray(g) for g in grads]
    return testing.value_and_gradients(loss, *arrays)[1]


def _compiled(function):
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    return function


def _weighted_sum(outputs):
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return sum(keras.ops.sum(o * weights_for(o)) for o in outputs)


# ------------------------------------------------------------------ ops


def sample_case(interpolation, padding, align_corners):
    def run():
        fill = FILL if padding == "constant" else 0.0

        def read(image_tensor, grid_tensor):
            return ops.sample(image_tensor, grid_tensor, interpolation, padding,
                              align_corners, fill_value=fill)

        return read_and_gradients(read, images(), bad_points_grid())

    return run


def antialias_case():
    theta = np.array([[0.45, 0.1, 0.1, -0.1, 0.4, 0.0], [1.6, 0.0, 0.2, 0.0, 0.35, -0.2]], "f4")
    grid = keras.ops.convert_to_numpy(ops.affine_grid(theta, (5, 5)))
    return read_and_gradients(
        lambda i, g: ops.sample(i, g, antialias=True), images((2, 16, 16, 2)), grid
    )


def volume_case(interpolation, padding):
    def run():
        theta = np.array(
            [[1.1, 0.1, 0.0, 0.1, -0.1, 0.9, 0.2, 0.0, 0.0, 0.1, 1.2, -0.1]] * 2, "f4"
        ).reshape(2, 3, 4)
        theta[1, :, 3] += 0.3
        grid = keras.ops.convert_to_numpy(ops.affine_grid(theta, (3, 4, 3)))
        grid = grid.copy()
        grid[0, 1, 1, 1, 2] = np.nan
        return read_and_gradients(
            lambda i, g: ops.sample(i, g, interpolation, padding),
            images((2, 4, 5, 3, 2)), grid,
        )

    return run


def float64_case():
    return read_and_gradients(
        lambda i, g: ops.sample(i, g), images().astype("float64"),
        bad_points_grid().astype("float64"),
    )


def identity_case(align_corners):
    def run():
        image = testing.arange_images((2, 7, 9, 3))
        theta = np.array([[1, 0, 0, 0, 1, 0]] * 2, "float32")
        grid = ops.affine_grid(theta, (7, 9), align_corners=align_corners)
        out = keras.ops.convert_to_numpy(ops.sample(image, grid, align_corners=align_corners))
        return {"exact": np.asarray(out) - image}

    return run


def grid_case(family):
    def run():
        rng = np.random.default_rng(1)
        if family == "affine":
            theta = np.array([[1, 0, 0, 0, 1, 0]], "f4") + rng.normal(0, 0.2, (2, 6))
            return read_and_gradients(lambda t: ops.affine_grid(t, OUT), theta.astype("f4"))
        if family == "projective":
            theta = np.array([[1, 0.1, 0, -0.1, 1, 0.05, 0, 0]] * 2, "f4")
            theta[0, 6] = 8.0  # x = -0.2 at infinity: NaN points, no gradient
            theta[1] += rng.normal(0, 0.1, 8).astype("f4")
            return read_and_gradients(lambda t: ops.projective_grid(t, (5, 5)), theta)
        if family in ("keystone", "corners"):  # the projective family's own forms
            projective = keras_stn.transforms.Projective(family)
            theta = (projective.identity() + rng.normal(0, 0.15, (2, 8))).astype("f4")
            return read_and_gradients(lambda t: projective.grid(t, (5, 5)), theta)
        tps = keras_stn.transforms.TPS(grid_shape=(3, 3))
        theta = (tps.identity() + rng.normal(0, 0.1, (2, 18))).astype("f4")
        return read_and_gradients(
            lambda t: ops.tps_grid(t, tps.control_points, OUT), theta
        )

    return run


def mask_case(interpolation):
    def run():
        return read_and_gradients(
            lambda g: ops.validity_mask(g, IMAGE[1:3], interpolation), bad_points_grid()
        )

    return run


# ------------------------------------------------------------------ layers


LAYER_INPUT = (3, 12, 12, 2)
VOLUME_INPUT = (2, 6, 6, 6, 1)


def layer_models():
    """`{name: (model, inputs)}`: transformers of every family, options, volumes."""
    found = {}
    inputs = keras.Input(LAYER_INPUT[1:])
    found["families"] = keras.Model(inputs, [
        keras_stn.SpatialTransformer(family, output_size=(8, 8), name=family)(inputs)
        for family in FAMILIES
    ])
    inputs = keras.Input(LAYER_INPUT[1:])
    options = keras_stn.SpatialTransformer(
        "affine", output_size=(6, 6), antialias=True, padding_mode="constant",
        fill_value=0.5, num_transformers=2, initial_transform="tiles",
        learning_rate_multiplier=0.1, return_mask=True, name="st",
    )
    found["options"] = keras.Model(inputs, options(inputs))
    inputs = keras.Input(VOLUME_INPUT[1:])
    volume = keras_stn.SpatialTransformer("affine3d", output_size=(4, 5, 4), name="st")
    found["affine3d"] = keras.Model(inputs, volume(inputs))
    return found


def fit_model():
    inputs = keras.Input(LAYER_INPUT[1:])
    # One step held still: the step counter and its gradient gate on every backend.
    sampled = keras_stn.SpatialTransformer("affine", output_size=(8, 8), warmup_steps=1,
                                           name="st")(inputs)
    logits = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(sampled))
    return keras.Model(inputs, logits)


def make_models(directory):
    """TensorFlow: builds the models, moves their weights off the identity (seeded),
    saves them as `.keras` files and the inputs as `inputs.npz`."""
    # Seeded initial weights too. Unseeded, each run drew new ones, and some draws
    # make two cases ill-conditioned: the fit case ended 2e-4 apart after two epochs
    # (a sampling point within rounding of a pixel boundary takes another bilinear
    # cell on one backend: the "flaky under load" failures, which were flaky by draw),
    # and with seed 7 the affine3d case's first kernel gradient was 0.011 apart on 64
    # of 2,500 entries (TensorFlow's CPU MaxPool3D gradient, see NO_INPUT_GRADIENT).
    # The seed makes every run the same run; seed 1 has neither.
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(7)
    models = {**{f"layer_{n}": m for n, m in layer_models().items()}, "fit": fit_model()}
    for name, model in sorted(models.items()):
        model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype)
                           for w in model.get_weights()])
        model.save(os.path.join(directory, f"{name}.keras"))
    np.savez(
        os.path.join(directory, "inputs.npz"),
        images=images(LAYER_INPUT, seed=3),
        volumes=images(VOLUME_INPUT, seed=4),
        targets=np.random.default_rng(5).normal(size=(LAYER_INPUT[0], 3)).astype("f4"),
    )


# TensorFlow's CPU kernels without XLA give another gradient with respect to the input
# of the 3-D localisation network (Conv3D / MaxPool3D) than TensorFlow under XLA, JAX
# and PyTorch do (which agree to 1e-7): up to 8e-3 with some weights. That is not
# keras_stn's to fix, so the volume case compares the weights' gradients only.
NO_INPUT_GRADIENT = ("affine3d",)


def layer_case(name):
    def run(directory):
        model = keras.models.load_model(os.path.join(directory, f"layer_{name}.keras"))
        data = np.load(os.path.join(directory, "inputs.npz"))
        x = data["volumes" if name.endswith("3d") else "images"]
        trainable = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        def call(x, *weights):
            return model.stateless_call(list(weights), non_trainable, x)[0]

        outputs = _compiled(call)(x, *trainable)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        if name in NO_INPUT_GRADIENT:
            grads = gradients(lambda *tensors: _weighted_sum(call(x, *tensors)), *trainable)
            grads = [None, *grads]
        else:
            grads = gradients(lambda *tensors: _weighted_sum(call(*tensors)), x, *trainable)
        result = {f"grad{i}": g for i, g in enumerate(grads) if g is not None}
        for i, o in enumerate(outputs):
            result[f"out{i}"] = np.asarray(keras.ops.convert_to_numpy(o))
        return result

    return run


def fit_case(jit_compile):
    def run(directory):
        model = keras.models.load_model(os.path.join(directory, "fit.keras"))
        data = np.load(os.path.join(directory, "inputs.npz"))
        model.compile(keras.optimizers.SGD(0.05), "mse", jit_compile=jit_compile)
        history = model.fit(data["images"], data["targets"], batch_size=2, epochs=2,
                            shuffle=False, verbose=0)
        saved = os.path.join(directory, f"fit_{keras.backend.backend()}_{jit_compile}.keras")
        model.save(saved)
        result = {f"weight{i}": w for i, w in enumerate(model.get_weights())}
        result["loss"] = np.array(history.history["loss"])
        result["predict"] = np.asarray(
            keras.ops.convert_to_numpy(model(data["images"]))
        )
        return result

    return run


# ------------------------------------------------------------------ the list


def cases():
    """`{name: (function, needs_directory)}` in a fixed order."""
    found = {}
    for interpolation, padding, align in SAMPLE_SETTINGS:
        found[f"sample/{interpolation}/{padding}/{align}"] = (
            sample_case(interpolation, padding, align), False)
    found["sample/antialias"] = (antialias_case, False)
    for interpolation, padding in (("bilinear", "zeros"), ("nearest", "reflection")):
        found[f"volume/{interpolation}/{padding}"] = (volume_case(interpolation, padding), False)
    found["sample/float64"] = (float64_case, False)
    for align in (False, True):
        found[f"identity/{align}"] = (identity_case(align), False)
    for family in ("affine", "projective", "keystone", "corners", "tps"):
        found[f"grid/{family}"] = (grid_case(family), False)
    for interpolation in INTERPOLATIONS:
        found[f"mask/{interpolation}"] = (mask_case(interpolation), False)
    for name in ("families", "options", "affine3d"):
        found[f"layer/{name}"] = (layer_case(name), True)
    for jit in FIT_JIT:
        found[f"fit/jit_compile={jit}"] = (fit_case(jit), True)
    return found


def backend_cases(backend=None):
    """The cases that `backend` (default: the current one) runs."""
    backend = backend or keras.backend.backend()
    found = cases()
    for jit in FIT_JIT:
        if jit not in FIT_JIT_BACKENDS[backend]:
            del found[f"fit/jit_compile={jit}"]
    if backend not in FLOAT64_BACKENDS:
        del found["sample/float64"]
    return found


def run_cases(directory, names=None):
    """Runs the cases on the current backend: `{f"{case}:{key}": array}`."""
    results = {}
    for name, (function, needs_directory) in backend_cases().items():
        if names and name not in names:
            continue
        arrays = function(directory) if needs_directory else function()
        results.update({f"{name}:{key}": np.asarray(value) for key, value in arrays.items()})
    return results


def main(argv):
    command, directory, out = argv[1:4]
    if command != "run":
        raise SystemExit(f"usage: python -m tests.backends run DIRECTORY OUT.npz; got {command}")
    results = run_cases(directory, argv[4:])
    np.savez(out, **results)
    print('{"backend": "%s", "arrays": %d}' % (keras.backend.backend(), len(results)))


if __name__ == "__main__":
    main(sys.argv)
