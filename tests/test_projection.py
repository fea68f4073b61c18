"""Depth projection of volumes to images (the paper's appendix A.3): the op against
hand-checked numbers, its gradient, the layer test, behind a 3-D transformer, saving,
bad input."""

import keras
import numpy as np
import pytest

import keras_stn
from keras_stn import ops
from tests import testing
from tests.testing import arange_images
from tests.testing import assert_value_error_names

# (1, depth 2, height 2, width 3, 1): depth 0 holds 0..5, depth 1 holds 6..11.
VOLUME = arange_images((1, 2, 2, 3, 1))
HAND = {
    "sum": [[6, 8, 10], [12, 14, 16]],
    "mean": [[3, 4, 5], [6, 7, 8]],
    "max": [[6, 7, 8], [9, 10, 11]],
}


@pytest.mark.parametrize("reduction", sorted(HAND))
def test_projection_by_hand(reduction):
    out = np.asarray(ops.project_depth(VOLUME, reduction))
    assert out.shape == (1, 2, 3, 1)
    np.testing.assert_array_equal(out[0, ..., 0], HAND[reduction])


@pytest.mark.parametrize("reduction", sorted(HAND))
def test_channels_first_matches_channels_last(rng, reduction):
    volumes = rng.normal(size=(2, 4, 5, 6, 3)).astype("float32")
    last = np.asarray(ops.project_depth(volumes, reduction))
    first = ops.project_depth(np.moveaxis(volumes, -1, 1), reduction, "channels_first")
    np.testing.assert_allclose(np.moveaxis(np.asarray(first), 1, -1), last, rtol=1e-6)


def test_default_is_the_sum_and_integer_volumes_read_as_float32():
    out = ops.project_depth(VOLUME.astype("int32"))
    assert testing.dtype_of(out) == "float32"
    np.testing.assert_array_equal(np.asarray(out)[0, ..., 0], HAND["sum"])


@pytest.mark.parametrize("reduction, expected", [("sum", 1.0), ("mean", 0.5)])
def test_gradient_spreads_over_the_depth(reduction, expected):
    _, (gradient,) = testing.value_and_gradients(
        lambda v: keras.ops.sum(ops.project_depth(v, reduction)), VOLUME
    )
    np.testing.assert_array_equal(gradient, np.full(VOLUME.shape, expected, "float32"))


def test_max_gradient_goes_to_the_largest_voxel():
    volume = np.array([[[[[1.0]]], [[[3.0]]], [[[2.0]]]]], "float32")  # (1, 3, 1, 1, 1)
    _, (gradient,) = testing.value_and_gradients(
        lambda v: keras.ops.sum(ops.project_depth(v, "max")), volume
    )
    np.testing.assert_array_equal(gradient.reshape(-1), [0.0, 1.0, 0.0])


@pytest.mark.parametrize(
    "init_kwargs, shape, expected",
    [
        ({}, (2, 4, 5, 6, 3), (2, 5, 6, 3)),
        ({"reduction": "mean"}, (2, 4, 5, 6, 3), (2, 5, 6, 3)),
        ({"reduction": "max", "data_format": "channels_first"}, (2, 3, 4, 5, 6), (2, 3, 5, 6)),
    ],
)
def test_layer(init_kwargs, shape, expected):
    testing.run_layer_test(
        keras_stn.DepthProjection, init_kwargs, testing.random_images(shape), expected
    )


def test_layer_equals_the_op_and_accepts_an_unknown_depth():
    layer = keras_stn.DepthProjection("mean")
    symbolic = layer(keras.Input((None, 2, 3, 1)))
    assert tuple(symbolic.shape) == (None, 2, 3, 1)
    np.testing.assert_array_equal(layer(VOLUME), ops.project_depth(VOLUME, "mean"))


def test_identity_transformer_then_projection_is_the_projection():
    volumes = testing.random_images((2, 6, 7, 8, 1))
    model = keras.Sequential([
        keras.Input((6, 7, 8, 1)),
        keras_stn.SpatialTransformer("affine3d"),
        keras_stn.DepthProjection(),
    ])
    np.testing.assert_array_equal(model(volumes), ops.project_depth(volumes))


def test_in_a_model_trains_and_saves(tmp_path):
    volumes = testing.random_images((4, 8, 10, 12, 1))
    model = keras.Sequential([
        keras.Input((8, 10, 12, 1)),
        keras_stn.SpatialTransformer("affine3d", output_size=(4, 6, 6)),
        keras_stn.DepthProjection("sum"),
        keras.layers.Conv2D(2, 3),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
    ])
    assert tuple(model.output_shape) == (None, 2)
    model.compile("adam", "mse", jit_compile=True)
    history = model.fit(volumes, np.ones((4, 2)), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    testing.run_saving_test({"projected": model}, volumes[:2], tmp_path)


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: ops.project_depth(np.zeros((1, 4, 4, 1), "float32")), "volumes"),
        (lambda: ops.project_depth(VOLUME, "median"), "reduction"),
        (lambda: ops.project_depth(VOLUME, "sum", "channels_middle"), "data_format"),
        (lambda: keras_stn.DepthProjection("mode"), "reduction"),
        (lambda: keras_stn.DepthProjection(data_format="nhwc"), "data_format"),
        (lambda: keras_stn.DepthProjection()(np.zeros((1, 4, 4, 1), "float32")), "inputs"),
    ],
    ids=["op_image", "op_reduction", "op_data_format", "reduction", "data_format", "image"],
)
def test_exception_names_the_argument(call, argument):
    assert_value_error_names(call, argument)
