"""The grid generators `affine_grid`, `projective_grid` and `tps_grid` against the NumPy
reference, and theta -> grid -> sample end to end: exact identities, finite differences,
non-finite theta, XLA, bad input.

Coordinates: grids are (B, H, W, 2), last axis (x, y) normalised to [-1, 1]. Base
(target) coordinates are x_j = (2 j + 1) / W - 1 for align_corners=False and
-1 + 2 j / (W - 1) for align_corners=True (0 when W == 1), as torch's affine_grid.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_stn import ops
from tests import reference
from tests.testing import arange_images
from tests.testing import assert_value_error_names

ALIGNS = (False, True)
PADDINGS = ("zeros", "border", "reflection")
IDENTITY_AFFINE = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
IDENTITY_PROJECTIVE = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
# Irregular control points: not on a grid, not all collinear.
CUSTOM_POINTS = np.array(
    [[-0.9, -0.8], [0.7, -0.95], [0.1, 0.05], [-0.6, 0.9], [0.95, 0.6], [0.3, -0.4]]
)


def pixel_distance_to_kinks(grid, image_size, align_corners):
    """Smallest distance, in pixel units, from any grid coordinate to an integer or
    half-integer pixel position (bilinear kinks, reflection folds)."""
    height, width = image_size
    distances = []
    for axis, size in ((0, width), (1, height)):
        halves = 2.0 * reference.unnormalize(grid[..., axis], size, align_corners)
        distances.append(np.abs(halves - np.round(halves)).min() / 2.0)
    return min(distances)


# --------------------------------------------------------------------------- affine


@pytest.mark.parametrize("size", [(5, 7), (4, 1), (1, 6), (1, 1)])
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_affine_grid_identity_gives_the_base_coordinates(size, align_corners):
    height, width = size
    grid = np.asarray(ops.affine_grid(IDENTITY_AFFINE[None].astype("float32"), size,
                                      align_corners))
    assert grid.shape == (1, height, width, 2)
    if align_corners:
        xs = [0.0] if width == 1 else [-1 + 2 * j / (width - 1) for j in range(width)]
        ys = [0.0] if height == 1 else [-1 + 2 * i / (height - 1) for i in range(height)]
    else:
        xs = [(2 * j + 1) / width - 1 for j in range(width)]
        ys = [(2 * i + 1) / height - 1 for i in range(height)]
    np.testing.assert_allclose(grid[0, ..., 0], np.tile(xs, (height, 1)), atol=1e-6)
    np.testing.assert_allclose(grid[0, ..., 1], np.tile(np.array(ys)[:, None], (1, width)),
                               atol=1e-6)


@pytest.mark.parametrize("size", [(5, 7), (3, 1), (1, 4)])
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_affine_grid_matches_reference(rng, size, align_corners):
    theta = rng.normal(size=(3, 2, 3))
    expected = reference.affine_grid(theta, size, align_corners)
    flat = ops.affine_grid(theta.reshape(3, 6).astype("float32"), size, align_corners)
    matrix = ops.affine_grid(theta.astype("float32"), size, align_corners)
    assert tuple(flat.shape) == (3, *size, 2)
    np.testing.assert_allclose(flat, expected, atol=1e-5)
    np.testing.assert_allclose(matrix, expected, atol=1e-5)


def test_affine_grid_keeps_float64(rng):
    theta = rng.normal(size=(2, 6))
    grid = ops.affine_grid(theta, (4, 5))
    assert grid.dtype == tf.float64
    np.testing.assert_allclose(grid, reference.affine_grid(theta, (4, 5)), atol=1e-12)


def test_affine_grid_batch_size_is_not_assumed_static(rng):
    theta = rng.normal(size=(3, 6)).astype("float32")
    function = tf.function(
        lambda theta: ops.affine_grid(theta, (4, 5)),
        input_signature=[tf.TensorSpec([None, 6], tf.float32)],
    )
    assert function.get_concrete_function().structured_outputs.shape.as_list() == [
        None, 4, 5, 2]
    for batch in (1, 3):
        np.testing.assert_allclose(
            function(theta[:batch]), reference.affine_grid(theta[:batch], (4, 5)), atol=1e-5
        )


# ----------------------------------------------------------------------- projective


def test_projective_grid_matches_reference(rng):
    theta = np.concatenate(
        [rng.normal(size=(3, 6)) * 0.5 + IDENTITY_AFFINE, rng.uniform(-0.3, 0.3, (3, 2))],
        axis=1,
    )
    for align_corners in ALIGNS:
        expected = reference.projective_grid(theta, (5, 7), align_corners)
        flat = ops.projective_grid(theta.astype("float32"), (5, 7), align_corners)
        matrix = np.concatenate([theta, np.ones((3, 1))], axis=1).reshape(3, 3, 3)
        square = ops.projective_grid(matrix.astype("float32"), (5, 7), align_corners)
        assert tuple(flat.shape) == (3, 5, 7, 2)
        np.testing.assert_allclose(flat, expected, atol=1e-5)
        np.testing.assert_allclose(square, expected, atol=1e-5)


def test_projective_grid_without_perspective_is_the_affine_grid(rng):
    theta = rng.normal(size=(2, 6)).astype("float32")
    projective = np.concatenate([theta, np.zeros((2, 2), "float32")], axis=1)
    for align_corners in ALIGNS:
        np.testing.assert_allclose(
            ops.projective_grid(projective, (4, 6), align_corners),
            ops.affine_grid(theta, (4, 6), align_corners),
            atol=1e-6,
        )


@pytest.mark.parametrize("align_corners", ALIGNS)
def test_identity_is_exact_for_projective_identity(align_corners):
    images = arange_images((2, 5, 7, 3))
    grid = ops.projective_grid(np.tile(IDENTITY_PROJECTIVE, (2, 1)).astype("float32"),
                               (5, 7), align_corners)
    out = ops.sample(images, grid, align_corners=align_corners)
    np.testing.assert_array_equal(out, images)


def read_and_gradients(grid_function, output_size):
    """`run(images, theta)` -> [read along `grid_function(theta, output_size)`, and the
    gradients of its sum to the images and to theta]."""

    def run(images, theta):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            out = ops.sample(images, grid_function(theta, output_size))
            loss = tf.reduce_sum(out)
        return [out, *tape.gradient(loss, [images, theta])]

    return run


def test_projective_zero_denominator_is_nan_and_reads_zero():
    # Width 4, align_corners=False: x = -0.75, -0.25, 0.25, 0.75. With h31 = 4 the
    # denominator 4 x + 1 is exactly 0 in column 1 and far from 0 elsewhere.
    theta = np.array([[1, 0, 0, 0, 1, 0, 4, 0]], "float32")
    grid = np.asarray(ops.projective_grid(theta, (3, 4)))
    assert np.isnan(grid[:, :, 1]).all()
    others = grid[:, :, [0, 2, 3]]
    np.testing.assert_allclose(others, reference.projective_grid(theta, (3, 4))[:, :, [0, 2, 3]],
                               atol=1e-5)

    images = tf.constant(np.ones((1, 3, 4, 2), "float32"))
    theta = tf.constant(theta)

    run = read_and_gradients(ops.projective_grid, (3, 4))

    eager = run(images, theta)
    compiled = tf.function(run, jit_compile=True)(images, theta)
    for result in (eager, compiled):
        out, image_grad, theta_grad = (np.asarray(t) for t in result)
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out[:, :, 1], 0.0)
        assert np.isfinite(image_grad).all() and np.isfinite(theta_grad).all()
    for eager_part, compiled_part in zip(eager, compiled):
        np.testing.assert_allclose(compiled_part, eager_part, atol=1e-5)


def test_gradient_of_projective_grid_matches_finite_differences(rng):
    theta = np.concatenate(
        [rng.normal(size=(2, 6)) * 0.3 + IDENTITY_AFFINE, rng.uniform(-0.2, 0.2, (2, 2))],
        axis=1,
    )
    theoretical, numerical = tf.test.compute_gradient(
        lambda theta: ops.projective_grid(theta, (3, 4)), [tf.constant(theta)]
    )
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


# ------------------------------------------------------------------------------ TPS


@pytest.mark.parametrize("align_corners", ALIGNS)
def test_tps_grid_matches_reference(rng, align_corners):
    points = reference.default_control_points()
    theta = points[None] + rng.normal(size=(2, 16, 2)) * 0.15
    expected = reference.tps_grid(theta, points, (5, 7), align_corners)
    flat = ops.tps_grid(theta.reshape(2, 32).astype("float32"), points, (5, 7), align_corners)
    pairs = ops.tps_grid(theta.astype("float32"), points, (5, 7), align_corners)
    assert tuple(flat.shape) == (2, 5, 7, 2)
    np.testing.assert_allclose(flat, expected, atol=1e-5)
    np.testing.assert_allclose(pairs, expected, atol=1e-5)


def test_tps_grid_matches_reference_for_irregular_control_points(rng):
    theta = CUSTOM_POINTS[None] + rng.normal(size=(3, 6, 2)) * 0.2
    expected = reference.tps_grid(theta, CUSTOM_POINTS, (6, 5))
    out = ops.tps_grid(theta.reshape(3, 12).astype("float32"), CUSTOM_POINTS, (6, 5))
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("points", [reference.default_control_points(), CUSTOM_POINTS],
                         ids=["regular_4x4", "irregular_6"])
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_tps_identity_control_points_give_the_identity_grid(points, align_corners):
    theta = np.tile(points.reshape(1, -1), (2, 1)).astype("float32")
    grid = ops.tps_grid(theta, points, (5, 7), align_corners)
    identity = ops.affine_grid(np.tile(IDENTITY_AFFINE, (2, 1)).astype("float32"), (5, 7),
                               align_corners)
    np.testing.assert_allclose(grid, identity, atol=1e-6)
    images = arange_images((2, 5, 7, 3))
    np.testing.assert_array_equal(ops.sample(images, grid, align_corners=align_corners), images)


def test_tps_of_affinely_moved_control_points_is_that_affine_grid(rng):
    points = reference.default_control_points()
    affine = np.array([[[0.9, 0.3, 0.1], [-0.2, 1.1, -0.15]], [[1.2, 0.0, 0.0], [0.0, 0.8, 0.3]]])
    moved = np.einsum("bij,kj->bki", affine[:, :, :2], points) + affine[:, None, :, 2]
    for align_corners in ALIGNS:
        np.testing.assert_allclose(
            ops.tps_grid(moved.reshape(2, 32).astype("float32"), points, (6, 5), align_corners),
            ops.affine_grid(affine.astype("float32"), (6, 5), align_corners),
            atol=1e-5,
        )


def test_tps_interpolates_the_control_points(rng):
    # align_corners=True with a 5x5 output puts grid points exactly on 0, +-0.5, +-1, so
    # control points on {-1, 0, 1}^2 coincide with grid points (r = 0 in the kernel).
    points = reference.default_control_points((3, 3))
    theta = points[None] + rng.normal(size=(1, 9, 2)) * 0.2
    grid = np.asarray(ops.tps_grid(theta.astype("float32"), points, (5, 5), True))
    at_points = grid[0, ::2, ::2].reshape(9, 2)  # row by row, like the control points
    np.testing.assert_allclose(at_points, theta[0], atol=1e-5)


def test_gradient_of_tps_is_finite_where_grid_points_hit_control_points(rng):
    points = reference.default_control_points((3, 3))
    theta = tf.constant((points[None] + rng.normal(size=(1, 9, 2)) * 0.1).reshape(1, 18),
                        tf.float32)
    images = tf.constant(rng.uniform(size=(1, 5, 5, 2)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(theta)
        grid = ops.tps_grid(theta, points, (5, 5), True)
        loss = tf.reduce_sum(ops.sample(images, grid, align_corners=True))
    jacobian = np.asarray(tape.jacobian(grid, theta)).reshape(50, 18)
    theta_grad = np.asarray(tape.gradient(loss, theta))
    assert np.isfinite(jacobian).all()
    assert np.isfinite(theta_grad).all() and np.abs(theta_grad).max() > 0
    # The grid is linear in theta: its Jacobian is the reference spline of unit vectors.
    expected = np.stack(
        [reference.tps_grid(np.eye(18)[n], points, (5, 5), True).reshape(50)
         for n in range(18)], axis=1)
    np.testing.assert_allclose(jacobian, expected, atol=1e-5)


# ----------------------------------------------------- theta -> grid -> sample gradients


def theta_away_from_kinks(rng, out_size, image_size, align_corners, margin=0.04):
    """A deterministic affine theta whose grid reaches outside the image and keeps every
    coordinate `margin` pixel units away from integer and half-integer positions."""
    height, width = image_size
    for _ in range(5000):
        theta = IDENTITY_AFFINE * 1.3 + rng.uniform(-0.35, 0.35, size=6)
        grid = reference.affine_grid(theta[None], out_size, align_corners)
        outside = (np.abs(grid) > 1.0 + 1.0 / min(height, width)).any()
        if outside and pixel_distance_to_kinks(grid, image_size, align_corners) >= margin:
            return theta[None]
    raise AssertionError("no theta found")  # pragma: no cover


@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_gradient_wrt_theta_and_images_matches_finite_differences(
    rng, padding_mode, align_corners
):
    theta = tf.constant(theta_away_from_kinks(rng, (2, 3), (4, 5), align_corners))
    images = tf.constant(rng.uniform(size=(1, 4, 5, 2)))

    @tf.function  # traced, not compiled: only to make the many calls fast
    def function(images, theta):
        grid = ops.affine_grid(theta, (2, 3), align_corners)
        return ops.sample(images, grid, padding_mode=padding_mode,
                          align_corners=align_corners)

    theoretical, numerical = tf.test.compute_gradient(function, [images, theta])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-7)
    np.testing.assert_allclose(theoretical[1], numerical[1], atol=1e-6)
    assert np.abs(theoretical[1]).max() > 0.01


# ------------------------------------------------------------------ non-finite theta


def bad_theta_batch():
    """Item 0 is the identity; items 1.. each carry one NaN, inf or 1e20."""
    theta = np.tile(IDENTITY_AFFINE, (6, 1)).astype("float32")
    theta[1, 0] = np.nan   # a
    theta[2, 2] = np.inf   # tx
    theta[3, 4] = -np.inf  # d
    theta[4, 5] = np.nan   # ty
    theta[5, 2] = 1e20     # tx: everything far to the right
    return theta


def test_nonfinite_and_huge_theta_read_zero_and_spare_the_batch():
    images = tf.constant(arange_images((6, 4, 6, 2)) + 1.0)
    theta = tf.constant(bad_theta_batch())

    run = read_and_gradients(ops.affine_grid, (4, 6))

    eager = [np.asarray(t) for t in run(images, theta)]
    compiled = [np.asarray(t) for t in tf.function(run, jit_compile=True)(images, theta)]
    for out, image_grad, theta_grad in (eager, compiled):
        assert np.isfinite(out).all()
        assert np.isfinite(image_grad).all() and np.isfinite(theta_grad).all()
        np.testing.assert_array_equal(out[0], np.asarray(images)[0])
        np.testing.assert_array_equal(out[1:], 0.0)
        # The gradient is computed at the unsnapped coordinates (torch's), which sit
        # within rounding noise of the pixel centres: 1 up to that noise.
        np.testing.assert_allclose(image_grad[0], 1.0, atol=1e-6)
        np.testing.assert_array_equal(image_grad[1:], 0.0)
        np.testing.assert_array_equal(theta_grad[1:], 0.0)
    # The good item's gradient is what it would be alone.
    alone = run(images[:1], theta[:1])
    np.testing.assert_allclose(eager[2][:1], alone[2], atol=1e-4)
    for eager_part, compiled_part in zip(eager, compiled):
        np.testing.assert_allclose(compiled_part, eager_part, atol=1e-4)


def test_empty_batch_through_grid_and_sampler_forward_and_backward():
    images = tf.zeros((0, 5, 7, 3))
    theta = tf.zeros((0, 6))
    with tf.GradientTape() as tape:
        tape.watch([images, theta])
        out = ops.sample(images, ops.affine_grid(theta, (4, 6)))
        loss = tf.reduce_sum(out)
    assert tuple(out.shape) == (0, 4, 6, 3)
    image_grad, theta_grad = tape.gradient(loss, [images, theta])
    assert tuple(image_grad.shape) == (0, 5, 7, 3)
    assert tuple(theta_grad.shape) == (0, 6)


# -------------------------------------------------------------------------------- XLA


def test_compiled_grids_equal_eager(rng):
    affine = rng.normal(size=(2, 6)).astype("float32")
    projective = np.concatenate(
        [affine, rng.uniform(-0.2, 0.2, (2, 2)).astype("float32")], axis=1)
    points = reference.default_control_points()
    tps = (points[None] + rng.normal(size=(2, 16, 2)) * 0.1).reshape(2, 32).astype("float32")

    def grids(affine, projective, tps):
        return [
            ops.affine_grid(affine, (5, 7), True),
            ops.projective_grid(projective, (5, 7)),
            ops.tps_grid(tps, points, (5, 7)),
        ]

    compiled = tf.function(grids, jit_compile=True)(affine, projective, tps)
    for result, eager in zip(compiled, grids(affine, projective, tps)):
        np.testing.assert_allclose(result, eager, atol=1e-6)


def test_compiled_identity_of_every_grid_is_exact():
    images = arange_images((2, 5, 7, 3))
    points = reference.default_control_points()

    @tf.function(jit_compile=True)
    def identities(images):
        out = []
        for align_corners in ALIGNS:
            for grid in (
                ops.affine_grid(np.tile(IDENTITY_AFFINE, (2, 1)).astype("float32"), (5, 7),
                                align_corners),
                ops.projective_grid(np.tile(IDENTITY_PROJECTIVE, (2, 1)).astype("float32"),
                                    (5, 7), align_corners),
                ops.tps_grid(np.tile(points.reshape(1, 32), (2, 1)).astype("float32"),
                             points, (5, 7), align_corners),
            ):
                out.append(ops.sample(images, grid, align_corners=align_corners))
        return out

    for out in identities(images):
        np.testing.assert_array_equal(out, images)


# ------------------------------------------------------------------------- exceptions


THETA = np.tile(IDENTITY_AFFINE, (2, 1)).astype("float32")
POINTS = reference.default_control_points()


@pytest.mark.parametrize(
    "argument, call",
    [
        ("theta", lambda: ops.affine_grid(THETA[:, :5], (4, 4))),
        ("theta", lambda: ops.affine_grid(np.zeros((2, 3, 3), "float32"), (4, 4))),
        ("theta", lambda: ops.affine_grid(THETA[0], (4, 4))),
        ("theta", lambda: ops.affine_grid(THETA.astype("int32"), (4, 4))),
        ("theta", lambda: ops.projective_grid(np.zeros((2, 9), "float32"), (4, 4))),
        ("theta", lambda: ops.projective_grid(np.zeros((2, 2, 3), "float32"), (4, 4))),
        ("theta", lambda: ops.projective_grid(np.zeros((2, 8), "int64"), (4, 4))),
        ("theta", lambda: ops.tps_grid(np.zeros((2, 31), "float32"), POINTS, (4, 4))),
        ("theta", lambda: ops.tps_grid(np.zeros((2, 16, 3), "float32"), POINTS, (4, 4))),
        ("theta", lambda: ops.tps_grid(POINTS.reshape(1, 32).astype("int32"), POINTS, (4, 4))),
        ("control_points", lambda: ops.tps_grid(
            np.zeros((1, 8), "float32"), [[0, 0], [1, 0], [0, 0], [0, 1]], (4, 4))),
        ("output_size", lambda: ops.affine_grid(THETA, (0, 4))),
        ("output_size", lambda: ops.affine_grid(THETA, (4, -1))),
        ("output_size", lambda: ops.affine_grid(THETA, (4,))),
        ("output_size", lambda: ops.affine_grid(THETA, (4, 4, 4))),
        ("output_size", lambda: ops.affine_grid(THETA, (4.5, 4))),
        ("output_size", lambda: ops.affine_grid(THETA, "4x4")),
        ("output_size", lambda: ops.affine_grid(THETA, (10**6, 10**6))),
        ("output_size", lambda: ops.projective_grid(np.zeros((2, 8), "float32"), (10**6, 10**6))),
        ("output_size", lambda: ops.tps_grid(POINTS.reshape(1, 32), POINTS, (10**6, 10**6))),
    ],
    ids=[
        "affine_theta_5", "affine_theta_3x3", "affine_theta_unbatched", "affine_theta_int",
        "projective_theta_9", "projective_theta_2x3", "projective_theta_int",
        "tps_theta_31", "tps_theta_triples", "tps_theta_int", "tps_duplicate_points",
        "size_zero", "size_negative", "size_one_int", "size_three_ints", "size_float",
        "size_string", "size_absurd_affine", "size_absurd_projective", "size_absurd_tps",
    ],
)
def test_exception_grid_names_the_bad_argument(argument, call):
    assert_value_error_names(call, argument)
