"""Regression-head initializers for several transformers (`keras_stn.initializers`) and
the tiles they start from (`keras_stn.transforms.tile_layout`, `tile_parameters`):
hand-checked tiles, grids that land on the tile's edges, exact quadrant reads, config
round trips, bad counts.
"""

import keras
import numpy as np
import pytest

from keras_stn import initializers
from keras_stn import ops
from keras_stn import transforms
from keras_stn.layers import SpatialTransformer
from tests.testing import arange_images
from tests.testing import assert_value_error_names

NAMES = ("translation", "attention", "similarity", "affine", "projective", "tps")
NAMES_3D = ("translation3d", "attention3d", "affine3d")
BAD_COUNTS = (0, -1, 2.5, True, "2", None)
# The four tiles of a 2x2 partition of [-1, 1]^2, row-major from the top left:
# (x_min, x_max, y_min, y_max).
QUADRANTS = ((-1, 0, -1, 0), (0, 1, -1, 0), (-1, 0, 0, 1), (0, 1, 0, 1))


def values(tensor):
    return keras.ops.convert_to_numpy(tensor)


# ------------------------------------------------------------------------- the layout


@pytest.mark.parametrize(
    "count, layout",
    [(1, (1, 1)), (2, (1, 2)), (3, (2, 2)), (4, (2, 2)), (5, (2, 3)), (6, (2, 3)),
     (7, (3, 3)), (9, (3, 3)), (10, (3, 4)), (np.int64(4), (2, 2))],
)
def test_tile_layout_is_as_square_as_possible_and_holds_every_tile(count, layout):
    rows, columns = transforms.tile_layout(count)
    assert (rows, columns) == layout
    assert isinstance(rows, int) and isinstance(columns, int)


@pytest.mark.parametrize("count", BAD_COUNTS)
def test_exception_tile_layout_refuses_bad_counts(count):
    assert_value_error_names(lambda: transforms.tile_layout(count), "count")


# -------------------------------------------------------------- feature: exact tiles


def test_affine_tiles_of_four_are_the_quadrants_by_hand():
    # Tile k reads x_s = x_t / 2 + cx, y_s = y_t / 2 + cy, centres at -1/2 and +1/2.
    np.testing.assert_array_equal(
        transforms.tile_parameters("affine", 4),
        [[0.5, 0, -0.5, 0, 0.5, -0.5],
         [0.5, 0, 0.5, 0, 0.5, -0.5],
         [0.5, 0, -0.5, 0, 0.5, 0.5],
         [0.5, 0, 0.5, 0, 0.5, 0.5]],
    )


def test_affine_tiles_of_two_are_the_left_and_right_halves():
    np.testing.assert_array_equal(
        transforms.tile_parameters("affine", 2),
        [[0.5, 0, -0.5, 0, 1, 0], [0.5, 0, 0.5, 0, 1, 0]],
    )


@pytest.mark.parametrize("name", ["affine", "projective", "tps"])
def test_corner_points_of_each_tile_land_on_the_tile_corners(name):
    # With align_corners=True a 2x2 output grid is the four corners (-1, -1) .. (1, 1);
    # tile k must send them to the corners of quadrant k (TPS: to float32 rounding).
    family = transforms.get(name)
    theta = transforms.tile_parameters(family, 4).astype("float32")
    grid = np.asarray(family.grid(theta, (2, 2), align_corners=True))
    for k, (x0, x1, y0, y1) in enumerate(QUADRANTS):
        expected = [[[x0, y0], [x1, y0]], [[x0, y1], [x1, y1]]]
        np.testing.assert_allclose(grid[k], expected, atol=1e-5, err_msg=f"tile {k}")


def test_affine_corner_points_through_affine_grid():
    theta = transforms.tile_parameters("affine", 4).astype("float32")
    grid = np.asarray(ops.affine_grid(theta, (2, 2), align_corners=True))
    np.testing.assert_array_equal(grid[0], [[[-1, -1], [0, -1]], [[-1, 0], [0, 0]]])
    np.testing.assert_array_equal(grid[3], [[[0, 0], [1, 0]], [[0, 1], [1, 1]]])


@pytest.mark.parametrize("name", ["affine", "projective", "tps"])
def test_four_tiles_read_the_four_quadrants_of_an_image(name):
    # An 8x8 image, 4x4 outputs, align_corners=False: output centre -0.75 reads
    # -0.875, the centre of pixel 0, so each tile copies a 4x4 quadrant.
    family = transforms.get(name)
    images = arange_images((4, 8, 8, 2))
    theta = transforms.tile_parameters(family, 4).astype("float32")
    out = np.asarray(ops.sample(images, family.grid(theta, (4, 4))))
    quadrants = [images[k, r:r + 4, c:c + 4] for k, (r, c) in
                 enumerate([(0, 0), (0, 4), (4, 0), (4, 4)])]
    np.testing.assert_allclose(out, np.stack(quadrants), atol=1e-3)


def test_attention_and_similarity_tiles_keep_a_square_inside_a_wide_tile():
    # count 2: tiles are 1 wide, 2 high (half-sizes 1/2 and 1); the isotropic scale
    # is the smaller half-size, 1/2: the square x in [-1, 0], y in [-1/2, 1/2].
    np.testing.assert_array_equal(
        transforms.tile_parameters("attention", 2), [[0.5, -0.5, 0], [0.5, 0.5, 0]]
    )
    np.testing.assert_array_equal(
        transforms.tile_parameters("similarity", 2), [[0.5, 0, -0.5, 0], [0.5, 0, 0.5, 0]]
    )


@pytest.mark.parametrize("name", ["attention", "similarity"])
def test_isotropic_tiles_stay_inside_their_tile(name):
    family = transforms.get(name)
    for count in (2, 3, 5, 6):
        rows, columns = transforms.tile_layout(count)
        theta = transforms.tile_parameters(family, count).astype("float32")
        grid = np.asarray(family.grid(theta, (2, 2), align_corners=True))
        for k in range(count):
            row, column = divmod(k, columns)
            x0, y0 = -1 + 2 * column / columns, -1 + 2 * row / rows
            x, y = grid[k, ..., 0], grid[k, ..., 1]
            assert np.all(x >= x0 - 1e-6) and np.all(x <= x0 + 2 / columns + 1e-6)
            assert np.all(y >= y0 - 1e-6) and np.all(y <= y0 + 2 / rows + 1e-6)
            # ... and touch its shorter sides: the largest square that fits.
            extent = min(x.max() - x.min(), y.max() - y.min())
            assert extent == pytest.approx(min(2 / columns, 2 / rows), abs=1e-6)


def test_translation_tiles_shift_to_the_tile_centres():
    np.testing.assert_array_equal(
        transforms.tile_parameters("translation", 4),
        [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]],
    )


def test_tiles_of_a_partition_with_a_spare_tile_leave_it_unused():
    # count 3 on a 2x2 layout: the bottom-right quadrant is nobody's.
    np.testing.assert_array_equal(
        transforms.tile_parameters("translation", 3), [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5]]
    )


@pytest.mark.parametrize("name", NAMES + NAMES_3D)
def test_one_tile_is_the_identity(name):
    family = transforms.get(name)
    np.testing.assert_allclose(
        transforms.tile_parameters(family, 1), family.identity()[None], atol=1e-12
    )


@pytest.mark.parametrize("name", NAMES + NAMES_3D)
def test_tile_parameters_shape_and_dtype(name):
    family = transforms.get(name)
    theta = transforms.tile_parameters(name, 5)
    assert isinstance(theta, np.ndarray) and theta.dtype == np.float64
    assert theta.shape == (5, family.num_params)


def test_tps_with_custom_control_points_reads_its_tile():
    family = transforms.TPS(control_points=[[-1, -1], [1, -1], [0, 0.5], [-1, 1], [1, 1]])
    theta = transforms.tile_parameters(family, 2)
    np.testing.assert_allclose(
        theta[1].reshape(-1, 2), [[0, -1], [1, -1], [0.5, 0.5], [0, 1], [1, 1]]
    )


@pytest.mark.parametrize("count", BAD_COUNTS)
def test_exception_tile_parameters_refuses_bad_counts(count):
    assert_value_error_names(lambda: transforms.tile_parameters("affine", count), "count")


# ------------------------------------------------------ volumes: x-y tiles, full depth


def test_volume_tiles_by_hand():
    # Four tiles: the x-y quadrants; affine3d keeps the whole depth (z row identity),
    # attention3d's one scale shrinks z too, translation3d only shifts in x and y.
    np.testing.assert_array_equal(
        transforms.tile_parameters("affine3d", 4)[1],
        [0.5, 0, 0, 0.5, 0, 0.5, 0, -0.5, 0, 0, 1, 0],
    )
    np.testing.assert_array_equal(
        transforms.tile_parameters("attention3d", 4),
        [[0.5, -0.5, -0.5, 0], [0.5, 0.5, -0.5, 0], [0.5, -0.5, 0.5, 0], [0.5, 0.5, 0.5, 0]],
    )
    np.testing.assert_array_equal(
        transforms.tile_parameters("translation3d", 2), [[-0.5, 0, 0], [0.5, 0, 0]]
    )


def test_four_affine3d_tiles_read_the_four_quadrants_at_every_depth():
    volumes = arange_images((4, 3, 8, 8, 2))
    family = transforms.get("affine3d")
    theta = transforms.tile_parameters(family, 4).astype("float32")
    out = np.asarray(ops.sample(volumes, family.grid(theta, (3, 4, 4))))
    quadrants = [volumes[k, :, r:r + 4, c:c + 4] for k, (r, c) in
                 enumerate([(0, 0), (0, 4), (4, 0), (4, 4)])]
    np.testing.assert_array_equal(out, np.stack(quadrants))


def test_a_volume_transformer_starts_on_its_tiles():
    # Two transformers on an (1, 3, 4, 8, 1) volume: the left and right halves.
    volumes = arange_images((1, 3, 4, 8, 1))
    layer = SpatialTransformer(
        "affine3d", output_size=(3, 4, 4), num_transformers=2, initial_transform="tiles"
    )
    out = np.asarray(layer(volumes))
    assert out.shape == (1, 3, 4, 4, 2)
    np.testing.assert_array_equal(out[..., 0], volumes[..., :4, 0])
    np.testing.assert_array_equal(out[..., 1], volumes[..., 4:, 0])


def test_exception_tile_parameters_refuses_an_unknown_family():
    assert_value_error_names(lambda: transforms.tile_parameters("warp", 2), "transform")


def test_exception_a_family_without_boxes_cannot_be_tiled():
    class Shear(transforms.Transform):
        name = "shear"

        def identity(self):
            return np.zeros(1)

    assert_value_error_names(lambda: transforms.tile_parameters(Shear(), 2), "transform")


# ----------------------------------------------------------------------- initializers


@pytest.mark.parametrize("name", NAMES)
def test_identity_initializer_repeats_the_identity_count_times(name):
    family = transforms.get(name)
    bias = values(initializers.TransformIdentity(name, count=3)((3 * family.num_params,)))
    np.testing.assert_allclose(bias, np.tile(family.identity(), 3), atol=1e-7)


def test_identity_initializer_count_one_is_the_single_identity():
    bias = values(initializers.TransformIdentity("attention")((3,)))
    np.testing.assert_array_equal(bias, [1, 0, 0])


@pytest.mark.parametrize("name", NAMES + NAMES_3D)
def test_tiles_initializer_is_the_flattened_tile_parameters(name):
    family = transforms.get(name)
    bias = values(initializers.TransformTiles(name, 4)((4 * family.num_params,)))
    np.testing.assert_allclose(
        bias, transforms.tile_parameters(family, 4).reshape(-1), atol=1e-7
    )


def test_tiles_initializer_follows_the_dtype():
    bias = initializers.TransformTiles("affine", 2)((12,), dtype="float64")
    assert keras.backend.standardize_dtype(bias.dtype) == "float64"


def test_zero_kernel_head_with_tiles_outputs_the_tiles_for_every_input():
    head = keras.layers.Dense(
        12, kernel_initializer="zeros", bias_initializer=initializers.TransformTiles("affine", 2)
    )
    theta = values(head(np.random.default_rng(0).normal(size=(3, 5))))
    np.testing.assert_allclose(
        theta.reshape(3, 2, 6), np.broadcast_to([[0.5, 0, -0.5, 0, 1, 0],
                                                 [0.5, 0, 0.5, 0, 1, 0]], (3, 2, 6)),
        atol=1e-7,
    )


@pytest.mark.parametrize(
    "initializer",
    [initializers.TransformIdentity("tps", count=2), initializers.TransformIdentity("affine"),
     initializers.TransformTiles("attention", 3), initializers.TransformTiles("tps", 4),
     initializers.TransformTiles(transforms.TPS(grid_shape=(3, 3)), 2)],
    ids=["identity-tps-2", "identity-affine-1", "tiles-attention-3", "tiles-tps-4",
         "tiles-tps3x3-2"],
)
def test_config_round_trips_directly_and_by_registered_name(initializer):
    size = initializer.count * initializer.transform.num_params
    config = initializer.get_config()
    assert config["count"] == initializer.count
    revived = type(initializer).from_config(config)
    np.testing.assert_array_equal(values(revived((size,))), values(initializer((size,))))
    deserialized = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(initializer))
    assert type(deserialized) is type(initializer)
    np.testing.assert_array_equal(values(deserialized((size,))), values(initializer((size,))))


def test_identity_config_saved_before_count_existed_still_loads():
    revived = initializers.TransformIdentity.from_config({"transform": "affine"})
    assert revived.count == 1
    np.testing.assert_array_equal(values(revived((6,))), [1, 0, 0, 0, 1, 0])


@pytest.mark.parametrize("cls", [initializers.TransformIdentity, initializers.TransformTiles])
@pytest.mark.parametrize("count", BAD_COUNTS)
def test_exception_initializers_refuse_bad_counts(cls, count):
    assert_value_error_names(lambda: cls("affine", count), "count")


@pytest.mark.parametrize(
    "initializer, shape",
    [(initializers.TransformIdentity("affine", count=2), (6,)),
     (initializers.TransformTiles("affine", 2), (6,)),
     (initializers.TransformTiles("attention", 4), (4, 3))],
)
def test_exception_shape_must_hold_count_transforms(initializer, shape):
    assert_value_error_names(lambda: initializer(shape), "shape")
