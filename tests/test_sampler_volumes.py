"""`keras_stn.ops.sample` on volumes `(batch, depth, height, width, channels)`: torch's
5-D `grid_sample` semantics (trilinear for `"bilinear"`), against the NumPy loop
reference, exact identities, finite differences and XLA."""

import itertools

import keras
import numpy as np
import pytest

from keras_stn import ops
from tests import reference
from tests.testing import arange_images
from tests.testing import assert_value_error_names
from tests.testing import random_images
from tests.testing import value_and_gradients

PADDINGS = ("zeros", "border", "reflection", "constant")
MODES = list(itertools.product(("bilinear", "nearest"), PADDINGS, (False, True)))


def identity_grid(batch, sizes, align_corners):
    """`(batch, D, H, W, 3)` pixel centres `(x, y, z)`, as torch's 5-D affine_grid."""
    z, y, x = (reference.base_coordinates(s, align_corners) for s in sizes)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    grid = np.stack([xx, yy, zz], axis=-1).astype("float32")
    return np.tile(grid[None], (batch, 1, 1, 1, 1))


@pytest.mark.parametrize("interpolation, padding_mode, align_corners", MODES)
def test_volume_sample_matches_reference(rng, interpolation, padding_mode, align_corners):
    volumes = random_images((2, 3, 4, 5, 2))
    grid = rng.uniform(-1.5, 1.5, size=(2, 2, 3, 4, 3)).astype("float32")
    out = ops.sample(volumes, grid, interpolation, padding_mode, align_corners,
                     fill_value=0.5 if padding_mode == "constant" else 0.0)
    expected = reference.grid_sample(volumes, grid, interpolation, padding_mode,
                                     align_corners, fill_value=0.5)
    assert tuple(out.shape) == (2, 2, 3, 4, 2)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("interpolation, padding_mode, align_corners", MODES)
def test_volume_identity_is_exact(interpolation, padding_mode, align_corners):
    volumes = arange_images((2, 3, 5, 4, 3))
    grid = identity_grid(2, (3, 5, 4), align_corners)
    out = ops.sample(volumes, grid, interpolation, padding_mode, align_corners)
    np.testing.assert_array_equal(out, volumes)


def test_volume_one_voxel_shift_along_depth_is_exact():
    # align_corners=True on depth 3: a shift of 1 in z is one voxel.
    volumes = arange_images((1, 3, 2, 2, 1))
    grid = identity_grid(1, (3, 2, 2), True)
    grid[..., 2] += 1.0
    out = np.asarray(ops.sample(volumes, grid, align_corners=True))
    np.testing.assert_array_equal(out[0, :2], volumes[0, 1:])
    np.testing.assert_array_equal(out[0, 2], 0.0)


def test_volume_channels_first_matches_channels_last(rng):
    volumes = random_images((2, 3, 4, 5, 2))
    grid = rng.uniform(-1.2, 1.2, size=(2, 2, 2, 2, 3)).astype("float32")
    last = ops.sample(volumes, grid, data_format="channels_last")
    first = ops.sample(np.moveaxis(volumes, -1, 1), grid, data_format="channels_first")
    np.testing.assert_allclose(np.moveaxis(np.asarray(first), 1, -1), last, atol=1e-6)


def _away_from_kinks(grid, sizes, align_corners, margin=0.05):
    """Moves each coordinate at least `margin` px from integer and half-integer pixels."""
    grid = grid.copy()
    for axis, size in zip((2, 1, 0), sizes):
        halves = 2.0 * reference.unnormalize(grid[..., axis], size, align_corners)
        nearest = np.round(halves)
        offset = halves - nearest
        close = np.abs(offset) < 2 * margin
        offset[close] = np.where(offset[close] < 0, -2.0, 2.0) * margin
        grid[..., axis] = reference.normalize((nearest + offset) / 2.0, size, align_corners)
    return grid


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("align_corners", (False, True))
def test_volume_gradients_match_finite_differences(rng, padding_mode, align_corners):
    sizes = (2, 3, 3)
    volumes = rng.uniform(size=(1, *sizes, 2))
    grid = _away_from_kinks(rng.uniform(-1.4, 1.4, size=(1, 2, 2, 2, 3)), sizes, align_corners)
    weights = rng.uniform(-1, 1, size=(1, 2, 2, 2, 2))
    fill = 0.75 if padding_mode == "constant" else 0.0

    def value(volumes, grid):
        out = ops.sample(volumes, grid, padding_mode=padding_mode,
                         align_corners=align_corners, fill_value=fill)
        return keras.ops.sum(out * weights)

    def numeric(volumes, grid):
        return float(keras.ops.convert_to_numpy(value(volumes, grid)))

    _, grads = value_and_gradients(value, volumes, grid)
    for which, analytic in enumerate(grads):
        args = [volumes, grid]
        finite = np.zeros_like(args[which])
        for index in np.ndindex(*args[which].shape):
            step = np.zeros_like(args[which])
            step[index] = 1e-6
            plus, minus = list(args), list(args)
            plus[which], minus[which] = args[which] + step, args[which] - step
            finite[index] = (numeric(*plus) - numeric(*minus)) / 2e-6
        np.testing.assert_allclose(analytic, finite, atol=1e-6)
    assert np.abs(grads[1]).max() > 0.05


def test_volume_compiled_equals_eager(rng):
    import tensorflow as tf

    volumes = random_images((2, 3, 4, 5, 2))
    grid = rng.uniform(-1.3, 1.3, size=(2, 3, 2, 4, 3)).astype("float32")

    def every_mode(volumes, grid):
        results = []
        for interpolation, padding_mode, align_corners in MODES:
            with tf.GradientTape() as tape:
                tape.watch([volumes, grid])
                out = ops.sample(volumes, grid, interpolation, padding_mode, align_corners)
                loss = tf.reduce_sum(out * tf.range(2, dtype=out.dtype))
            results.append(out)
            results.extend(tape.gradient(loss, [volumes, grid],
                                         unconnected_gradients=tf.UnconnectedGradients.ZERO))
        return results

    args = (tf.constant(volumes), tf.constant(grid))
    compiled = tf.function(every_mode, jit_compile=True)(*args)
    for result, eager in zip(compiled, every_mode(*args)):
        np.testing.assert_allclose(result, eager, atol=1e-5)


def test_volume_nonfinite_points_read_zero_without_gradient():
    volumes = random_images((1, 2, 3, 4, 1)) + 0.5
    grid = np.array([[[[[np.nan, 0, 0], [0, np.inf, 0], [0, 0, -np.inf], [0, 0, 0]]]]],
                    "float32")
    for padding_mode in ("zeros", "border", "reflection"):
        def value(volumes, grid):
            return keras.ops.sum(ops.sample(volumes, grid, padding_mode=padding_mode))

        _, (_, grid_grad) = value_and_gradients(value, volumes, grid)
        out = np.asarray(ops.sample(volumes, grid, padding_mode=padding_mode))
        np.testing.assert_array_equal(out[0, 0, 0, :3], 0.0)
        assert out[0, 0, 0, 3, 0] > 0.0
        assert np.isfinite(grid_grad).all()
        np.testing.assert_array_equal(grid_grad[0, 0, 0, :3], 0.0)


VOLUMES = np.zeros((1, 3, 4, 5, 2), "float32")


@pytest.mark.parametrize(
    "argument, call",
    [
        ("grid", lambda: ops.sample(VOLUMES, np.zeros((1, 2, 2, 2, 2), "float32"))),
        ("grid", lambda: ops.sample(VOLUMES, np.zeros((1, 2, 2, 3), "float32"))),
        ("grid", lambda: ops.sample(VOLUMES[0], np.zeros((3, 2, 2, 3), "float32"))),
        ("images", lambda: ops.sample(VOLUMES[None], np.zeros((1, 2, 2, 2, 3), "float32"))),
    ],
    ids=["last_axis_2", "image_grid_for_volume", "volume_grid_for_image", "rank_6"],
)
def test_exception_volume_names_the_bad_argument(argument, call):
    assert_value_error_names(call, argument)
