"""keras_stn.visualize: figures, and the callback that records a transformer's outputs."""

import glob
import os
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_stn  # noqa: E402
from keras_stn import visualize  # noqa: E402


def images(count=4, size=12, channels=1, seed=0):
    return np.random.default_rng(seed).uniform(size=(count, size, size, channels)).astype("float32")


def small_model(size=12, output_size=None, transform="affine"):
    return keras.Sequential(
        [
            keras.Input((size, size, 1)),
            keras_stn.SpatialTransformer(transform, output_size=output_size, name="st"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


def test_tile_lays_images_out_row_by_row():
    batch = np.arange(5, dtype="float32").reshape(5, 1, 1, 1) * np.ones((5, 2, 3, 1), "float32")
    mosaic = visualize.tile(batch, columns=2, pad=1, pad_value=-1.0)
    assert mosaic.shape == (3 * 3 + 1, 2 * 4 + 1, 1)
    assert mosaic[1, 1, 0] == 0 and mosaic[1, 5, 0] == 1 and mosaic[4, 1, 0] == 2
    assert mosaic[7, 5, 0] == -1  # the sixth place is empty
    assert mosaic[0, 0, 0] == -1


def test_grid_to_pixels_under_both_conventions():
    np.testing.assert_allclose(
        visualize.grid_to_pixels([[-1.0, -1.0], [1.0, 1.0]], (4, 8)), [[-0.5, -0.5], [7.5, 3.5]]
    )
    np.testing.assert_allclose(
        visualize.grid_to_pixels([[-1.0, -1.0], [1.0, 1.0]], (4, 8), align_corners=True),
        [[0.0, 0.0], [7.0, 3.0]],
    )
    # The identity grid reads every pixel at its centre.
    grid = keras_stn.ops.affine_grid(np.array([[1, 0, 0, 0, 1, 0]], "float32"), (3, 5))
    pixels = visualize.grid_to_pixels(np.asarray(grid)[0], (3, 5))
    rows, columns = np.mgrid[0:3, 0:5]
    np.testing.assert_allclose(pixels, np.stack([columns, rows], -1), atol=1e-6)


def test_transformer_outputs_are_the_layers():
    model = small_model(output_size=(6, 8), transform="tps")
    batch = images()
    layer = model.get_layer("st")
    outputs, grid, theta = visualize.transformer_outputs(layer, batch)
    np.testing.assert_allclose(outputs, np.asarray(layer(batch)), atol=1e-6)
    assert grid.shape == (4, 6, 8, 2) and theta.shape == (4, 32)
    # A new transformer is the identity: its grid is the regular target grid.
    np.testing.assert_allclose(grid[0], keras_stn.ops.target_coordinates((6, 8)), atol=1e-6)


def test_figures_are_made_and_saved(tmp_path):
    batch = images(6)
    layer = small_model(output_size=(6, 6)).get_layer("st")
    outputs, grid, _ = visualize.transformer_outputs(layer, batch)
    figures = {
        "images.png": visualize.plot_images(batch, columns=3, titles=list("abcdef"), title="t"),
        "pairs.png": visualize.plot_transformed(batch, outputs, columns=2),
        "grid.png": visualize.plot_sampling_grid(batch, grid, columns=3, step=2),
        "layer.png": visualize.plot_transformer(layer, batch, columns=3),
    }
    for name, figure in figures.items():
        assert isinstance(figure, matplotlib.figure.Figure)
        figure.savefig(tmp_path / name)
        png = tf.io.decode_png(tf.io.read_file(str(tmp_path / name)))
        assert png.shape[0] > 50 and png.shape[1] > 50
    visualize.plot_images(images(2, channels=3), path=tmp_path / "rgb.png")
    assert (tmp_path / "rgb.png").stat().st_size > 0
    # The grid is drawn: every grid line's points, in pixels, are plotted.
    axes = figures["grid.png"].axes[0]
    drawn = np.concatenate([np.stack(line.get_data(), -1) for line in axes.lines])
    corners = visualize.grid_to_pixels(grid[0, [0, -1]][:, [0, -1]].reshape(-1, 2), (12, 12))
    for corner in corners:
        assert np.min(np.abs(drawn - corner).sum(-1)) < 1e-6


def identity_grid(count, size):
    theta = np.tile(np.array([[1, 0, 0, 0, 1, 0]], "float32"), (count, 1))
    return np.array(keras_stn.ops.affine_grid(theta, (size, size)))


def caption(figure):
    return figure.get_supxlabel()


def test_sampling_grid_figure_is_labelled():
    batch = images(3)
    figure = visualize.plot_sampling_grid(
        batch, identity_grid(3, 12), titles=["one", "two", "three"], title="The grid"
    )
    assert figure.get_suptitle() == "The grid"
    assert [axes.get_title() for axes in figure.axes] == ["one", "two", "three"]
    # The caption says what is drawn, and nothing about parts that are not there.
    assert "sampling grid" in caption(figure)
    assert "outside" not in caption(figure) and "folds" not in caption(figure)
    # The identity grid stays on the image: the panel is the image.
    assert figure.axes[0].get_xlim() == (-0.5, 11.5)


def test_sampling_grid_outside_the_image_is_shown_and_explained():
    grid = identity_grid(2, 12)
    grid[0] *= 1.2  # a zoom out: the grid reaches past each edge
    grid[1] *= 50.0  # far out: the panel stops at `margin`
    figure = visualize.plot_sampling_grid(images(2), grid, margin=0.25)
    assert "outside" in caption(figure) and "padding" in caption(figure)
    left, right = figure.axes[0].get_xlim()
    bottom, top = figure.axes[0].get_ylim()
    # One view for every panel: the image and the grid, up to 25% of the image beyond.
    assert (left, right) == pytest.approx((-0.5 - 3.0, 11.5 + 3.0))
    assert (top, bottom) == pytest.approx((-0.5 - 3.0, 11.5 + 3.0))
    assert figure.axes[1].get_xlim() == (left, right)
    # A grid that reaches only a little past the image: the panel shows just that.
    figure = visualize.plot_sampling_grid(images(1), grid[:1], margin=0.25)
    points = visualize.grid_to_pixels(grid[0], (12, 12))
    assert points.min() < -0.5 and points.max() > 11.5
    assert figure.axes[0].get_xlim() == pytest.approx((points.min(), points.max()))
    # NaN and infinite points (a projective transform's points at infinity) are skipped.
    grid[0, 0, 0] = np.nan
    grid[0, 0, 1] = np.inf
    left, right = visualize.plot_sampling_grid(images(2), grid).axes[0].get_xlim()
    assert np.isfinite([left, right]).all()


def test_sampling_grid_that_folds_over_itself_is_explained():
    grid = identity_grid(1, 12)
    grid[0, :, 6:, 0] = -grid[0, :, 6:, 0]  # the right half mirrored onto the left
    figure = visualize.plot_sampling_grid(images(1), grid)
    assert "folds" in caption(figure)
    # A mirror image everywhere is no fold.
    assert "folds" not in caption(visualize.plot_sampling_grid(images(1), -identity_grid(1, 12)))
    # `explain=False` leaves the caption out.
    assert caption(visualize.plot_sampling_grid(images(1), grid, explain=False)) == ""


def test_callback_writes_tensorboard_images_and_png_frames(tmp_path):
    model = small_model(size=16, output_size=(8, 8))
    model.compile(keras.optimizers.SGD(0.5), "mse")
    x, y = images(8, size=16), np.ones((8, 3), "float32")
    snapshots = visualize.TransformerSnapshots(
        x[:5], layer="st", log_dir=tmp_path / "logs", png_dir=tmp_path / "frames", columns=5
    )
    model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[snapshots])

    frames = sorted(os.listdir(tmp_path / "frames"))
    assert frames == ["st_0000.png", "st_0001.png", "st_0002.png", "st_0003.png"]
    first = tf.io.decode_png(tf.io.read_file(str(tmp_path / "frames" / frames[0]))).numpy()
    last = tf.io.decode_png(tf.io.read_file(str(tmp_path / "frames" / frames[-1]))).numpy()
    # Inputs (16 px) on top, outputs (8 px) below, one pixel between and around.
    assert first.shape == (1 + 17 + 1 + 9, 1 + 5 * 17, 1) and first.dtype == np.uint8
    np.testing.assert_array_equal(first[:18], last[:18])  # the same fixed inputs
    assert not np.array_equal(first[18:], last[18:])  # the outputs moved with training

    steps = []
    for path in glob.glob(str(tmp_path / "logs" / "*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "st/outputs":
                    steps.append(event.step)
    assert sorted(steps) == [0, 1, 2, 3]


def test_callback_finds_a_transformer_after_other_layers(tmp_path):
    inputs = keras.Input((10, 10, 1))
    features = keras.layers.Conv2D(2, 3, padding="same", name="features")(inputs)
    warped = keras_stn.SpatialTransformer(name="inner")(features)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(warped)))
    model.compile("sgd", "mse")
    snapshots = visualize.TransformerSnapshots(images(2, size=10), png_dir=tmp_path, every=2)
    model.fit(images(4, size=10), np.zeros((4, 1)), epochs=2, verbose=0, callbacks=[snapshots])
    assert sorted(os.listdir(tmp_path)) == ["inner_0000.png", "inner_0002.png"]
    picture = snapshots.snapshot()
    assert picture.shape == (1 + 11 + 1 + 11, 1 + 2 * 11, 1)  # the 2-channel features, first shown


def test_figures_without_matplotlib_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        visualize.plot_images(images(2))
    assert visualize.tile(images(2)).shape == (14, 27, 1)  # the array helpers need none


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: visualize.tile(np.zeros((2, 3))), "images"),
        (lambda: visualize.tile(np.zeros((2, 3, 3, 1)), columns=0), "columns"),
        (
            lambda: visualize.plot_transformed(np.zeros((2, 3, 3, 1)), np.zeros((3, 3, 3, 1))),
            "inputs",
        ),
        (lambda: visualize.plot_sampling_grid(np.zeros((2, 3, 3, 1)), np.zeros((2, 3, 3))), "grid"),
        (
            lambda: visualize.plot_sampling_grid(
                np.zeros((2, 3, 3, 1)), np.zeros((2, 3, 3, 2)), margin=-1
            ),
            "margin",
        ),
        (
            lambda: visualize.plot_sampling_grid(
                np.zeros((2, 3, 3, 1)), np.zeros((2, 3, 3, 2)), titles=["a"]
            ),
            "titles",
        ),
        (
            lambda: visualize.transformer_outputs(keras.layers.Dense(2), np.zeros((1, 3, 3, 1))),
            "layer",
        ),
        (lambda: visualize.TransformerSnapshots(np.zeros((3, 3, 1)), png_dir="x"), "images"),
        (lambda: visualize.TransformerSnapshots(np.zeros((1, 3, 3, 1))), "log_dir"),
        (
            lambda: visualize.TransformerSnapshots(np.zeros((1, 3, 3, 1)), png_dir="x", every=0),
            "every",
        ),
    ],
)
def test_bad_input_names_the_argument(call, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        call()


def test_callback_with_a_name_not_in_the_model(tmp_path):
    model = small_model()
    model.compile("sgd", "mse")
    snapshots = visualize.TransformerSnapshots(images(1), layer="nope", png_dir=tmp_path)
    with pytest.raises(ValueError, match="Received: layer='nope'"):
        model.fit(images(2), np.zeros((2, 3)), epochs=1, verbose=0, callbacks=[snapshots])
