"""`keras_stn.ops.sample(..., antialias=True)`: mip-mapped bilinear sampling.

Where the grid shrinks the image, each point reads a pyramid of 2x average-pooled
copies at the level its grid spacing calls for; elsewhere the result is plain bilinear,
bit for bit. The expected values are means of stripe patterns, checkable by hand.
"""

import keras
import numpy as np
import pytest

from keras_stn import ops
from tests.testing import assert_value_error_names
from tests.testing import random_images
from tests.testing import value_and_gradients

IDENTITY = np.array([[1.0, 0, 0, 0, 1.0, 0]], "float32")


def stripes(size, period, on=1, batch=1):
    """Vertical stripes: `on` columns of 1 then `period - on` of 0, repeated."""
    images = np.zeros((batch, size, size, 1), "float32")
    for start in range(on):
        images[:, :, start::period] = 1.0
    return images


def test_shrinking_stripes_4x_reads_their_mean():
    # 1 on, 3 off, period 4, read 4x smaller: each output point covers one period
    # (mean 0.25). Plain bilinear reads at pixels 4j + 1.5, between two dark columns.
    images = stripes(64, 4)
    grid = ops.affine_grid(IDENTITY, (16, 16))
    plain = np.asarray(ops.sample(images, grid))
    smooth = np.asarray(ops.sample(images, grid, antialias=True))
    np.testing.assert_array_equal(plain, 0.0)
    np.testing.assert_allclose(smooth, 0.25, atol=1e-6)


def test_shrinking_stripes_by_a_fraction_reads_their_mean():
    # 60 -> 28 (2.14x, between levels 1 and 2): stripes of period 2 have mean 0.5 at
    # every level; plain bilinear aliases them into a slow wave between 0 and ~0.5.
    images = stripes(60, 2)
    grid = ops.affine_grid(IDENTITY, (28, 28))
    plain = np.asarray(ops.sample(images, grid))[0, 2:-2, 2:-2]
    smooth = np.asarray(ops.sample(images, grid, antialias=True))[0, 2:-2, 2:-2]
    assert np.abs(plain - 0.5).max() > 0.3
    np.testing.assert_allclose(smooth, 0.5, atol=1e-6)


def test_shrinking_volume_stripes_reads_their_mean():
    volumes = np.zeros((1, 16, 16, 16, 1), "float32")
    volumes[:, ::4] = 1.0  # planes along the depth, 1 on, 3 off
    z = y = x = (2.0 * np.arange(4) + 1.0) / 4 - 1.0
    grid = np.stack(np.meshgrid(z, y, x, indexing="ij")[::-1], axis=-1)[None]
    smooth = np.asarray(ops.sample(volumes, grid.astype("float32"), antialias=True))
    np.testing.assert_allclose(smooth, 0.25, atol=1e-6)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection", "constant"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_where_the_grid_does_not_shrink_the_result_is_plain_bilinear_bit_for_bit(
    rng, padding_mode, align_corners
):
    images = random_images((2, 20, 24, 3))
    fill = 0.3 if padding_mode == "constant" else 0.0
    # A zoom in with rotation and shift (steps of 0.4-0.7 px), and the identity.
    zoom = np.array([[0.5, 0.2, 0.1, -0.2, 0.6, 0.0], [0.6, -0.1, -0.3, 0.1, 0.5, 0.2]],
                    "float32")
    for theta, size in ((zoom, (40, 40)), (np.tile(IDENTITY, (2, 1)), (20, 24))):
        grid = ops.affine_grid(theta, size, align_corners)
        kwargs = dict(padding_mode=padding_mode, align_corners=align_corners,
                      fill_value=fill)
        plain = ops.sample(images, grid, **kwargs)
        smooth = ops.sample(images, grid, antialias=True, **kwargs)
        np.testing.assert_array_equal(smooth, plain)
    np.testing.assert_array_equal(smooth, images)


def test_a_grid_that_shrinks_only_in_places_is_plain_elsewhere():
    # A grid whose left half zooms in (steps of 0.46 px) and right half shrinks 6x along x.
    images = random_images((1, 32, 64, 1))
    xs = np.concatenate([np.linspace(-1, -0.9, 8), np.linspace(-0.5, 1.0, 8)])
    ys = np.linspace(-0.2, 0.2, 8)  # steps of 0.9 px
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)[None].astype("float32")
    plain = np.asarray(ops.sample(images, grid))
    smooth = np.asarray(ops.sample(images, grid, antialias=True))
    np.testing.assert_array_equal(smooth[:, :, :7], plain[:, :, :7])
    assert np.abs(smooth[:, :, 9:] - plain[:, :, 9:]).max() > 0.05


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "constant"])
def test_antialias_gradients_match_finite_differences(rng, padding_mode):
    # Float64; an affine shrink of 2.3x (levels 1 and 2 blended) with a small random
    # warp, so the level varies from point to point and depends on the grid.
    images = rng.uniform(size=(1, 8, 8, 1))
    theta = np.array([[0.9, 0.1, 0.05, -0.1, 0.8, -0.05]])
    grid = np.asarray(ops.affine_grid(theta, (3, 3))) + rng.uniform(-0.02, 0.02, (1, 3, 3, 2))
    weights = rng.uniform(-1, 1, size=(1, 3, 3, 1))
    fill = 0.4 if padding_mode == "constant" else 0.0

    def value(images, grid):
        out = ops.sample(images, grid, padding_mode=padding_mode, fill_value=fill,
                         antialias=True)
        return keras.ops.sum(out * weights)

    def numeric(images, grid):
        return float(keras.ops.convert_to_numpy(value(images, grid)))

    _, grads = value_and_gradients(value, images, grid)
    for which, analytic in enumerate(grads):
        args = [images, grid]
        finite = np.zeros_like(args[which])
        for index in np.ndindex(*args[which].shape):
            step = np.zeros_like(args[which])
            step[index] = 1e-6
            plus, minus = list(args), list(args)
            plus[which], minus[which] = args[which] + step, args[which] - step
            finite[index] = (numeric(*plus) - numeric(*minus)) / 2e-6
        np.testing.assert_allclose(analytic, finite, atol=1e-6)
    assert np.abs(grads[1]).max() > 0.1


def test_antialias_compiled_equals_eager(rng):
    import tensorflow as tf

    images = tf.constant(random_images((2, 30, 30, 3)))
    theta = tf.constant([[1.1, 0.2, 0.1, -0.1, 0.9, 0.0], [0.4, 0.0, 0.2, 0.0, 0.5, -0.3]])

    def read(images, theta):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            grid = ops.affine_grid(theta, (12, 10))
            out = ops.sample(images, grid, antialias=True)
            loss = tf.reduce_sum(out * tf.range(3, dtype=out.dtype))
        return [out, *tape.gradient(loss, [images, theta])]

    compiled = tf.function(read, jit_compile=True)(images, theta)
    for result, eager in zip(compiled, read(images, theta)):
        np.testing.assert_allclose(result, eager, rtol=1e-5, atol=1e-5)


def test_antialias_makes_no_dense_intermediate():
    # Nothing of batch x out points x image pixels: the compiled program's largest
    # array stays within a few copies of the image pyramid or of the output.
    import re

    import tensorflow as tf

    batch, size, out = 2, 64, 16
    images = tf.constant(random_images((batch, size, size, 1)))
    theta = tf.constant(np.tile(IDENTITY, (batch, 1)))

    def read(images, theta):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            out_ = ops.sample(images, ops.affine_grid(theta, (out, out)), antialias=True)
        return tape.gradient(out_, [images, theta])

    hlo = tf.function(read, jit_compile=True).experimental_get_compiler_ir(images, theta)(
        stage="optimized_hlo")
    sizes = [int(np.prod([int(d) for d in dims.split(",") if d]))
             for dims in re.findall(r"\w+\[([\d,]*)\]", hlo)]
    dense = batch * out * out * size * size
    assert max(sizes) < dense / 50, max(sizes)


@pytest.mark.parametrize(
    "kwargs",
    [dict(antialias="yes"), dict(antialias=1), dict(antialias=None),
     dict(antialias=True, interpolation="nearest")],
    ids=["string", "int", "none", "nearest"],
)
def test_exception_bad_antialias_is_named(kwargs):
    images = np.zeros((1, 8, 8, 1), "float32")
    grid = np.zeros((1, 4, 4, 2), "float32")
    assert_value_error_names(lambda: ops.sample(images, grid, **kwargs), "antialias")


def test_exception_antialias_needs_static_sizes():
    import tensorflow as tf

    function = tf.function(
        lambda images, grid: ops.sample(images, grid, antialias=True),
        input_signature=[tf.TensorSpec((None, None, None, 1)), tf.TensorSpec((None, 4, 4, 2))],
    )
    with pytest.raises(ValueError, match="antialias"):
        function.get_concrete_function()
