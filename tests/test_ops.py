"""The core ops against the plain-loop NumPy reference, hand-checked answers and
finite differences."""

import numpy as np
import pytest
import tensorflow as tf

import keras_stn
from keras_stn import ops
from tests import np_reference

INTERPOLATIONS = ["bilinear", "nearest"]
PADDINGS = ["zeros", "border", "reflection"]
IDENTITY = np.array([1, 0, 0, 0, 1, 0], "float32")


def xla(function):
    return tf.function(function, jit_compile=True)


def arange_images(batch, height, width, channels, dtype="float32"):
    return np.arange(batch * height * width * channels, dtype=dtype).reshape(
        batch, height, width, channels
    )


def affine(*rows, batch=1):
    return np.tile(np.array(rows, "float32").reshape(1, 6), (batch, 1))


# ---------------------------------------------------------------- feature: exact answers


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("channels", [1, 3, 64])
def test_identity_affine_is_exact(align_corners, channels):
    images = arange_images(2, 5, 7, channels)
    grid = ops.affine_grid(np.tile(IDENTITY, (2, 1)), (5, 7), align_corners)
    out = ops.sample(images, grid, align_corners=align_corners)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("name", sorted(keras_stn.transforms.FAMILIES))
def test_identity_of_every_family_is_exact_eager_and_xla(name, align_corners):
    family = keras_stn.transforms.get(name)
    images = arange_images(2, 6, 9, 3)
    theta = np.tile(family.identity().astype("float32"), (2, 1))

    def run(theta):
        grid = family.grid(theta, (6, 9), align_corners)
        return ops.sample(images, grid, align_corners=align_corners)

    np.testing.assert_array_equal(run(theta), images)
    np.testing.assert_array_equal(xla(run)(theta), images)


def test_one_pixel_translation():
    images = arange_images(1, 3, 4, 1)
    # x_s = x_t + 2/W: every output pixel reads its right neighbour.
    grid = ops.affine_grid(affine(1, 0, 2 / 4, 0, 1, 0), (3, 4))
    out = np.asarray(ops.sample(images, grid))[0, :, :, 0]
    expected = np.concatenate([images[0, :, 1:, 0], np.zeros((3, 1))], axis=1)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("align_corners", [False, True])
def test_rotation_by_90_degrees(align_corners):
    images = arange_images(1, 5, 5, 2)
    # (x_s, y_s) = (y_t, -x_t): output (i, j) reads input row W-1-j, column i.
    grid = ops.affine_grid(affine(0, 1, 0, -1, 0, 0), (5, 5), align_corners)
    out = ops.sample(images, grid, align_corners=align_corners)
    np.testing.assert_array_equal(out[0], np.rot90(images[0], k=-1))


@pytest.mark.parametrize("align_corners", [False, True])
def test_transpose_of_non_square_image(align_corners):
    images = arange_images(2, 3, 7, 2)
    grid = ops.affine_grid(affine(0, 1, 0, 1, 0, 0, batch=2), (7, 3), align_corners)
    out = ops.sample(images, grid, align_corners=align_corners)
    np.testing.assert_array_equal(out, np.transpose(images, (0, 2, 1, 3)))


@pytest.mark.parametrize("output_size", [(6, 8), (12, 16), (3, 4)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_output_size_equal_doubled_halved(output_size, align_corners):
    images = np.random.default_rng(1).normal(size=(2, 6, 8, 3))
    theta = affine(0.9, 0.1, 0.05, -0.2, 1.1, 0.1, batch=2)
    grid = ops.affine_grid(theta.astype("float64"), output_size, align_corners)
    assert tuple(grid.shape) == (2, *output_size, 2)
    out = ops.sample(images, grid, align_corners=align_corners)
    expected = np_reference.grid_sample(images, grid, "bilinear", "zeros", align_corners)
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_halving_with_identity_averages_pixel_pairs():
    # align_corners=False, 4 -> 2 columns: output centres fall between input pixels.
    images = arange_images(1, 1, 4, 1)
    grid = ops.affine_grid(affine(1, 0, 0, 0, 1, 0), (1, 2))
    np.testing.assert_array_equal(np.asarray(ops.sample(images, grid)).ravel(), [0.5, 2.5])


# ---------------------------------------------------------------- feature: the reference


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", PADDINGS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_sample_matches_reference_far_outside(interpolation, padding_mode, align_corners):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 5, 7, 3))
    grid = rng.uniform(-1.6, 1.6, size=(2, 4, 6, 2))
    grid[0, 0, :3] = [[-3.5, 0.2], [2.9, -4.1], [7.25, 7.75]]  # far outside
    expected = np_reference.grid_sample(images, grid, interpolation, padding_mode, align_corners)

    def run(images, grid):
        return ops.sample(images, grid, interpolation, padding_mode, align_corners)

    np.testing.assert_allclose(run(images, grid), expected, atol=1e-12)
    np.testing.assert_allclose(
        xla(run)(images.astype("float32"), grid.astype("float32")), expected, atol=1e-5
    )


@pytest.mark.parametrize("size", [(1, 4), (4, 1), (1, 1)])
@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_sample_matches_reference_on_one_pixel_sides(size, padding_mode):
    rng = np.random.default_rng(2)
    images = rng.normal(size=(1, *size, 2))
    grid = rng.uniform(-1.8, 1.8, size=(1, 3, 3, 2))
    for align_corners in (False, True):
        expected = np_reference.grid_sample(images, grid, "bilinear", padding_mode, align_corners)
        out = ops.sample(images, grid, "bilinear", padding_mode, align_corners)
        np.testing.assert_allclose(out, expected, atol=1e-12)


def test_channels_first_matches_channels_last():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(2, 5, 6, 3)).astype("float32")
    grid = rng.uniform(-1.2, 1.2, size=(2, 4, 4, 2)).astype("float32")
    last = ops.sample(images, grid)
    first = ops.sample(np.transpose(images, (0, 3, 1, 2)), grid, data_format="channels_first")
    np.testing.assert_array_equal(np.transpose(first, (0, 2, 3, 1)), last)


@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_matches_reference(align_corners):
    theta = np.random.default_rng(4).normal(size=(3, 2, 3))
    expected = np_reference.affine_grid(theta, (4, 5), align_corners)
    np.testing.assert_allclose(ops.affine_grid(theta, (4, 5), align_corners), expected, atol=1e-12)
    np.testing.assert_allclose(
        ops.affine_grid(theta.reshape(3, 6), (4, 5), align_corners), expected, atol=1e-12
    )


def test_projective_grid_matches_reference():
    rng = np.random.default_rng(5)
    theta = np.array([1, 0, 0, 0, 1, 0, 0, 0], "float64") + rng.normal(0, 0.1, size=(3, 8))
    expected = np_reference.projective_grid(theta, (4, 6))
    np.testing.assert_allclose(ops.projective_grid(theta, (4, 6)), expected, atol=1e-12)
    matrices = np.concatenate([theta, np.ones((3, 1))], axis=1).reshape(3, 3, 3)
    np.testing.assert_allclose(ops.projective_grid(matrices, (4, 6)), expected, atol=1e-12)


def test_projective_points_at_infinity_read_zero_with_finite_gradient():
    # w = 1 - 4 x_t vanishes on the column x_t = 0.25 (column 2 of 4).
    theta = tf.constant([[1, 0, 0, 0, 1, 0, -4, 0]], "float32")
    images = tf.ones((1, 4, 4, 1))
    with tf.GradientTape() as tape:
        tape.watch(theta)
        grid = ops.projective_grid(theta, (4, 4))
        out = ops.sample(images, grid)
    assert np.all(np.isnan(np.asarray(grid)[0, :, 2]))
    assert np.all(np.isfinite(np.asarray(grid)[0, :, [0, 1, 3]]))
    np.testing.assert_array_equal(np.asarray(out)[0, :, 2, 0], 0.0)
    assert np.all(np.isfinite(tape.gradient(out, theta)))


@pytest.mark.parametrize("align_corners", [False, True])
def test_tps_matches_reference(align_corners):
    family = keras_stn.transforms.TPS(grid_shape=(3, 3))
    rng = np.random.default_rng(6)
    theta = family.identity()[None] + rng.normal(0, 0.1, size=(2, 18))
    expected = np_reference.tps_grid(theta, family.control_points, (5, 7), align_corners)
    np.testing.assert_allclose(family.grid(theta, (5, 7), align_corners), expected, atol=1e-10)
    np.testing.assert_allclose(
        ops.tps_grid(theta.reshape(2, 9, 2), family.control_points, (5, 7), align_corners),
        expected,
        atol=1e-10,
    )


@pytest.mark.parametrize("align_corners", [False, True])
def test_tps_identity_is_the_identity_grid(align_corners):
    family = keras_stn.transforms.get("tps")
    grid = family.grid(family.identity()[None].astype("float32"), (8, 11), align_corners)
    identity = ops.affine_grid(IDENTITY[None], (8, 11), align_corners)
    np.testing.assert_array_equal(grid, identity)


def test_tps_of_affinely_moved_points_is_that_affine_grid():
    family = keras_stn.transforms.get("tps")
    matrix = np.array([[0.8, -0.3, 0.1], [0.25, 1.1, -0.2]])
    points = family.control_points
    moved = points @ matrix[:, :2].T + matrix[:, 2]
    grid = family.grid(moved.reshape(1, -1).astype("float32"), (9, 7))
    expected = ops.affine_grid(matrix.reshape(1, 6).astype("float32"), (9, 7))
    np.testing.assert_allclose(grid, expected, atol=1e-5)


def test_tps_gradient_is_finite_where_grid_points_hit_control_points():
    # align_corners=True, 4x4 output: every control point is a grid point (r = 0).
    family = keras_stn.transforms.get("tps")
    theta = tf.constant(family.identity()[None] + 0.01, "float32")
    images = tf.random.stateless_normal((1, 4, 4, 2), seed=(1, 2))
    with tf.GradientTape() as tape:
        tape.watch(theta)
        out = ops.sample(images, family.grid(theta, (4, 4), True), align_corners=True)
    gradient = tape.gradient(out, theta)
    assert np.all(np.isfinite(gradient)) and np.any(gradient != 0)


# ---------------------------------------------------------------- gradients


def _away_from_integers(grid, height, width, align_corners, margin):
    """Moves every point so its pixel coordinates are >= margin from an integer."""
    x = np_reference.unnormalise(grid[..., 0], width, align_corners)
    y = np_reference.unnormalise(grid[..., 1], height, align_corners)
    x = np.floor(x) + np.clip(x - np.floor(x), margin, 1 - margin)
    y = np.floor(y) + np.clip(y - np.floor(y), margin, 1 - margin)
    if align_corners:
        return np.stack([x / (width - 1) * 2 - 1, y / (height - 1) * 2 - 1], axis=-1)
    return np.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], axis=-1)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_gradient_wrt_images_and_grid_matches_finite_differences(padding_mode, align_corners):
    delta = 1e-4
    rng = np.random.default_rng(7)
    images = rng.normal(size=(2, 4, 5, 2))
    grid = _away_from_integers(rng.uniform(-1.3, 1.3, size=(2, 3, 3, 2)), 4, 5, align_corners, 2 * delta)
    # Keep reflection points away from the reflection lines (their own kinks).
    if padding_mode == "reflection":
        grid = np.clip(grid, -0.95, 0.95)

    def function(images, grid):
        return ops.sample(images, grid, "bilinear", padding_mode, align_corners)

    theoretical, numerical = tf.test.compute_gradient(function, [images, grid], delta=delta)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=1e-6)


@pytest.mark.parametrize("name", ["affine", "projective", "tps"])
def test_gradient_wrt_theta_matches_finite_differences(name):
    delta = 1e-5
    family = keras_stn.transforms.get(name)
    rng = np.random.default_rng(8)
    theta = family.identity()[None] + rng.normal(0, 0.05, size=(2, family.num_params))
    images = rng.normal(size=(2, 6, 5, 2))
    grid = np.asarray(family.grid(theta, (4, 4)))
    x = np_reference.unnormalise(grid[..., 0], 5, False)
    y = np_reference.unnormalise(grid[..., 1], 6, False)
    distance = np.minimum(np.abs(x - np.round(x)), np.abs(y - np.round(y)))
    assert distance.min() > 20 * delta  # the finite differences stay off the kinks

    def function(theta):
        return ops.sample(images, family.grid(theta, (4, 4)))

    theoretical, numerical = tf.test.compute_gradient(function, [theta], delta=delta)
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-6)


def _gradients(images, grid, padding_mode, align_corners=False):
    images, grid = tf.constant(images, "float64"), tf.constant(grid, "float64")
    with tf.GradientTape() as tape:
        tape.watch([images, grid])
        out = tf.reduce_sum(ops.sample(images, grid, "bilinear", padding_mode, align_corners))
    return [np.asarray(g) for g in tape.gradient(out, [images, grid])]


def test_gradient_at_the_border_by_hand():
    # One row [a, b] = [2, 7], W = 2, align_corners=False: pixel x = grid x + 0.5, so
    # d(pixel)/d(grid) = 1. Pixel centres at 0 and 1; the image ends at -0.5 and 1.5.
    # Only x's gradient is checked: y sits on a pixel centre, a kink of the kernel.
    images = np.array([2.0, 7.0]).reshape(1, 1, 2, 1)

    def at(x):
        return np.array([x - 0.5, 0.0]).reshape(1, 1, 1, 2)

    # zeros, pixel -0.75: 0.25 * a + 0.75 * (zero padding); d/dx = a - 0.
    d_images, d_grid = _gradients(images, at(-0.75), "zeros")
    np.testing.assert_allclose(d_images.ravel(), [0.25, 0.0])
    np.testing.assert_allclose(d_grid[..., 0].ravel(), [2.0])
    # border, pixel -0.75: clipped to 0, reads a; the clip passes no gradient.
    d_images, d_grid = _gradients(images, at(-0.75), "border")
    np.testing.assert_allclose(d_images.ravel(), [1.0, 0.0])
    np.testing.assert_allclose(d_grid[..., 0].ravel(), [0.0])
    # reflection, pixel -0.75: mirrored at -0.5 to -0.25, clipped to 0: reads a.
    d_images, d_grid = _gradients(images, at(-0.75), "reflection")
    np.testing.assert_allclose(d_images.ravel(), [1.0, 0.0])
    np.testing.assert_allclose(d_grid[..., 0].ravel(), [0.0])
    # reflection, pixel 2.2: mirrored at 1.5 to 0.8: 0.2 a + 0.8 b, and moving right
    # moves the read point left: d/dx = -(b - a) = -5.
    d_images, d_grid = _gradients(images, at(2.2), "reflection")
    np.testing.assert_allclose(d_images.ravel(), [0.2, 0.8], atol=1e-12)
    np.testing.assert_allclose(d_grid[..., 0].ravel(), [-5.0], atol=1e-12)
    # border, pixel 0.25 (inside): 0.75 a + 0.25 b, d/dx = b - a = 5.
    d_images, d_grid = _gradients(images, at(0.25), "border")
    np.testing.assert_allclose(d_images.ravel(), [0.75, 0.25], atol=1e-12)
    np.testing.assert_allclose(d_grid[..., 0].ravel(), [5.0], atol=1e-12)


# ---------------------------------------------------------------- XLA


@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_xla_equals_eager_forward_and_backward(padding_mode):
    rng = np.random.default_rng(9)
    images = tf.constant(rng.normal(size=(3, 7, 6, 4)), "float32")
    theta = tf.constant(IDENTITY + rng.normal(0, 0.3, size=(3, 6)), "float32")

    def run(images, theta):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            out = ops.sample(images, ops.affine_grid(theta, (5, 9)), padding_mode=padding_mode)
            loss = tf.reduce_sum(out * out)
        return (out, *tape.gradient(loss, [images, theta]))

    for eager, compiled in zip(run(images, theta), xla(run)(images, theta)):
        np.testing.assert_allclose(eager, compiled, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- bad and odd input


def test_nan_inf_and_huge_theta_read_zero_and_spare_the_batch():
    rng = np.random.default_rng(10)
    images = tf.constant(rng.normal(size=(4, 5, 5, 2)), "float32")
    theta = np.tile(IDENTITY, (4, 1))
    theta[1, 2] = np.nan
    theta[2, 0] = np.inf
    theta[3, :] = 1e20

    def run(theta):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            out = ops.sample(images, ops.affine_grid(theta, (5, 5)))
        return out, tape.gradient(out, theta)

    for out, gradient in (run(tf.constant(theta)), xla(run)(tf.constant(theta))):
        out = np.asarray(out)
        np.testing.assert_array_equal(out[0], images[0])
        np.testing.assert_array_equal(out[1:], 0.0)
        assert np.all(np.isfinite(gradient))
    for padding_mode in ("border", "reflection"):
        out = np.asarray(ops.sample(images, ops.affine_grid(theta, (5, 5)), padding_mode=padding_mode))
        np.testing.assert_array_equal(out[0], images[0])
        np.testing.assert_array_equal(out[1:3], 0.0)  # NaN and inf points read 0
        assert np.all(np.isfinite(out))


def test_empty_batch_forward_and_backward():
    images = tf.zeros((0, 5, 6, 3))
    theta = tf.zeros((0, 6))
    with tf.GradientTape() as tape:
        tape.watch([images, theta])
        out = ops.sample(images, ops.affine_grid(theta, (4, 4)))
    assert tuple(out.shape) == (0, 4, 4, 3)
    d_images, d_theta = tape.gradient(out, [images, theta])
    assert tuple(d_images.shape) == (0, 5, 6, 3) and tuple(d_theta.shape) == (0, 6)


def test_uint8_images_are_read_as_float32():
    images = arange_images(1, 4, 4, 1, "uint8")
    out = ops.sample(images, ops.affine_grid(IDENTITY[None], (4, 4)))
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(out, images.astype("float32"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_images_keep_their_dtype_with_float32_coordinates(dtype):
    rng = np.random.default_rng(11)
    images = rng.uniform(size=(2, 64, 64, 1)).astype("float32")
    theta = np.tile(np.array([0.9, 0.1, 0.01, -0.1, 0.9, 0.02], "float32"), (2, 1))
    grid = ops.affine_grid(theta, (64, 64))
    exact = np.asarray(ops.sample(images, grid))
    out = ops.sample(tf.cast(images, dtype), grid)
    assert out.dtype == tf.as_dtype(dtype)
    # Only the final rounding of the output: half an ulp of the dtype (values in [0, 1]).
    tolerance = {"float16": 2.0**-11, "bfloat16": 2.0**-8}[dtype]
    np.testing.assert_allclose(np.asarray(tf.cast(out, "float32")), exact, atol=tolerance)


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda: ops.sample(np.zeros((4, 4, 1)), np.zeros((1, 4, 4, 2))), "images"),
        (lambda: ops.sample(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4))), "grid"),
        (lambda: ops.sample(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4, 3))), "grid"),
        (lambda: ops.sample(np.zeros((2, 4, 4, 1)), np.zeros((3, 4, 4, 2))), "grid"),
        (lambda: ops.sample(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4, 2)), "cubic"), "interpolation"),
        (lambda: ops.sample(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4, 2)), padding_mode="wrap"), "padding_mode"),
        (lambda: ops.affine_grid(np.zeros((1, 3, 2), "float32"), (4, 4)), "theta"),
        (lambda: ops.affine_grid(np.zeros((1, 5), "float32"), (4, 4)), "theta"),
        (lambda: ops.affine_grid(np.zeros((1, 6), "int32"), (4, 4)), "theta"),
        (lambda: ops.projective_grid(np.zeros((1, 9), "float32"), (4, 4)), "theta"),
        (lambda: ops.affine_grid(np.zeros((1, 6), "float32"), (0, 4)), "output_size"),
        (lambda: ops.affine_grid(np.zeros((1, 6), "float32"), (4,)), "output_size"),
        (lambda: ops.affine_grid(np.zeros((1, 6), "float32"), (4.0, 4)), "output_size"),
        (lambda: ops.affine_grid(np.zeros((1, 6), "float32"), (10**6, 10**6)), "output_size"),
        (lambda: keras_stn.transforms.get("affine").grid(np.zeros((1, 5), "float32"), (4, 4)), "theta"),
        (lambda: keras_stn.transforms.get("rotation"), "transform"),
        (lambda: keras_stn.transforms.TPS(control_points=[[0, 0], [1, 1]]), "control_points"),
        (lambda: keras_stn.transforms.TPS(control_points=[[0, 0], [1, 1], [0, 0], [1, 0]]), "control_points"),
        (lambda: keras_stn.transforms.TPS(control_points=[[0, 0], [1, 1], [-1, -1], [0.5, 0.5]]), "control_points"),
    ],
)
def test_exception_names_the_argument(call, argument):
    with pytest.raises(ValueError, match=rf"(?s)`?{argument}`?.*Received"):
        call()


# ---------------------------------------------------------------- families and initializer


def test_families_know_their_sizes_and_identities():
    sizes = {"translation": 2, "attention": 3, "similarity": 4, "affine": 6, "projective": 8, "tps": 32}
    for name, size in sizes.items():
        family = keras_stn.transforms.get(name)
        assert family.num_params == size == family.identity().shape[0]


def test_similarity_is_a_scaled_rotation():
    angle, scale = 0.3, 1.4
    theta = np.array([[scale * np.cos(angle), scale * np.sin(angle), 0.1, -0.2]], "float32")
    grid = keras_stn.transforms.get("similarity").grid(theta, (3, 5))
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    expected = ops.affine_grid(np.array([[c, -s, 0.1, s, c, -0.2]], "float32"), (3, 5))
    np.testing.assert_allclose(grid, expected, atol=1e-6)


def test_identity_initializer_config_round_trip():
    import keras

    tps = keras_stn.transforms.TPS(grid_shape=(3, 5))
    initializer = keras_stn.initializers.TransformIdentity(tps)
    config = keras.saving.serialize_keras_object(initializer)
    revived = keras.saving.deserialize_keras_object(config)
    assert revived.transform == tps
    np.testing.assert_array_equal(revived((30,)), tps.identity().astype("float32"))
    with pytest.raises(ValueError, match="shape.*Received"):
        revived((6,))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_exception_batch_mismatch_inside_tf_function_is_not_broadcast(jit_compile):
    images_spec = tf.TensorSpec((None, 8, 8, 1), "float32")
    grid_spec = tf.TensorSpec((None, 8, 8, 2), "float32")
    function = tf.function(ops.sample, input_signature=[images_spec, grid_spec], jit_compile=jit_compile)
    grid = ops.affine_grid(IDENTITY[None], (8, 8))
    with pytest.raises(tf.errors.InvalidArgumentError):
        function(np.ones((3, 8, 8, 1), "float32"), grid)
    assert tuple(function(np.ones((1, 8, 8, 1), "float32"), grid).shape) == (1, 8, 8, 1)
