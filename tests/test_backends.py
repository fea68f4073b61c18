"""JAX and PyTorch compute what TensorFlow computes: every op and layer, forward and
gradients, `fit` with and without `jit_compile`, `.keras` files moving between
backends, the NaN / infinity rules and the exact identity.

The cases are `tests/backends.py`; TensorFlow runs them here, JAX and PyTorch in fresh
interpreters, side by side.
"""

import os

import keras
import numpy as np
import pytest

from tests import backends
from tests import testing

OTHERS = ("jax", "torch")
PAIRS = [(backend, case) for backend in OTHERS for case in backends.backend_cases(backend)]

# Forward values of the same float32 arithmetic agree to rounding; gradients are sums
# in another order (scatters, reductions), so they get a relative tolerance. A layer's
# localisation network convolves in another order on each backend, which moves theta,
# and so the layer's output, by a few rounding errors more.
FORWARD_RTOL = 1e-6
LAYER_FORWARD_RTOL = 1e-5
GRADIENT_RTOL = 2e-5
# A few steps of SGD move the weights by sums of such gradients.
FIT_RTOL = 1e-4


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """`{backend: {key: array}}` for TensorFlow, JAX and PyTorch."""
    directory = tmp_path_factory.mktemp("backends")
    backends.make_models(str(directory))
    runs = {
        backend: testing.start_python(
            "import sys; from tests import backends; backends.main(sys.argv)",
            "run", directory, directory / f"{backend}.npz",
            cwd=testing.ROOT,
            env={"KERAS_BACKEND": backend, "PYTHONPATH": testing.ROOT},
        )
        for backend in OTHERS
    }
    try:
        found = {"tensorflow": backends.run_cases(str(directory))}
        for backend, process in runs.items():
            report = testing.finish_python(process, timeout=1200)
            assert report["backend"] == backend, report
            with np.load(directory / f"{backend}.npz") as arrays:
                found[backend] = dict(arrays)
    finally:
        for process in runs.values():
            process.kill()
    found["directory"] = directory
    return found


def keys(found, case):
    return sorted(k for k in found if k.split(":")[0] == case)


@pytest.mark.slow
@pytest.mark.parametrize("backend, case", PAIRS)
def test_backend_computes_what_tensorflow_computes(results, backend, case):
    reference, other = results["tensorflow"], results[backend]
    names = keys(reference, case)
    assert names and names == keys(other, case)
    for name in names:
        want, got = reference[name], other[name]
        assert got.shape == want.shape and got.dtype == want.dtype, name
        key = name.split(":")[1]
        if key == "exact":  # the identity transform returns its input bit for bit
            np.testing.assert_array_equal(got, 0.0, err_msg=f"{backend} {name}")
            np.testing.assert_array_equal(want, 0.0, err_msg=f"tensorflow {name}")
            continue
        # Non-finite values only where TensorFlow has them (NaN grid points).
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=name)
        rtol = (
            FIT_RTOL if case.startswith("fit/")
            else LAYER_FORWARD_RTOL if key.startswith("out") and case.startswith("layer/")
            else FORWARD_RTOL if key.startswith("out")
            else GRADIENT_RTOL
        )
        scale = max(float(np.max(np.abs(want[np.isfinite(want)]), initial=0.0)), 1.0)
        np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale,
                                   err_msg=f"{backend} {name}")


@pytest.mark.slow
def test_nonfinite_points_read_padding_and_pass_no_gradient(results):
    """The documented rule, on the reference: a point with a NaN or infinite coordinate
    reads 0 (the fill value under "constant") and passes no gradient."""
    bad = ~np.isfinite(backends.bad_points_grid()).all(axis=-1)
    for interpolation, padding, align in backends.SAMPLE_SETTINGS:
        case = f"sample/{interpolation}/{padding}/{align}"
        for backend in ("tensorflow", *OTHERS):
            found = results[backend]
            out, grid_grad = found[f"{case}:out"], found[f"{case}:grad1"]
            fill = backends.FILL if padding == "constant" else 0.0
            np.testing.assert_array_equal(out[bad], np.broadcast_to(fill, out[bad].shape))
            np.testing.assert_array_equal(grid_grad[bad], 0.0)
            assert np.isfinite(out).all() and np.isfinite(found[f"{case}:grad0"]).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, jit_compile",
    [(b, jit) for b in OTHERS for jit in backends.FIT_JIT_BACKENDS[b]],
)
def test_keras_file_saved_on_backend_loads_on_tensorflow(results, backend, jit_compile):
    path = os.path.join(results["directory"], f"fit_{backend}_{jit_compile}.keras")
    model = keras.models.load_model(path)
    data = np.load(os.path.join(results["directory"], "inputs.npz"))
    got = testing.flat_outputs(model, data["images"])[0]
    want = results[backend][f"fit/jit_compile={jit_compile}:predict"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
