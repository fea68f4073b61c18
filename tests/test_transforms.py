"""Transform families (`keras_stn.transforms`) and the identity initializer
(`keras_stn.initializers.TransformIdentity`): sizes, identities, grids against the NumPy
reference, exact identity sampling, hand-checked answers, XLA, bad input.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_stn
from keras_stn import ops
from keras_stn import transforms
from tests import reference
from tests.testing import arange_images
from tests.testing import assert_value_error_names

ALIGNS = (False, True)
NAMES = ("translation", "attention", "similarity", "affine", "projective", "tps")
NUM_PARAMS = {"translation": 2, "attention": 3, "similarity": 4, "affine": 6,
              "projective": 8, "tps": 32}
THIRD = 1.0 / 3.0
IDENTITIES = {
    "translation": [0, 0],
    "attention": [1, 0, 0],
    "similarity": [1, 0, 0, 0],
    "affine": [1, 0, 0, 0, 1, 0],
    "projective": [1, 0, 0, 0, 1, 0, 0, 0],  # the keystone form's, as the matrix form's
    # The 4x4 control points themselves, row by row (y outer, x inner), as (x, y) pairs.
    "tps": [coordinate
            for y in (-1, -THIRD, THIRD, 1)
            for x in (-1, -THIRD, THIRD, 1)
            for coordinate in (x, y)],
}


CORNERS = [-1, -1, 1, -1, -1, 1, 1, 1]  # the output's corners: the "corners" identity


def random_theta(rng, name, batch):
    identity = np.array(CORNERS if name == "corners" else IDENTITIES[name], dtype="float64")
    noise = rng.normal(size=(batch, identity.size)) * 0.2
    return (identity + noise).astype("float32")


# ------------------------------------------------------------------ smoke and sizes


@pytest.mark.parametrize("name", NAMES)
def test_get_returns_the_family_with_its_size_and_identity(name):
    family = transforms.get(name)
    assert family.num_params == NUM_PARAMS[name]
    identity = family.identity()
    assert isinstance(identity, np.ndarray)
    assert np.issubdtype(identity.dtype, np.floating)
    assert identity.shape == (NUM_PARAMS[name],)
    np.testing.assert_allclose(identity, IDENTITIES[name], atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_get_passes_a_transform_object_through(name):
    family = transforms.get(name)
    again = transforms.get(family)
    assert again.num_params == family.num_params
    np.testing.assert_array_equal(again.identity(), family.identity())


def test_exception_unknown_transform_name_lists_the_names():
    with pytest.raises(ValueError) as info:
        transforms.get("perspective-ish")
    message = str(info.value)
    assert "perspective-ish" in message
    for name in NAMES:
        assert name in message, message


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("align_corners", ALIGNS)
def test_grid_of_every_family_matches_reference(rng, name, align_corners):
    family = transforms.get(name)
    theta = random_theta(rng, name, 3)
    grid = family.grid(theta, (5, 7), align_corners=align_corners)
    assert tuple(grid.shape) == (3, 5, 7, 2)
    expected = reference.family_grid(name, theta, (5, 7), align_corners)
    np.testing.assert_allclose(grid, expected, atol=1e-5)


# ----------------------------------------------------------- feature: exact answers


@pytest.mark.parametrize("size", [(5, 7), (6, 3)])
@pytest.mark.parametrize("channels", [1, 3, 64])
@pytest.mark.parametrize("align_corners", ALIGNS)
@pytest.mark.parametrize("name", NAMES)
def test_identity_is_exact_for_every_family(name, align_corners, channels, size):
    family = transforms.get(name)
    images = arange_images((2, *size, channels))
    theta = np.tile(family.identity(), (2, 1)).astype("float32")
    grid = family.grid(theta, size, align_corners=align_corners)
    out = ops.sample(images, grid, align_corners=align_corners)
    np.testing.assert_array_equal(out, images)


def test_identity_of_every_family_is_exact_under_xla():
    images = arange_images((2, 5, 7, 3))
    families = [transforms.get(name) for name in NAMES]

    @tf.function(jit_compile=True)
    def identities(images):
        return [
            ops.sample(
                images,
                family.grid(np.tile(family.identity(), (2, 1)).astype("float32"), (5, 7),
                            align_corners=align_corners),
                align_corners=align_corners,
            )
            for family in families
            for align_corners in ALIGNS
        ]

    for out in identities(images):
        np.testing.assert_array_equal(out, images)


def test_translation_by_one_pixel_is_exact():
    # Width 8, height 4, align_corners=False: one pixel is 2/8 in x and 2/4 in y.
    images = arange_images((1, 4, 8, 1)) + 1.0
    theta = np.array([[0.25, -0.5]], "float32")  # read one right, one up
    out = np.asarray(ops.sample(images, transforms.get("translation").grid(theta, (4, 8))))
    expected = np.zeros_like(images)
    expected[:, 1:, :-1] = images[:, :-1, 1:]
    np.testing.assert_array_equal(out, expected)


def test_attention_at_half_scale_is_the_central_crop():
    # s = 0.5 with a half-size output: x_s = 0.5 x_t lands exactly on the centres of the
    # middle half of the pixels (pixel-unit x = j + W / 4).
    images = arange_images((2, 8, 12, 3))
    theta = np.tile(np.array([0.5, 0.0, 0.0], "float32"), (2, 1))
    out = ops.sample(images, transforms.get("attention").grid(theta, (4, 6)))
    np.testing.assert_array_equal(out, images[:, 2:6, 3:9])


def test_similarity_with_a_quarter_turn_is_a_90_degree_rotation():
    # a = cos 90 = 0, b = sin 90 = 1: [[0, -1, 0], [1, 0, 0]], output (W, H).
    images = arange_images((1, 4, 6, 2))
    theta = np.array([[0.0, 1.0, 0.0, 0.0]], "float32")
    out = ops.sample(images, transforms.get("similarity").grid(theta, (6, 4)))
    np.testing.assert_array_equal(out, np.rot90(images, k=1, axes=(1, 2)))


def test_tps_default_control_points_are_ordered_row_by_row(rng):
    # With align_corners=True a 4x4 output puts the grid points on the control points, so
    # grid[i, j] must be where control point 4 i + j was sent.
    theta = random_theta(rng, "tps", 1)
    grid = np.asarray(transforms.get("tps").grid(theta, (4, 4), align_corners=True))
    np.testing.assert_allclose(grid[0].reshape(16, 2), theta.reshape(16, 2), atol=1e-5)


# ------------------------------------------------------------------------- projective


@pytest.mark.parametrize("form", ["keystone", "corners"])
def test_projective_puts_the_output_corners_where_its_theta_says(rng, form):
    # With align_corners=True a 2x2 grid is the output's four corners.
    theta = random_theta(rng, "projective" if form == "keystone" else form, 4)
    corners = reference.keystone_corners(theta) if form == "keystone" else theta
    grid = np.asarray(transforms.Projective(form).grid(theta, (2, 2), align_corners=True))
    np.testing.assert_allclose(grid.reshape(4, 8), corners, atol=1e-5)


@pytest.mark.parametrize("align_corners", ALIGNS)
def test_projective_corners_is_the_matrix_form_of_its_homography(rng, align_corners):
    corners = random_theta(rng, "corners", 3)
    matrix = reference.corners_homography(corners)  # the DLT's 8x8 solve, h33 = 1
    homography = np.asarray(transforms.Projective("corners").homography(corners))
    np.testing.assert_allclose(homography / homography[:, 2:, 2:], matrix, atol=1e-5)
    # The same grid as the matrix form's of that homography (the paper's parameters).
    flat = matrix.reshape(3, 9)[:, :8].astype("float32")
    np.testing.assert_allclose(
        transforms.Projective("corners").grid(corners, (5, 7), align_corners),
        transforms.Projective("matrix").grid(flat, (5, 7), align_corners),
        atol=1e-5,
    )


@pytest.mark.parametrize("form", ["keystone", "corners", "matrix"])
def test_projective_without_keystone_or_perspective_is_the_affine_grid(rng, form):
    affine = (np.array([1, 0, 0, 0, 1, 0]) + rng.normal(size=(3, 6)) * 0.2).astype("float32")
    if form == "corners":
        points = [affine.reshape(3, 2, 3) @ np.array([x, y, 1.0]) for y in (-1, 1) for x in (-1, 1)]
        theta = np.stack(points, axis=1).reshape(3, 8).astype("float32")
    else:
        theta = np.concatenate([affine, np.zeros((3, 2), "float32")], axis=1)
    homography = np.asarray(transforms.Projective(form).homography(theta))
    np.testing.assert_allclose(homography[:, 2], [[0, 0, 1]] * 3, atol=1e-6)
    np.testing.assert_allclose(
        transforms.Projective(form).grid(theta, (4, 6)), ops.affine_grid(affine, (4, 6)),
        atol=1e-5,
    )


def test_keystone_and_matrix_forms_move_the_grid_alike_near_the_identity():
    # The same derivative with respect to the six affine parameters at the identity;
    # the last two differ (a keystone against a perspective term).
    def jacobian(form):
        theta = tf.constant(np.array([[1, 0, 0, 0, 1, 0, 0, 0]], "float64"))
        with tf.GradientTape() as tape:
            tape.watch(theta)
            grid = transforms.Projective(form).grid(theta, (4, 5))
        return tape.jacobian(grid, theta).numpy().reshape(-1, 8)

    keystone, matrix = jacobian("keystone"), jacobian("matrix")
    np.testing.assert_allclose(keystone[:, :6], matrix[:, :6], atol=1e-12)
    assert np.abs(keystone[:, 6:] - matrix[:, 6:]).max() > 0.1


def test_keystone_reads_a_trapezoid():
    # kx = 0.25: the top edge reads x in [-0.75, 0.75], the bottom x in [-1.25, 1.25].
    theta = np.array([[1, 0, 0, 0, 1, 0, 0.25, 0]], "float32")
    grid = np.asarray(transforms.Projective().grid(theta, (2, 2), align_corners=True))
    np.testing.assert_allclose(grid[0, :, :, 0], [[-0.75, 0.75], [-1.25, 1.25]], atol=1e-6)
    np.testing.assert_allclose(grid[0, :, :, 1], [[-1, -1], [1, 1]], atol=1e-6)


def test_projective_corners_of_a_degenerate_quadrilateral_read_nothing():
    # The top right, bottom right and bottom left corners on one line (x + y = 0): no
    # homography, and the closed form divides by zero; the grid is NaN, the sample 0.
    theta = np.array([[-1, -1, 1, -1, -1, 1, 0, 0]], "float32")
    grid = np.asarray(transforms.Projective("corners").grid(theta, (3, 3)))
    assert np.isnan(grid).all()
    out = ops.sample(arange_images((1, 4, 4, 1)) + 1.0, grid)
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("form", ["keystone", "corners"])
def test_gradient_of_projective_forms_matches_finite_differences(rng, form):
    theta = random_theta(rng, "projective" if form == "keystone" else form, 2)
    theoretical, numerical = tf.test.compute_gradient(
        lambda theta: transforms.Projective(form).grid(theta, (3, 4)),
        [tf.constant(theta.astype("float64"))],
    )
    # Central differences of step 1e-3 err by about 1e-6 times the curvature.
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-5)


def test_projective_forms_round_trip_and_old_configs_are_the_matrix():
    for form in transforms.Projective.PARAMETERISATIONS:
        family = transforms.Projective(form)
        again = transforms.get(keras.saving.serialize_keras_object(family))
        assert again == family and again.parameterisation == form
        assert transforms.from_saved(transforms.serialize(family)) == family
    assert transforms.get("projective") == transforms.Projective("keystone")
    # Saved configs name the form: a bare "projective" there is 0.1.0's matrix.
    assert transforms.serialize("projective")["config"] == {"parameterisation": "keystone"}
    assert transforms.from_saved("projective") == transforms.Projective("matrix")
    assert transforms.from_saved("affine") == transforms.Affine()
    # A config saved before the corners form existed had no parameterisation.
    assert transforms.Projective.from_config({}) == transforms.Projective("matrix")
    np.testing.assert_array_equal(
        transforms.Projective("matrix").identity(), [1, 0, 0, 0, 1, 0, 0, 0]
    )


def test_exception_projective_unknown_parameterisation():
    assert_value_error_names(lambda: transforms.Projective("quad"), "parameterisation")


# -------------------------------------------------------------------------------- TPS


def test_tps_with_custom_control_points():
    points = np.array([[-0.8, -0.7], [0.9, -0.6], [0.0, 0.8], [0.2, -0.1], [-0.5, 0.3]])
    family = transforms.TPS(control_points=points)
    assert family.num_params == 10
    np.testing.assert_allclose(family.identity(), points.ravel(), atol=1e-7)
    theta = (points + np.array([0.1, -0.05])).reshape(1, 10).astype("float32")
    np.testing.assert_allclose(
        family.grid(theta, (4, 5)), reference.tps_grid(theta, points, (4, 5)), atol=1e-5)


def test_tps_grid_shape_sets_the_number_of_control_points():
    family = transforms.TPS(grid_shape=(3, 3))
    assert family.num_params == 18
    np.testing.assert_allclose(
        family.identity(), reference.default_control_points((3, 3)).ravel(), atol=1e-7)


@pytest.mark.parametrize(
    "points",
    [
        [[0.0, 0.0], [0.5, 0.5], [0.0, 0.0], [1.0, -1.0]],
        [[-1.0, -1.0], [0.0, 0.0], [0.5, 0.5], [1.0, 1.0]],
        [[-1.0, 0.2], [0.0, 0.2], [1.0, 0.2]],
        [[-1.0, -1.0], [1.0, 1.0]],
    ],
    ids=["duplicate", "collinear_diagonal", "collinear_horizontal", "two_points"],
)
def test_exception_tps_bad_control_points(points):
    assert_value_error_names(lambda: transforms.TPS(control_points=np.array(points)),
                             "control_points")


@pytest.mark.parametrize("name", NAMES)
def test_exception_theta_of_the_wrong_size_for_the_family(name):
    family = transforms.get(name)
    theta = np.zeros((2, family.num_params + 1), "float32")
    assert_value_error_names(lambda: family.grid(theta, (4, 4)), "theta")


# ------------------------------------------------------------------------ initializer


@pytest.mark.parametrize("name", NAMES)
def test_identity_initializer_returns_the_identity(name):
    initializer = keras_stn.initializers.TransformIdentity(name)
    values = keras.ops.convert_to_numpy(initializer((NUM_PARAMS[name],)))
    np.testing.assert_allclose(values, IDENTITIES[name], atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_identity_initializer_config_round_trips(name):
    initializer = keras_stn.initializers.TransformIdentity(transform=name)
    revived = keras_stn.initializers.TransformIdentity.from_config(initializer.get_config())
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(revived((NUM_PARAMS[name],))),
        keras.ops.convert_to_numpy(initializer((NUM_PARAMS[name],))),
    )
    deserialized = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(initializer))
    assert isinstance(deserialized, keras_stn.initializers.TransformIdentity)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(deserialized((NUM_PARAMS[name],))),
        keras.ops.convert_to_numpy(initializer((NUM_PARAMS[name],))),
    )


def test_identity_initializer_defaults_to_affine():
    values = keras.ops.convert_to_numpy(keras_stn.initializers.TransformIdentity()((6,)))
    np.testing.assert_array_equal(values, [1, 0, 0, 0, 1, 0])


def test_a_zero_kernel_dense_head_with_identity_bias_outputs_the_identity():
    # How the package starts a localisation head: zero kernel, identity bias.
    head = keras.layers.Dense(
        8, kernel_initializer="zeros",
        bias_initializer=keras_stn.initializers.TransformIdentity("projective"))
    theta = keras.ops.convert_to_numpy(head(np.random.default_rng(0).normal(size=(3, 5))))
    np.testing.assert_allclose(theta, np.tile(IDENTITIES["projective"], (3, 1)), atol=1e-7)
