"""The Sampler and GridGenerator layers: the layer test, in a model, .keras round
trip, mixed precision, bad input."""

import keras
import numpy as np
import pytest

import keras_stn
from tests import testing

IDENTITY = np.array([1, 0, 0, 0, 1, 0], "float32")
TPS = keras_stn.transforms.TPS(grid_shape=(2, 3))


def thetas(batch, seed=0):
    """Affine thetas near the identity."""
    noise = np.random.default_rng(seed).normal(0, 0.1, size=(batch, 6))
    return (IDENTITY + noise).astype("float32")


def grids(batch, height, width, seed=0):
    grid = np.random.default_rng(seed).uniform(-1.1, 1.1, (batch, height, width, 2))
    return grid.astype("float32")


def volume_grids(batch, depth, height, width, seed=0):
    grid = np.random.default_rng(seed).uniform(-1.1, 1.1, (batch, depth, height, width, 3))
    return grid.astype("float32")


# ---------------------------------------------------------------- the layer test


@pytest.mark.parametrize(
    "init_kwargs, images_shape, expected",
    [
        ({}, (2, 8, 7, 3), (2, 5, 6, 3)),
        (
            {"interpolation": "nearest", "padding_mode": "reflection", "align_corners": True},
            (2, 8, 7, 3),
            (2, 5, 6, 3),
        ),
        ({"padding_mode": "border", "data_format": "channels_first"}, (2, 3, 8, 7), (2, 3, 5, 6)),
    ],
)
def test_sampler_layer(init_kwargs, images_shape, expected):
    testing.run_layer_test(
        keras_stn.Sampler,
        init_kwargs,
        [testing.random_images(images_shape), grids(2, 5, 6)],
        expected_output_shape=expected,
    )


def test_sampler_layer_on_volumes():
    testing.run_layer_test(
        keras_stn.Sampler,
        {"padding_mode": "border"},
        [testing.random_images((2, 4, 5, 6, 3)), volume_grids(2, 2, 3, 4)],
        expected_output_shape=(2, 2, 3, 4, 3),
    )


def test_sampler_layer_on_channels_first_volumes():
    layer = keras_stn.Sampler(data_format="channels_first")
    volumes, grid = testing.random_images((2, 3, 4, 5, 6)), volume_grids(2, 3, 4, 3)
    symbolic = layer([keras.Input((3, 4, 5, 6)), keras.Input((3, 4, 3, 3))])
    assert tuple(symbolic.shape) == (None, 3, 3, 4, 3)
    expected = keras_stn.ops.sample(volumes, grid, data_format="channels_first")
    np.testing.assert_array_equal(layer([volumes, grid]), expected)


@pytest.mark.parametrize(
    "transform, theta",
    [
        ("affine", thetas(2)),
        ("attention", np.array([[0.5, 0.1, 0.0], [1.0, 0.0, -0.2]], "float32")),
        (TPS, (TPS.identity() + np.random.default_rng(0).normal(0, 0.1, (2, 12))).astype("f4")),
    ],
)
def test_grid_generator_layer(transform, theta):
    testing.run_layer_test(
        keras_stn.GridGenerator,
        {"transform": transform, "output_size": (5, 6), "align_corners": True},
        theta,
        expected_output_shape=(2, 5, 6, 2),
        float32_outputs=(0,),  # the grid stays float32 under mixed precision
    )


def test_grid_generator_layer_on_volumes():
    theta = np.eye(3, 4).reshape(1, 12) + np.random.default_rng(0).normal(0, 0.1, (2, 12))
    layer = keras_stn.GridGenerator("affine3d", output_size=(3, 4, 5))
    np.testing.assert_array_equal(
        layer(theta.astype("float32")), keras_stn.ops.affine_grid(theta.astype("float32"), (3, 4, 5))
    )
    testing.run_layer_test(
        keras_stn.GridGenerator,
        {"transform": "attention3d", "output_size": (3, 4, 5)},
        np.array([[0.5, 0.1, 0.0, 0.2], [1.0, 0.0, -0.2, 0.0]], "float32"),
        expected_output_shape=(2, 3, 4, 5, 3),
        float32_outputs=(0,),
    )


# ---------------------------------------------------------------- in a model


def grid_and_sampler_model():
    images = keras.Input((12, 10, 3))
    theta = keras.Input((6,))
    grid = keras_stn.GridGenerator("affine", output_size=(6, 5), name="grid")(theta)
    out = keras_stn.Sampler(padding_mode="reflection", name="sampler")([images, grid])
    return keras.Model([images, theta], [out, grid])


def test_grid_generator_and_sampler_in_a_model_equal_the_ops():
    model = grid_and_sampler_model()
    assert [tuple(t.shape) for t in model.outputs] == [(None, 6, 5, 3), (None, 6, 5, 2)]
    images, theta = testing.random_images((2, 12, 10, 3)), thetas(2)
    expected_grid = keras_stn.ops.affine_grid(theta, (6, 5))
    expected = keras_stn.ops.sample(images, expected_grid, padding_mode="reflection")
    out, grid = model([images, theta])
    np.testing.assert_array_equal(grid, expected_grid)
    np.testing.assert_array_equal(out, expected)


def test_sampler_fill_value_and_antialias_equal_the_ops():
    images = testing.random_images((2, 12, 10, 3))
    grid = keras_stn.ops.affine_grid(thetas(2) * np.array([2.5, 2.5, 1, 2.5, 2.5, 1], "float32"),
                                     (4, 4))
    options = {"padding_mode": "constant", "fill_value": [0.5, -1.0, 2.0], "antialias": True}
    layer = keras_stn.Sampler(**options)
    np.testing.assert_array_equal(
        layer([images, grid]), keras_stn.ops.sample(images, grid, **options)
    )
    # Both options change what is read: a zoom-out to 4x4 reads outside, and shrinks.
    plain = keras_stn.ops.sample(images, grid)
    assert np.abs(np.asarray(layer([images, grid])) - np.asarray(plain)).max() > 0.1
    restored = keras_stn.Sampler.from_config(layer.get_config())
    assert (restored.fill_value, restored.antialias) == ([0.5, -1.0, 2.0], True)
    with pytest.raises(ValueError, match="antialias=True.*Received: interpolation='nearest'"):
        keras_stn.Sampler(antialias=True, interpolation="nearest")


def test_grid_generator_and_sampler_keras_round_trip(tmp_path):
    model = grid_and_sampler_model()
    testing.run_saving_test(
        {"grid_and_sampler": model},
        [testing.random_images((2, 12, 10, 3)), thetas(2)],
        tmp_path,
    )


def test_sampler_trains_the_layers_before_it():
    # Gradients flow through the grid: a Dense that regresses theta learns.
    images = keras.Input((8, 8, 1))
    theta = keras.layers.Dense(
        6, kernel_initializer="zeros", bias_initializer=keras_stn.initializers.TransformIdentity()
    )(keras.layers.Flatten()(images))
    grid = keras_stn.GridGenerator("affine", output_size=(8, 8))(theta)
    model = keras.Model(images, keras_stn.Sampler()([images, grid]))
    data = testing.random_images((4, 8, 8, 1))
    np.testing.assert_array_equal(model(data), data)
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
    model.fit(data, np.roll(data, 1, axis=2), epochs=1, verbose=0)
    assert np.abs(keras.ops.convert_to_numpy(model.layers[2].kernel)).max() > 0


@pytest.mark.parametrize("policy", testing.MIXED_POLICIES)
def test_mixed_precision_grid_stays_float32_output_in_compute_dtype(policy):
    generator = keras_stn.GridGenerator("affine", output_size=(4, 4), dtype=policy)
    sampler = keras_stn.Sampler(dtype=policy)
    grid = generator(keras.ops.cast(IDENTITY[None], policy.split("_")[1]))
    assert testing.dtype_of(grid) == "float32"
    images = testing.random_images((1, 4, 4, 2))
    out = sampler([images, grid])
    assert testing.dtype_of(out) == sampler.compute_dtype == policy.split("_")[1]
    # The identity grid was computed in float32: the half-precision images come back.
    half = keras.ops.cast(images, sampler.compute_dtype)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")),
                                  keras.ops.convert_to_numpy(keras.ops.cast(half, "float32")))


# ---------------------------------------------------------------- bad input


def zeros(*shape):
    return np.zeros(shape, "float32")


@pytest.mark.parametrize(
    "cls, kwargs, inputs, argument",
    [
        # (layer, constructor arguments, what it is called on or None, the argument named)
        (keras_stn.Sampler, {}, zeros(1, 4, 4, 1), "inputs"),
        (keras_stn.Sampler, {}, [zeros(1, 4, 4, 1)] * 3, "inputs"),
        (keras_stn.Sampler, {}, [zeros(1, 4, 4), zeros(1, 4, 4, 2)], "images"),
        (keras_stn.Sampler, {}, [zeros(1, 4, 4, 1), zeros(1, 4, 4, 3)], "grid"),
        (keras_stn.Sampler, {}, [zeros(3, 4, 4, 1), zeros(1, 4, 4, 2)], "images"),
        (keras_stn.Sampler, {"interpolation": "bicubic"}, None, "interpolation"),
        (keras_stn.Sampler, {"padding_mode": "wrap"}, None, "padding_mode"),
        (keras_stn.Sampler, {"antialias": "yes"}, None, "antialias"),
        (keras_stn.Sampler, {"padding_mode": "constant", "fill_value": [1.0, 2.0]},
         [zeros(1, 4, 4, 3), zeros(1, 2, 2, 2)], "fill_value"),
        (keras_stn.Sampler, {"fill_value": 1.0}, None, "fill_value"),
        (keras_stn.GridGenerator, {}, None, "output_size"),
        (keras_stn.GridGenerator, {"output_size": (0, 3)}, None, "output_size"),
        (keras_stn.GridGenerator, {"transform": "shear", "output_size": (3, 3)}, None, "transform"),
        (keras_stn.GridGenerator, {"output_size": (3, 3)}, zeros(2, 4), "theta"),
        (keras_stn.GridGenerator, {"transform": "affine3d", "output_size": (3, 3)}, None,
         "output_size"),
        (keras_stn.GridGenerator, {"output_size": (3, 3, 3)}, None, "output_size"),
        (keras_stn.Sampler, {}, [zeros(1, 2, 4, 4, 1), zeros(1, 2, 4, 4, 2)], "grid"),
    ],
)
def test_exception_names_the_argument(cls, kwargs, inputs, argument):
    with pytest.raises(ValueError, match=rf"(?s)`{argument}`.*Received: "):
        layer = cls(**kwargs)
        layer(inputs)
