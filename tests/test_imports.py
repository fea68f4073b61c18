"""`import keras_stn` stays light: no TensorFlow on the JAX and PyTorch backends, and
what needs an optional package says what to install."""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_import_keras_stn_does_not_import_tensorflow(backend):
    result = run_python(
        f"""
        import sys
        import keras_stn
        assert keras_stn.__file__.startswith({ROOT!r}), keras_stn.__file__
        import keras_stn.visualize
        from keras_stn import *  # every public name, datasets not among them
        assert "tensorflow" not in sys.modules, "keras_stn imported tensorflow"
        # datasets (tf.data pipelines) is there on first use.
        assert keras_stn.datasets.VARIANTS
        assert "tensorflow" in sys.modules
        """,
        backend,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_without_tensorflow_the_array_helpers_work_and_the_rest_says_what_to_install(tmp_path):
    result = run_python(
        f"""
        import sys
        sys.modules["tensorflow"] = None  # as if TensorFlow were not installed
        import numpy as np
        import keras_stn
        from keras_stn import visualize

        images = np.zeros((2, 5, 5, 1), "float32")
        assert visualize.tile(images, columns=2).shape == (7, 13, 1)
        visualize.plot_images(images, path={str(tmp_path / "images.png")!r})
        for make in (
            lambda: keras_stn.datasets,
            lambda: visualize.TransformerSnapshots(images, png_dir={str(tmp_path)!r}),
        ):
            try:
                make()
            except ImportError as error:
                assert "pip install tensorflow" in str(error), error
            else:
                raise AssertionError("no ImportError")
        print("ok")
        """,
        "jax",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
