"""The MNIST addition example (paper appendix A.1) in its smoke mode, and its parts:
the two-digit data, the flags, the 2xST model's output channels."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "mnist_addition.py")
MODELS = ["fcn", "cnn", "st", "2st", "2st-cnn", "fcn-sum", "st-fcn-sum", "2st-fcn-sum",
          "cnn-sum", "2st-cnn-sum"]


def load_example():
    return testing.load_script(EXAMPLE)


@pytest.mark.slow
def test_smoke_run_trains_every_model_prints_the_table_and_draws_the_transformers(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, EXAMPLE, "--smoke", "--models", ",".join(MODELS), "--out-dir", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for label, paper in (("FCN", 47.7), ("CNN", 14.7), ("ST-FCN", 18.5), ("2xST-FCN", 5.8),
                         ("2xST-FCN, digit sum", "-"), ("2xST-CNN, digit sum", "-")):
        assert f"| {label} | " in result.stdout and f"| {paper} |" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["errors"]) == set(MODELS)
    assert all(0 <= e <= 100 for e in results["errors"].values())
    assert results["evaluated_on"].endswith("test digits")
    assert (out / "results.md").read_text().startswith("MNIST addition")
    pictures = [f"addition_{key}.png" for key in ("2st", "2st-cnn", "2st-fcn-sum", "2st-cnn-sum")]
    for picture in pictures:
        assert (out / picture).stat().st_size > 2000
    assert "results.md, results.json, " + ", ".join(pictures) in result.stdout


def test_pairs_hold_two_independently_placed_digits_and_their_sum():
    example = load_example()
    digits = np.zeros((3, 28, 28), "uint8")
    digits[:, 4:24, 10:18] = 255  # a bar, so the digit's ink is easy to find
    labels = np.array([2, 5, 9])
    pairs, sums, which = example.make_pairs(digits, labels, 64, np.random.default_rng(0))
    assert pairs.shape == (64, 42, 42, 2) and pairs.dtype == np.float32
    assert sums.dtype == np.int64
    np.testing.assert_array_equal(sums, labels[which[:, 0]] + labels[which[:, 1]])
    assert 0.0 <= pairs.min() and pairs.max() <= 1.0
    # Every channel has its digit (a scaled 20x8 bar: at least 0.7^2 * 160 pixels of ink) ...
    ink = (pairs > 0.5).sum(axis=(1, 2))
    assert ink.min() >= 60
    # ... and the two channels are distorted independently: their ink is elsewhere.
    centres = [np.argwhere(pair[..., c] > 0.5).mean(axis=0) for pair in pairs for c in (0, 1)]
    centres = np.array(centres).reshape(64, 2, 2)
    assert np.median(np.abs(centres[:, 0] - centres[:, 1]).sum(axis=1)) > 3


def test_test_pairs_are_the_same_for_the_same_seed():
    example = load_example()
    digits = np.random.default_rng(1).integers(0, 256, (10, 28, 28)).astype("uint8")
    labels = np.arange(10)
    first = example.make_pairs(digits, labels, 8, np.random.default_rng(5))
    again = example.make_pairs(digits, labels, 8, np.random.default_rng(5))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("initial", ["identity", "tiles"])
def test_two_transformers_start_where_the_initializer_says(initial):
    example = load_example()
    args = example.parse_args(["--initial", initial])
    model = example.build_model("2st", args)
    assert model.output_shape == (None, 19)
    pairs = np.random.default_rng(0).uniform(size=(3, 42, 42, 2)).astype("float32")
    theta = example.transformer_thetas(model, pairs)
    expected = ([[1, 0, 0, 0, 1, 0]] * 2 if initial == "identity"
                else [[0.5, 0, -0.5, 0, 1, 0], [0.5, 0, 0.5, 0, 1, 0]])
    np.testing.assert_allclose(theta, np.broadcast_to(expected, (3, 2, 6)), atol=1e-6)
    # Four output channels: transformer 1 on both channels, then transformer 2.
    st = keras.Model(model.input, model.get_layer("st").output[0])(pairs)
    assert tuple(st.shape) == (3, 42, 42, 4)


@pytest.mark.parametrize(
    "args", [("--models", "cnn,rnn"), ("--models", ","), ("--epochs", "0"),
             ("--holdout", "-1"), ("--initial", "random"), ("--st-size", "0"),
             ("--digit-classifier", "resnet"), ("--localiser", "big")]
)
def test_bad_flags_are_refused(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example().parse_args(list(args))
    assert exit_info.value.code == 2 and "error" in capsys.readouterr().err


def test_defaults_are_the_documented_run():
    args = load_example().parse_args([])
    assert args.models == ["cnn-sum", "2st-cnn-sum"]
    assert args.epochs == 5 and args.pairs == 16000 and args.batch_size == 64
    assert args.holdout == 0 and args.st_size == 42 and args.digit_classifier == "table1"
    assert args.localiser == "small" and args.transform == "affine"


def test_digit_sum_adds_two_digit_distributions():
    example = load_example()
    layer = example.DigitSum()
    one_hot = np.eye(10, dtype="float32")
    # Certain digits: the sum is certain.
    sums = keras.ops.convert_to_numpy(layer([one_hot[[3, 9, 0]], one_hot[[4, 9, 0]]]))
    np.testing.assert_array_equal(sums, np.eye(19, dtype="float32")[[7, 18, 0]])
    # Uniform digits: P(sum = s) is the number of pairs (i, j) with i + j = s, over 100.
    uniform = np.full((1, 10), 0.1, "float32")
    counts = [min(s, 18 - s) + 1 for s in range(19)]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer([uniform, uniform]))[0], np.array(counts) / 100, atol=1e-7
    )
    # A digit known to be 2 or 5, the other 1: the sum is 3 or 6, as likely as each.
    mixed = np.zeros((1, 10), "float32")
    mixed[0, [2, 5]] = [0.25, 0.75]
    expected = np.zeros(19)
    expected[[3, 6]] = [0.25, 0.75]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer([mixed, one_hot[[1]]]))[0], expected, atol=1e-7
    )


@pytest.mark.parametrize("classifier", ["table1", "cnn"])
def test_the_sum_models_read_each_channel_with_one_digit_classifier(classifier, tmp_path):
    example = load_example()
    args = example.parse_args(["--digit-classifier", classifier])
    pairs = np.random.default_rng(0).uniform(size=(3, 42, 42, 2)).astype("float32")
    keys = ("cnn-sum", "2st-cnn-sum")
    if classifier == "cnn":  # Not theirs: the FCN models' classifier is the FCN.
        keys += ("fcn-sum", "st-fcn-sum", "2st-fcn-sum")
    for key in keys:
        model = example.build_model(key, args)
        assert model.output_shape == (None, 19)
        digit = model.get_layer("digit_classifier")
        convolutions = [layer for layer in digit.layers if isinstance(layer, keras.layers.Conv2D)]
        assert bool(convolutions) == (not key.endswith("fcn-sum")), key
        sums = keras.ops.convert_to_numpy(model(pairs))
        np.testing.assert_allclose(sums.sum(axis=1), 1.0, atol=1e-5)
        # One classifier for both digits: swapping the channels keeps the sum (the
        # transformers start on the identity, whatever they see).
        swapped = keras.ops.convert_to_numpy(model(pairs[..., ::-1]))
        np.testing.assert_allclose(swapped, sums, atol=1e-5)
        # ... but it does read the digits: other pairs, other sums.
        assert np.abs(sums[0] - sums[1]).max() > 1e-4
        path = str(tmp_path / f"{key}.keras")
        model.save(path)
        again = keras.saving.load_model(path)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(again(pairs)), sums, atol=1e-6)


@pytest.mark.parametrize("seen", [0, 1])
def test_digit_k_is_what_transformer_k_reads_of_channel_k(seen):
    example = load_example()
    model = example.build_model("2st-cnn-sum", example.parse_args([]))
    # Transformer `seen` on the identity, the other reading far outside the image (zero
    # padding, a blank digit): only channel `seen` can change the sum's distribution.
    identity, outside = [1, 0, 0, 0, 1, 0], [1, 0, 10, 0, 1, 10]
    bias = identity + outside if seen == 0 else outside + identity
    model.get_layer("st").regressor.bias.assign(np.array(bias, "float32"))
    pairs = np.random.default_rng(0).uniform(size=(2, 42, 42, 2)).astype("float32")
    sums = keras.ops.convert_to_numpy(model(pairs))
    for channel in (0, 1):
        changed = pairs.copy()
        changed[..., channel] = np.random.default_rng(1).uniform(size=(2, 42, 42))
        difference = np.abs(keras.ops.convert_to_numpy(model(changed)) - sums).max()
        if channel == seen:
            assert difference > 1e-4
        else:
            assert difference < 1e-6
