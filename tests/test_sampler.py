"""`keras_stn.ops.sample` against the NumPy reference, hand-checked answers and
finite differences.

Coordinates: grids are (B, Ho, Wo, 2) with the last axis (x, y), normalised to [-1, 1];
"pixel units" below means torch's unnormalised index, where pixel centres sit at
0 .. size - 1 (align_corners=False puts -1 / +1 on the outer edges of the corner pixels,
align_corners=True on their centres).
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from keras_stn import ops
from tests import reference
from tests.testing import arange_images
from tests.testing import assert_value_error_names

INTERPOLATIONS = ("bilinear", "nearest")
PADDINGS = ("zeros", "border", "reflection")
ALIGNS = (False, True)
MODES = list(itertools.product(INTERPOLATIONS, PADDINGS, ALIGNS))
IDENTITY = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])


def identity_grid(batch, size, align_corners, dtype="float32"):
    return reference.affine_grid(np.tile(IDENTITY, (batch, 1)), size, align_corners).astype(
        dtype
    )


def random_grid(rng, batch, out_size, image_size, align_corners, low=-1.6, high=1.6,
                margin=0.0, dtype="float32"):
    """Uniform normalised coordinates; with `margin`, every coordinate is then moved at
    least `margin` pixel units away from integer and half-integer pixel positions (where
    nearest rounding flips, bilinear has kinks and reflection folds)."""
    grid = rng.uniform(low, high, size=(batch, *out_size, 2))
    if margin:
        height, width = image_size
        for axis, size in ((0, width), (1, height)):
            halves = 2.0 * reference.unnormalize(grid[..., axis], size, align_corners)
            nearest = np.round(halves)
            offset = halves - nearest
            too_close = np.abs(offset) < 2.0 * margin
            offset[too_close] = np.where(offset[too_close] < 0, -2.0, 2.0) * margin
            grid[..., axis] = reference.normalize(
                (nearest + offset) / 2.0, size, align_corners
            )
    return grid.astype(dtype)


def distance_to_half_pixels(grid, image_size, align_corners):
    """Smallest distance, in pixel units, from a coordinate to a nearest-rounding tie."""
    height, width = image_size
    return min(
        np.abs(np.mod(reference.unnormalize(grid[..., axis], size, align_corners), 1.0)
               - 0.5).min()
        for axis, size in ((0, width), (1, height))
    )


def sample(images, grid, **kwargs):
    return np.asarray(ops.sample(images, grid, **kwargs))


# ----------------------------------------------------------- feature: exact answers


@pytest.mark.parametrize("size", [(5, 7), (8, 3)])
@pytest.mark.parametrize("channels", [1, 3, 64])
@pytest.mark.parametrize("interpolation, padding_mode, align_corners", MODES)
def test_identity_is_exact_for_affine_identity(
    size, channels, interpolation, padding_mode, align_corners
):
    images = arange_images((2, *size, channels))
    grid = ops.affine_grid(np.tile(IDENTITY, (2, 1)).astype("float32"), size, align_corners)
    out = sample(
        images,
        grid,
        interpolation=interpolation,
        padding_mode=padding_mode,
        align_corners=align_corners,
    )
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_one_pixel_translation_is_exact(padding_mode, align_corners):
    # Sizes where one pixel is exactly representable in normalised units:
    # 2 / W (align_corners=False) or 2 / (W - 1) (True).
    height, width = (4, 8) if not align_corners else (3, 5)
    pixel_x = 2.0 / (width - align_corners)
    pixel_y = 2.0 / (height - align_corners)
    images = arange_images((1, height, width, 2)) + 1.0
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)),
                    mode="constant" if padding_mode == "zeros" else "edge")

    # x_s = x_t + one pixel: every output pixel reads its right-hand neighbour.
    theta = np.array([[1, 0, pixel_x, 0, 1, 0]], "float32")
    out = sample(images, ops.affine_grid(theta, (height, width), align_corners),
                 padding_mode=padding_mode, align_corners=align_corners)
    np.testing.assert_array_equal(out, padded[:, 1:-1, 2:])

    # y_s = y_t - one pixel: every output pixel reads the pixel above it.
    theta = np.array([[1, 0, 0, 0, 1, -pixel_y]], "float32")
    out = sample(images, ops.affine_grid(theta, (height, width), align_corners),
                 padding_mode=padding_mode, align_corners=align_corners)
    np.testing.assert_array_equal(out, padded[:, :-2, 1:-1])


@pytest.mark.parametrize("size", [(6, 6), (4, 7)])
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_rotation_by_90_degrees_is_exact(size, align_corners):
    height, width = size
    images = arange_images((2, height, width, 3))
    # x_s = -y_t, y_s = x_t: output (i, j) reads input (j, W - 1 - i), i.e. np.rot90.
    theta = np.tile(np.array([0, -1, 0, 1, 0, 0], "float32"), (2, 1))
    out = sample(images, ops.affine_grid(theta, (width, height), align_corners),
                 align_corners=align_corners)
    np.testing.assert_array_equal(out, np.rot90(images, k=1, axes=(1, 2)))


@pytest.mark.parametrize("align_corners", ALIGNS)
def test_transpose_of_non_square_image_is_exact(align_corners):
    images = arange_images((2, 3, 7, 2))
    theta = np.tile(np.array([0, 1, 0, 1, 0, 0], "float32"), (2, 1))
    out = sample(images, ops.affine_grid(theta, (7, 3), align_corners),
                 align_corners=align_corners)
    np.testing.assert_array_equal(out, images.transpose(0, 2, 1, 3))


def test_halving_with_identity_is_two_by_two_average_pooling():
    # align_corners=False, output W/2: x_t lands at pixel 2j + 0.5, the midpoint of a pair.
    images = arange_images((1, 4, 8, 2)) ** 1.5
    out = sample(images, ops.affine_grid(IDENTITY[None].astype("float32"), (2, 4)))
    pooled = images.reshape(1, 2, 2, 4, 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(out, pooled, rtol=1e-6)


def test_nearest_rounds_half_to_even():
    # Pixel-unit x of 0.5, 1.5, 2.5 on a width-4 row: torch's nearbyint picks 0, 2, 2.
    images = np.array([10.0, 20.0, 30.0, 40.0], "float32").reshape(1, 1, 4, 1)
    grid = np.array([[[[-0.5, 0.0], [0.0, 0.0], [0.5, 0.0]]]], "float32")
    out = sample(images, grid, interpolation="nearest")
    np.testing.assert_array_equal(out.ravel(), [10.0, 30.0, 30.0])
    # Halving an 4x8 image with nearest therefore keeps the even rows and columns.
    images = arange_images((1, 4, 8, 1))
    out = sample(images, ops.affine_grid(IDENTITY[None].astype("float32"), (2, 4)),
                 interpolation="nearest")
    np.testing.assert_array_equal(out, images[:, ::2, ::2])


def test_doubling_with_border_padding_equals_tf_image_resize(rng):
    # tf.image.resize("bilinear") uses half-pixel centres and clamps at the edges: the
    # same as align_corners=False with border padding.
    images = rng.uniform(size=(2, 4, 6, 3)).astype("float32")
    grid = ops.affine_grid(np.tile(IDENTITY, (2, 1)).astype("float32"), (8, 12))
    out = sample(images, grid, padding_mode="border")
    expected = tf.image.resize(images, (8, 12), method="bilinear", antialias=False)
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("out_size", [(4, 8), (8, 16), (2, 4)], ids=["equal", "doubled", "halved"])
@pytest.mark.parametrize("interpolation, padding_mode, align_corners", MODES)
def test_output_size_equal_doubled_halved_match_reference(
    rng, out_size, interpolation, padding_mode, align_corners
):
    images = rng.uniform(size=(1, 4, 8, 2)).astype("float32")
    # Not round numbers: round ones put structured grids on nearest's rounding ties.
    theta = np.array([[1.0731, 0.2289, 0.1137, -0.1319, 0.9123, -0.0571]])
    reference_grid = reference.affine_grid(theta, out_size, align_corners)
    assert distance_to_half_pixels(reference_grid, (4, 8), align_corners) > 5e-4
    grid = ops.affine_grid(theta.astype("float32"), out_size, align_corners)
    out = sample(images, grid, interpolation=interpolation, padding_mode=padding_mode,
                 align_corners=align_corners)
    expected = reference.grid_sample(
        images, reference_grid, interpolation, padding_mode, align_corners)
    assert out.shape == (1, *out_size, 2)
    np.testing.assert_allclose(out, expected, atol=1e-5)


# ---------------------------------------------------------------- against the reference


@pytest.mark.parametrize("interpolation, padding_mode, align_corners", MODES)
def test_sample_matches_reference_for_every_mode(rng, interpolation, padding_mode, align_corners):
    images = rng.uniform(size=(2, 5, 7, 3)).astype("float32")
    margin = 0.02 if interpolation == "nearest" else 0.0
    grid = random_grid(rng, 2, (4, 6), (5, 7), align_corners, margin=margin)
    assert (np.abs(grid) > 1.2).any()  # the grid reaches well outside the image
    out = sample(images, grid, interpolation=interpolation, padding_mode=padding_mode,
                 align_corners=align_corners)
    expected = reference.grid_sample(images, grid, interpolation, padding_mode, align_corners)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_reflection_matches_reference_after_many_folds(rng, interpolation, align_corners):
    images = rng.uniform(size=(1, 3, 4, 2)).astype("float32")
    grid = random_grid(rng, 1, (5, 9), (3, 4), align_corners, low=-6.0, high=6.0,
                       margin=0.02)
    out = sample(images, grid, interpolation=interpolation, padding_mode="reflection",
                 align_corners=align_corners)
    expected = reference.grid_sample(images, grid, interpolation, "reflection", align_corners)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("size", [(1, 5), (4, 1), (1, 1)])
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_sample_matches_reference_on_single_pixel_axes(rng, size, padding_mode, align_corners):
    # align_corners=True on a one-pixel axis: every coordinate unnormalises to 0 (torch).
    images = rng.uniform(0.5, 1.0, size=(2, *size, 2)).astype("float32")
    grid = random_grid(rng, 2, (3, 4), size, align_corners)
    out = sample(images, grid, padding_mode=padding_mode, align_corners=align_corners)
    expected = reference.grid_sample(images, grid, "bilinear", padding_mode, align_corners)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_channels_first_matches_channels_last(rng, interpolation):
    images = rng.uniform(size=(2, 5, 7, 3)).astype("float32")
    grid = random_grid(rng, 2, (4, 6), (5, 7), False, margin=0.02)
    last = sample(images, grid, interpolation=interpolation, padding_mode="reflection")
    first = sample(np.transpose(images, (0, 3, 1, 2)), grid, interpolation=interpolation,
                   padding_mode="reflection", data_format="channels_first")
    assert first.shape == (2, 3, 4, 6)
    np.testing.assert_allclose(first, np.transpose(last, (0, 3, 1, 2)), atol=1e-6)


@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_float64_in_float64_out_matches_reference(rng, padding_mode):
    images = rng.uniform(size=(2, 5, 7, 3))
    grid = random_grid(rng, 2, (4, 6), (5, 7), False, dtype="float64")
    out = ops.sample(images, grid, padding_mode=padding_mode)
    assert out.dtype == tf.float64
    expected = reference.grid_sample(images, grid, "bilinear", padding_mode)
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_uint8_images_are_read_as_float32(rng):
    images = rng.integers(0, 256, size=(2, 5, 7, 3)).astype("uint8")
    grid = random_grid(rng, 2, (4, 6), (5, 7), False)
    out = ops.sample(images, grid)
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(out, ops.sample(images.astype("float32"), grid))
    np.testing.assert_allclose(out, reference.grid_sample(images, grid), atol=1e-3)


@pytest.mark.parametrize("dtype, atol", [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_low_precision_images_keep_their_dtype(rng, dtype, atol):
    images = rng.uniform(size=(2, 5, 7, 3)).astype("float32")
    grid = random_grid(rng, 2, (4, 6), (5, 7), False, margin=0.02)
    low = tf.cast(images, dtype)
    out = ops.sample(low, grid)
    assert out.dtype == tf.as_dtype(dtype)
    full = ops.sample(tf.cast(low, "float32"), grid)
    np.testing.assert_allclose(tf.cast(out, "float32"), full, atol=atol)


# ------------------------------------------------------------ cardinality and batches


def test_batch_size_is_not_assumed_static(rng):
    images = rng.uniform(size=(3, 5, 7, 2)).astype("float32")
    grid = random_grid(rng, 3, (4, 6), (5, 7), False)
    function = tf.function(
        lambda images, grid: ops.sample(images, grid),
        input_signature=[
            tf.TensorSpec([None, 5, 7, 2], tf.float32),
            tf.TensorSpec([None, 4, 6, 2], tf.float32),
        ],
    )
    assert function.get_concrete_function().structured_outputs.shape.as_list() == [
        None, 4, 6, 2]
    for batch in (1, 3):
        np.testing.assert_allclose(
            function(images[:batch], grid[:batch]),
            reference.grid_sample(images[:batch], grid[:batch]),
            atol=1e-5,
        )


def test_empty_batch_forward_and_backward():
    images = tf.zeros((0, 5, 7, 3))
    grid = tf.zeros((0, 4, 6, 2))
    with tf.GradientTape() as tape:
        tape.watch([images, grid])
        out = ops.sample(images, grid)
        loss = tf.reduce_sum(out)
    assert tuple(out.shape) == (0, 4, 6, 3)
    image_grad, grid_grad = tape.gradient(loss, [images, grid])
    assert tuple(image_grad.shape) == (0, 5, 7, 3)
    assert tuple(grid_grad.shape) == (0, 4, 6, 2)


# --------------------------------------------------------- non-finite and huge points


NONFINITE = [np.nan, np.inf, -np.inf]
HUGE = [1e20, -1e20]


def special_points_grid():
    """(1, 1, N, 2): each special value in x and in y, then two ordinary points."""
    points = []
    for value in NONFINITE + HUGE:
        points += [(value, 0.1), (0.3, value)]
    points += [(np.nan, np.nan), (0.3, -0.2), (-0.7, 0.55)]
    return np.array(points, "float32")[None, None]


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_nonfinite_and_huge_grid_points_read_safely(rng, interpolation, padding_mode):
    images = tf.constant(rng.uniform(0.5, 1.0, size=(1, 4, 5, 2)).astype("float32"))
    grid = tf.constant(special_points_grid())
    with tf.GradientTape() as tape:
        tape.watch([images, grid])
        out = ops.sample(images, grid, interpolation=interpolation, padding_mode=padding_mode)
        loss = tf.reduce_sum(out)
    # Nearest has no path to the grid: count an unconnected gradient as zero.
    image_grad, grid_grad = tape.gradient(
        loss, [images, grid], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    out, grid_np = np.asarray(out)[0, 0], special_points_grid()[0, 0]
    expected = reference.grid_sample(images, grid, interpolation, padding_mode)[0, 0]

    assert np.isfinite(out).all()
    assert np.isfinite(image_grad).all()
    assert np.isfinite(grid_grad).all()
    nonfinite = ~np.isfinite(grid_np).all(axis=1)
    # A NaN or infinite coordinate reads 0 under every padding mode, with zero gradient.
    np.testing.assert_array_equal(out[nonfinite], 0.0)
    np.testing.assert_array_equal(np.asarray(grid_grad)[0, 0][nonfinite], 0.0)
    huge = (np.abs(grid_np) >= 1e19).any(axis=1) & ~nonfinite
    if padding_mode == "reflection":
        # Folding 1e20 lands anywhere; it must still be a convex mix of pixels.
        assert (out[huge] >= 0.0).all() and (out[huge] <= 1.0).all()
    else:
        # zeros: far outside reads 0; border: the border pixel.
        np.testing.assert_allclose(out[huge], expected[huge], atol=1e-5)
    ordinary = ~nonfinite & ~huge
    np.testing.assert_allclose(out[ordinary], expected[ordinary], atol=1e-5)


# --------------------------------------------------------------------------- gradients


# The image gradient is scattered in one of two ways, chosen by the number of image
# pixels per output point: 3x3 points on a 4x5 image takes one, 6x7 the other.
@pytest.mark.parametrize("out_size", [(3, 3), (6, 7)])
@pytest.mark.parametrize("interpolation, padding_mode, align_corners", MODES)
def test_gradient_wrt_images_and_grid_matches_finite_differences(
    rng, interpolation, padding_mode, align_corners, out_size
):
    images = tf.constant(rng.uniform(size=(1, 4, 5, 2)))
    grid = tf.constant(
        random_grid(rng, 1, out_size, (4, 5), align_corners, margin=0.05, dtype="float64")
    )

    # A traced (not compiled) function only to make the many finite-difference calls fast.
    @tf.function
    def function(images, grid):
        return ops.sample(images, grid, interpolation=interpolation,
                          padding_mode=padding_mode, align_corners=align_corners)

    theoretical, numerical = tf.test.compute_gradient(function, [images, grid])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-7)
    np.testing.assert_allclose(theoretical[1], numerical[1], atol=1e-6)
    assert np.abs(theoretical[0]).max() > 0.0
    if interpolation == "nearest":
        np.testing.assert_array_equal(theoretical[1], 0.0)
    else:
        assert np.abs(theoretical[1]).max() > 0.1


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_second_order_gradients_match_finite_differences_of_the_gradient(
    rng, padding_mode, align_corners, jit_compile
):
    # The first-order gradients are checked above; here they are differentiated again
    # (a gradient penalty, a Hessian-vector product) and compared with finite
    # differences of themselves. Bilinear is linear in each coordinate within a cell, so
    # the mixed terms (x with y, grid with image) carry the second-order signal.
    images = tf.constant(rng.uniform(size=(1, 4, 5, 2)))
    grid = tf.constant(
        random_grid(rng, 1, (3, 3), (4, 5), align_corners, margin=0.05, dtype="float64")
    )
    weights = tf.constant(rng.uniform(-1.0, 1.0, size=(1, 3, 3, 2)))

    def first_order(images, grid):
        with tf.GradientTape() as tape:
            tape.watch([images, grid])
            out = ops.sample(images, grid, padding_mode=padding_mode,
                             align_corners=align_corners)
            loss = tf.reduce_sum(out * weights)
        image_grad, grid_grad = tape.gradient(loss, [images, grid])
        return tf.concat([tf.reshape(image_grad, (-1,)), tf.reshape(grid_grad, (-1,))], 0)

    first_order = tf.function(first_order, jit_compile=jit_compile)
    theoretical, numerical = tf.test.compute_gradient(first_order, [images, grid])
    for analytic, finite_difference in zip(theoretical, numerical):
        np.testing.assert_allclose(analytic, finite_difference, atol=1e-6)
    # The grid gradient depends on the images and on the grid itself (mixed x-y terms).
    assert np.abs(theoretical[0]).max() > 0.1
    assert np.abs(theoretical[1]).max() > 0.1


# Width-4 row [1, 2, 4, 8], repeated on two rows, read at y = 0 (between the two rows,
# pixel-unit 0.5) and at one x per case. Derived by hand from torch's algorithm:
# unnormalise, clip (border) or reflect then clip (reflection), bilinear, zero taps outside.
# Each case: align_corners, x, {padding: (value, d value / d row, d value / d x)}.
BORDER_CASES = [
    # Pixel-unit x = -0.5, the outer edge: zeros keeps half of pixel 0; border and
    # reflection clip to pixel 0, flat in x.
    (False, -1.0, {"zeros": (0.5, [0.5, 0, 0, 0], 2.0),
                   "border": (1.0, [1, 0, 0, 0], 0.0),
                   "reflection": (1.0, [1, 0, 0, 0], 0.0)}),
    # x = -1.25 px: zeros reads nothing; reflection folds to 0.25 px and flips the slope.
    (False, -1.375, {"zeros": (0.0, [0, 0, 0, 0], 0.0),
                     "border": (1.0, [1, 0, 0, 0], 0.0),
                     "reflection": (1.25, [0.75, 0.25, 0, 0], -2.0)}),
    # x = 3.25 px, inside the last pixel but past its centre.
    (False, 0.875, {"zeros": (6.0, [0, 0, 0, 0.75], -16.0),
                    "border": (8.0, [0, 0, 0, 1], 0.0),
                    "reflection": (8.0, [0, 0, 0, 1], 0.0)}),
    # x = 3.75 px, a quarter pixel past the right edge.
    (False, 1.125, {"zeros": (2.0, [0, 0, 0, 0.25], -16.0),
                    "border": (8.0, [0, 0, 0, 1], 0.0),
                    "reflection": (8.0, [0, 0, 0, 1], 0.0)}),
    # x = 4.25 px: reflection folds to 2.75 px.
    (False, 1.375, {"zeros": (0.0, [0, 0, 0, 0], 0.0),
                    "border": (8.0, [0, 0, 0, 1], 0.0),
                    "reflection": (7.0, [0, 0, 0.25, 0.75], -8.0)}),
    # align_corners=True: x = -1.1 is -0.15 px, x = 1.1 is 3.15 px.
    (True, -1.1, {"zeros": (0.85, [0.85, 0, 0, 0], 1.5),
                  "border": (1.0, [1, 0, 0, 0], 0.0),
                  "reflection": (1.15, [0.85, 0.15, 0, 0], -1.5)}),
    (True, 1.1, {"zeros": (6.8, [0, 0, 0, 0.85], -12.0),
                 "border": (8.0, [0, 0, 0, 1], 0.0),
                 "reflection": (7.4, [0, 0, 0.15, 0.85], -6.0)}),
]


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("align_corners, x, answers", BORDER_CASES)
def test_gradient_at_the_image_border_by_hand(align_corners, x, answers, padding_mode):
    value, row_grad, x_grad = answers[padding_mode]
    row = np.array([1.0, 2.0, 4.0, 8.0], "float32")
    images = tf.constant(np.tile(row, (1, 2, 1)).reshape(1, 2, 4, 1))
    grid = tf.constant([[[[x, 0.0]]]], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([images, grid])
        out = ops.sample(images, grid, padding_mode=padding_mode, align_corners=align_corners)
    image_grad, grid_grad = tape.gradient(out, [images, grid])
    np.testing.assert_allclose(np.ravel(out), [value], atol=1e-5)
    # Both rows share the y weight equally.
    expected_rows = np.tile(0.5 * np.array(row_grad, "float32"), (2, 1))
    np.testing.assert_allclose(np.asarray(image_grad)[0, :, :, 0], expected_rows, atol=1e-5)
    # d/dx in normalised units; d/dy is 0 because the two rows are equal.
    np.testing.assert_allclose(np.ravel(grid_grad), [x_grad, 0.0], atol=1e-4)


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_gradient_flows_through_an_exact_identity_grid(padding_mode, align_corners):
    # On the ramp 3 x + 0.5 y the slope is the same on both sides of every pixel centre,
    # so the gradient at interior centres is unambiguous, even where points are snapped.
    height, width = 5, 7
    ys, xs = np.mgrid[0:height, 0:width].astype("float32")
    images = tf.constant((3.0 * xs + 0.5 * ys)[None, :, :, None])
    grid = tf.constant(identity_grid(1, (height, width), align_corners))
    with tf.GradientTape() as tape:
        tape.watch(grid)
        out = ops.sample(images, grid, padding_mode=padding_mode, align_corners=align_corners)
    grad = np.asarray(tape.gradient(out, grid))[0, 1:-1, 1:-1]
    np.testing.assert_array_equal(out, images)
    scale_x = (width - 1) / 2 if align_corners else width / 2
    scale_y = (height - 1) / 2 if align_corners else height / 2
    np.testing.assert_allclose(grad[..., 0], 3.0 * scale_x, rtol=1e-5)
    np.testing.assert_allclose(grad[..., 1], 0.5 * scale_y, rtol=1e-5)


# -------------------------------------------------------------------------------- XLA


def test_compiled_equals_eager_for_every_mode(rng):
    images = rng.uniform(size=(2, 5, 7, 3)).astype("float32")
    grids = {
        align: random_grid(rng, 2, (4, 6), (5, 7), align, margin=0.02) for align in ALIGNS
    }

    @tf.function(jit_compile=True)
    def every_mode(images, grid_false, grid_true):
        grid = {False: grid_false, True: grid_true}
        return [
            ops.sample(images, grid[align], interpolation=interpolation,
                       padding_mode=padding_mode, align_corners=align)
            for interpolation, padding_mode, align in MODES
        ]

    compiled = every_mode(images, grids[False], grids[True])
    for (interpolation, padding_mode, align), result in zip(MODES, compiled):
        eager = ops.sample(images, grids[align], interpolation=interpolation,
                           padding_mode=padding_mode, align_corners=align)
        np.testing.assert_allclose(result, eager, atol=1e-6)


def test_compiled_gradients_equal_eager(rng):
    images = tf.constant(rng.uniform(size=(2, 5, 7, 3)).astype("float32"))
    grid = tf.constant(random_grid(rng, 2, (4, 6), (5, 7), False, margin=0.05))

    def gradients(images, grid):
        results = []
        for padding_mode in PADDINGS:
            with tf.GradientTape() as tape:
                tape.watch([images, grid])
                out = ops.sample(images, grid, padding_mode=padding_mode)
                loss = tf.reduce_sum(out * tf.range(3, dtype=out.dtype))
            results.extend(tape.gradient(loss, [images, grid]))
        return results

    compiled = tf.function(gradients, jit_compile=True)(images, grid)
    for result, eager in zip(compiled, gradients(images, grid)):
        np.testing.assert_allclose(result, eager, atol=1e-5)


def test_compiled_nonfinite_and_huge_points_equal_eager(rng):
    images = rng.uniform(0.5, 1.0, size=(1, 4, 5, 2)).astype("float32")
    grid = special_points_grid()

    def every_padding(images, grid):
        return [ops.sample(images, grid, padding_mode=p) for p in PADDINGS]

    compiled = tf.function(every_padding, jit_compile=True)(images, grid)
    for padding_mode, result in zip(PADDINGS, compiled):
        assert np.isfinite(result).all()
        if padding_mode == "reflection":
            # Folding 1e20 in float32 is ill-conditioned; compare everything else.
            keep = (np.abs(grid[0, 0]) < 1e19).all(axis=1) | ~np.isfinite(grid[0, 0]).all(axis=1)
            np.testing.assert_allclose(
                np.asarray(result)[0, 0][keep],
                np.asarray(ops.sample(images, grid, padding_mode=padding_mode))[0, 0][keep],
                atol=1e-6)
        else:
            np.testing.assert_allclose(
                result, ops.sample(images, grid, padding_mode=padding_mode), atol=1e-6)


# ------------------------------------------------------------------------- exceptions


IMAGES = np.zeros((1, 5, 7, 3), "float32")
GRID = np.zeros((1, 4, 6, 2), "float32")


@pytest.mark.parametrize(
    "argument, call",
    [
        ("images", lambda: ops.sample(IMAGES[0], GRID)),
        ("images", lambda: ops.sample(IMAGES[None], GRID)),
        ("grid", lambda: ops.sample(IMAGES, GRID[0])),
        ("grid", lambda: ops.sample(IMAGES, np.zeros((1, 4, 6, 3), "float32"))),
        ("grid", lambda: ops.sample(IMAGES, np.zeros((1, 4, 6, 1), "float32"))),
        ("interpolation", lambda: ops.sample(IMAGES, GRID, interpolation="trilinear")),
        ("padding_mode", lambda: ops.sample(IMAGES, GRID, padding_mode="wrap")),
        ("data_format", lambda: ops.sample(IMAGES, GRID, data_format="channels_middle")),
    ],
    ids=["images_rank_3", "images_rank_5", "grid_rank_3", "grid_last_axis_3",
         "grid_last_axis_1", "interpolation", "padding_mode", "data_format"],
)
def test_exception_sample_names_the_bad_argument(argument, call):
    assert_value_error_names(call, argument)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_exception_batch_mismatch_inside_tf_function_is_not_broadcast(jit_compile):
    images_spec = tf.TensorSpec((None, 8, 8, 1), "float32")
    grid_spec = tf.TensorSpec((None, 8, 8, 2), "float32")
    function = tf.function(
        ops.sample, input_signature=[images_spec, grid_spec], jit_compile=jit_compile
    )
    grid = identity_grid(1, (8, 8), False)
    with pytest.raises(tf.errors.InvalidArgumentError):
        function(np.ones((3, 8, 8, 1), "float32"), grid)
    assert tuple(function(np.ones((1, 8, 8, 1), "float32"), grid).shape) == (1, 8, 8, 1)
