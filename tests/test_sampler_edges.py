"""`keras_stn.ops.sample` at and beyond the image's edges: torch's gradient convention
on the border pixels, snapping, constant padding with `fill_value`, and
`keras_stn.ops.validity_mask`.

Pixel units: pixel k's centre is at k. The slopes below are computed by hand from the
image values, not from our own output.
"""

import itertools

import keras
import numpy as np
import pytest

from keras_stn import ops
from tests import reference
from tests.testing import assert_value_error_names
from tests.testing import random_images
from tests.testing import value_and_gradients

ROW = np.array([1.0, 2.0, 4.0, 8.0])  # slopes between centres: 1, 2, 4
ALIGNS = (False, True)


def read_row(x, padding_mode, align_corners, dtype="float32", **kwargs):
    """Reads ROW (in two equal image rows) at (x, 0): the value and d value / d x."""
    images = np.tile(ROW, (1, 2, 1)).reshape(1, 2, 4, 1).astype(dtype)
    grid = np.array([[[[x, 0.0]]]], dtype)

    def value(images, grid):
        return keras.ops.sum(ops.sample(images, grid, padding_mode=padding_mode,
                                        align_corners=align_corners, **kwargs))

    out, (_, grid_grad) = value_and_gradients(value, images, grid)
    return float(out), float(np.ravel(grid_grad)[0])


def normalised(pixel, size, align_corners):
    return reference.normalize(pixel, size, align_corners)


# ------------------------------------------------- the border pixels' centres (torch)


@pytest.mark.parametrize("padding_mode", ["border", "reflection"])
@pytest.mark.parametrize("align_corners", ALIGNS)
@pytest.mark.parametrize("pixel, value", [(0.0, 1.0), (3.0, 8.0)])
def test_grid_gradient_is_zero_exactly_on_a_border_pixel_centre(
    padding_mode, align_corners, pixel, value
):
    # torch's clip_coordinates_set_grad counts the border pixels' centres as outside:
    # the coordinate gradient is 0 there. The case: align_corners=True, x = +1,
    # border padding, where a read of the zero padding gave -12.
    x = normalised(pixel, 4, align_corners)
    out, slope = read_row(x, padding_mode, align_corners, dtype="float64")
    assert out == pytest.approx(value)
    assert slope == 0.0


@pytest.mark.parametrize("align_corners", ALIGNS)
def test_zero_padding_keeps_the_slope_towards_the_padding_on_the_last_centre(align_corners):
    # torch, zeros: at the last centre the cell is [3, 4], tap 4 reads 0: slope -8 px.
    x = normalised(3.0, 4, align_corners)
    _, slope = read_row(x, "zeros", align_corners, dtype="float64")
    scale = 1.5 if align_corners else 2.0  # pixels per normalised unit
    assert slope == pytest.approx(-8.0 * scale)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection", "constant"])
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_identity_grid_gradient_on_the_edges_follows_torch(padding_mode, align_corners):
    # The ramp 3 x + 0.5 y read by an identity grid: interior slopes everywhere, and on
    # the first and last column (row) the x (y) slope is 0 under border/reflection.
    height, width = 5, 7
    ys, xs = np.mgrid[0:height, 0:width].astype("float32")
    images = (3.0 * xs + 0.5 * ys)[None, :, :, None]
    theta = np.array([[1, 0, 0, 0, 1, 0]], "float32")
    grid = np.asarray(ops.affine_grid(theta, (height, width), align_corners))

    def value(grid):
        return keras.ops.sum(ops.sample(images, grid, padding_mode=padding_mode,
                                        align_corners=align_corners))

    _, (grad,) = value_and_gradients(value, grid)
    scale_x = (width - 1) / 2 if align_corners else width / 2
    scale_y = (height - 1) / 2 if align_corners else height / 2
    expected_x = np.full((height, width), 3.0 * scale_x)
    expected_y = np.full((height, width), 0.5 * scale_y)
    if padding_mode in ("border", "reflection"):
        expected_x[:, [0, -1]] = 0.0
        expected_y[[0, -1], :] = 0.0
    else:
        # Zero padding: the last centre's cell reaches the padding (value 0).
        expected_x[:, -1] = -(3.0 * (width - 1) + 0.5 * ys[:, -1]) * scale_x
        expected_y[-1, :] = -(3.0 * xs[-1] + 0.5 * (height - 1)) * scale_y
        # The first centre is a knife edge for torch and for us alike: rounding noise
        # in the grid puts it just below 0 (cell [-1, 0], slope from the padding) or on
        # or above it (cell [0, 1], the interior slope). Either one-sided slope is right.
        from_padding_x, from_padding_y = 0.5 * ys[:, 0] * scale_x, 3.0 * xs[0] * scale_y
        for got, inside, outside in ((grad[0, :, 0, 0], expected_x[:, 0], from_padding_x),
                                     (grad[0, 0, :, 1], expected_y[0], from_padding_y)):
            assert np.all(np.isclose(got, inside, rtol=1e-5) | np.isclose(got, outside,
                                                                           atol=1e-4))
        grad = grad[:, 1:, 1:]
        expected_x, expected_y = expected_x[1:, 1:], expected_y[1:, 1:]
    np.testing.assert_allclose(grad[0, ..., 0], expected_x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(grad[0, ..., 1], expected_y, rtol=1e-5, atol=1e-4)


def _just_below(pixel, size, align_corners, dtype):
    """A normalised x whose pixel coordinate, computed as the sampler computes it, is
    below `pixel` by rounding noise (within the snapping tolerance)."""
    dtype = np.dtype(dtype)
    x = dtype.type(normalised(pixel, size, align_corners))
    for _ in range(64):
        x = np.nextafter(x, dtype.type(-2))
        back = ((x + dtype.type(1)) * dtype.type(0.5) * dtype.type(size - 1) if align_corners
                else ((x + dtype.type(1)) * dtype.type(size) - dtype.type(1)) * dtype.type(0.5))
        if back < pixel:
            return x, pixel - back
    raise AssertionError("no coordinate found")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_snapping_moves_the_value_not_the_gradient(dtype, align_corners):
    # A point a rounding error below pixel 2 reads pixel 2 exactly (snapping, for exact
    # identities), but its gradient is torch's: the cell [1, 2] below it, slope 2 px.
    # Exactly on pixel 2 torch takes the cell [2, 3] above: slope 4 px.
    scale = 1.5 if align_corners else 2.0
    x, below = _just_below(2.0, 4, align_corners, dtype)
    tolerance = 4 * np.finfo(dtype).eps * 4
    assert 0 < below <= tolerance
    out, slope = read_row(float(x), "zeros", align_corners, dtype=dtype)
    assert out == 4.0
    assert slope == pytest.approx(2.0 * scale, rel=1e-5)
    on = normalised(2.0, 4, align_corners)
    _, slope_on = read_row(on, "zeros", align_corners, dtype="float64")
    assert slope_on == pytest.approx(4.0 * scale)


# ------------------------------------------------------------------ constant padding


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("align_corners", ALIGNS)
@pytest.mark.parametrize("fill_value", [0.25, [-1.0, 0.5, 2.0]])
def test_constant_padding_matches_reference(rng, interpolation, align_corners, fill_value):
    images = random_images((2, 5, 6, 3))
    grid = rng.uniform(-1.6, 1.6, size=(2, 4, 7, 2)).astype("float32")
    out = ops.sample(images, grid, interpolation=interpolation, padding_mode="constant",
                     align_corners=align_corners, fill_value=fill_value)
    expected = reference.grid_sample(images, grid, interpolation, "constant", align_corners,
                                     fill_value=fill_value)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_constant_padding_zooming_out_of_a_flat_image_shows_no_frame():
    # Normalised inputs have mean 0, so zero padding shows as a frame; with the fill
    # set to the image's own level, zooming out reads that level everywhere.
    level = -0.7
    images = np.full((1, 8, 8, 1), level, "float32")
    theta = np.array([[2.0, 0, 0, 0, 2.0, 0]], "float32")  # the image in the middle half
    grid = ops.affine_grid(theta, (8, 8))
    framed = np.asarray(ops.sample(images, grid))
    filled = np.asarray(ops.sample(images, grid, padding_mode="constant", fill_value=level))
    assert framed[0, 0, 0, 0] == 0.0 and framed[0, 4, 4, 0] == pytest.approx(level)
    np.testing.assert_allclose(filled, level, rtol=1e-6)


@pytest.mark.parametrize("align_corners", ALIGNS)
def test_constant_padding_identity_is_exact(align_corners):
    images = random_images((2, 5, 7, 3))
    theta = np.tile(np.array([[1, 0, 0, 0, 1, 0]], "float32"), (2, 1))
    grid = ops.affine_grid(theta, (5, 7), align_corners)
    out = ops.sample(images, grid, padding_mode="constant", fill_value=[0.1, 0.2, 0.3],
                     align_corners=align_corners)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_constant_padding_nonfinite_points_read_the_fill(interpolation):
    images = random_images((1, 4, 5, 2))
    grid = np.array([[[[np.nan, 0.1], [0.3, np.inf], [-np.inf, np.nan], [0.0, 0.0]]]],
                    "float32")

    def value(images, grid):
        out = ops.sample(images, grid, interpolation=interpolation, padding_mode="constant",
                         fill_value=[3.0, -2.0])
        return keras.ops.sum(out * np.array([1.0, 10.0], "float32"))

    total, (image_grad, grid_grad) = value_and_gradients(value, images, grid)
    out = np.asarray(ops.sample(images, grid, interpolation=interpolation,
                                padding_mode="constant", fill_value=[3.0, -2.0]))
    np.testing.assert_array_equal(out[0, 0, :3], [[3.0, -2.0]] * 3)
    assert np.isfinite(image_grad).all() and np.isfinite(grid_grad).all()
    np.testing.assert_array_equal(grid_grad[0, 0, :3], 0.0)


@pytest.mark.parametrize("align_corners", ALIGNS)
def test_constant_padding_gradients_match_finite_differences(rng, align_corners):
    images = rng.uniform(size=(1, 4, 5, 2))
    grid = rng.uniform(-1.4, 1.4, size=(1, 3, 3, 2))
    weights = rng.uniform(-1, 1, size=(1, 3, 3, 2))

    def value(images, grid):
        out = ops.sample(images, grid, padding_mode="constant", fill_value=[0.5, -1.5],
                         align_corners=align_corners)
        return keras.ops.sum(out * weights)

    def numeric(images, grid):
        return float(keras.ops.convert_to_numpy(value(images, grid)))

    _, (image_grad, grid_grad) = value_and_gradients(value, images, grid)
    for array, analytic in ((images, image_grad), (grid, grid_grad)):
        finite = np.zeros_like(array)
        for index in np.ndindex(*array.shape):
            step = np.zeros_like(array)
            step[index] = 1e-6
            args = (images + step, grid) if array is images else (images, grid + step)
            minus = (images - step, grid) if array is images else (images, grid - step)
            finite[index] = (numeric(*args) - numeric(*minus)) / 2e-6
        np.testing.assert_allclose(analytic, finite, atol=1e-6)
    assert np.abs(grid_grad).max() > 0.1


IMAGES = np.zeros((1, 5, 7, 3), "float32")
GRID = np.zeros((1, 4, 6, 2), "float32")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding_mode="constant", fill_value=[1.0, 2.0]),
        dict(padding_mode="constant", fill_value=[[1.0, 2.0, 3.0]]),
        dict(padding_mode="constant", fill_value="grey"),
        dict(padding_mode="constant", fill_value=float("nan")),
        dict(padding_mode="constant", fill_value=True),
        dict(padding_mode="zeros", fill_value=0.5),
        dict(padding_mode="border", fill_value=[0.0, 0.0, 1.0]),
    ],
    ids=["too_few", "rank_2", "string", "nan", "bool", "zeros_mode", "border_mode"],
)
def test_exception_bad_fill_value_is_named(kwargs):
    assert_value_error_names(lambda: ops.sample(IMAGES, GRID, **kwargs), "fill_value")


# --------------------------------------------------------------------- validity mask


def test_validity_mask_by_hand():
    # Width 4, align_corners=False: pixel p = ((x + 1) * 4 - 1) / 2. Inside weight along
    # x: 1 in [0, 3], p + 1 in [-1, 0], 4 - p in [3, 4], else 0.
    xs = [0.0, -1.0, -1.25, 1.125, 0.875, 1.5, float("nan")]
    pixels = [1.5, -0.5, -1.0, 3.75, 3.25, 4.5, None]
    expected = [1.0, 0.5, 0.0, 0.25, 0.75, 0.0, 0.0]
    grid = np.array([[[[x, 0.0] for x in xs]]], "float32")
    mask = np.asarray(ops.validity_mask(grid, (4, 4)))
    assert pixels[1] == reference.unnormalize(-1.0, 4, False)
    np.testing.assert_allclose(mask[0, 0, :, 0], expected, atol=1e-6)
    nearest = np.asarray(ops.validity_mask(grid, (4, 4), interpolation="nearest"))
    np.testing.assert_array_equal(nearest[0, 0, :, 0], [1, 1, 0, 0, 1, 0, 0])


@pytest.mark.parametrize("interpolation, align_corners",
                         list(itertools.product(["bilinear", "nearest"], ALIGNS)))
@pytest.mark.parametrize("sizes", [(5, 6), (3, 4, 5)], ids=["image", "volume"])
def test_validity_mask_is_a_zero_padded_read_of_ones(rng, interpolation, align_corners, sizes):
    rank = len(sizes)
    grid = rng.uniform(-1.5, 1.5, size=(2, 3, 4, *(rank - 2) * (2,), rank)).astype("float32")
    mask = ops.validity_mask(grid, sizes, interpolation, align_corners)
    ones = np.ones((2, *sizes, 1))
    expected = reference.grid_sample(ones, grid, interpolation, "zeros", align_corners)
    np.testing.assert_allclose(mask, expected, atol=1e-5)


@pytest.mark.parametrize(
    "argument, call",
    [
        ("image_size", lambda: ops.validity_mask(GRID, (4,))),
        ("image_size", lambda: ops.validity_mask(GRID, (4, 0))),
        ("grid", lambda: ops.validity_mask(GRID, (2, 4, 4))),
        ("interpolation", lambda: ops.validity_mask(GRID, (4, 4), "cubic")),
    ],
    ids=["one_size", "zero_size", "volume_size", "interpolation"],
)
def test_exception_validity_mask_names_the_bad_argument(argument, call):
    assert_value_error_names(call, argument)
