"""The differentiable sampler: read images or volumes at the points of a grid.

One design for both spatial ranks: images `(batch, height, width, channels)` with a
grid `(batch, out_height, out_width, 2)`, and volumes `(batch, depth, height, width,
channels)` with a grid `(batch, out_depth, out_height, out_width, 3)`. The math is a
few small pure functions of their arguments (coordinates in pixel units, a padded
image, tap indices); the interpolation kernel's hand-written gradient reads only its
own arguments, so it differentiates on every Keras backend.
"""

import functools
import itertools
import math

import keras
import numpy as np
from keras import ops

from keras_stn import _checks

INTERPOLATIONS = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection", "constant")

# Pixel coordinates this many float epsilons times the image side away from an integer
# are snapped to it in the forward pass. The round trip pixel -> [-1, 1] -> pixel alone
# is off by a few epsilons times the side, so snapping only removes rounding noise: it
# is what makes an identity transform return its input bit for bit. The gradient is
# computed at the unsnapped coordinates, so it is torch's, point for point.
SNAP_EPSILONS = 4

_RANKS = {4: 2, 5: 3}
_SHAPES = {
    2: ("(batch, height, width, channels)", "(batch, out_height, out_width, 2)"),
    3: (
        "(batch, depth, height, width, channels)",
        "(batch, out_depth, out_height, out_width, 3)",
    ),
}


def sample(
    images,
    grid,
    interpolation="bilinear",
    padding_mode="zeros",
    align_corners=False,
    data_format=None,
    fill_value=0.0,
    antialias=False,
):
    """Samples `images` (or volumes) at the normalised coordinates in `grid`.

    Output point `(b, i, j)` is `images[b]` read at `grid[b, i, j]`, with the same
    semantics as `torch.nn.functional.grid_sample` for the same `interpolation`
    (`mode`), `padding_mode` and `align_corners`, for 4-D images and 5-D volumes
    alike (bilinear on volumes is trilinear, as in torch). Differentiable with
    respect to `images` and, for bilinear interpolation, `grid`.

    Coordinates: `grid[..., 0]` is x, along the width; `grid[..., 1]` is y, along the
    height; on volumes `grid[..., 2]` is z, along the depth. All are normalised so
    that -1 and +1 are the outer edges of the corner pixels (`align_corners=False`)
    or the centres of the corner pixels (`align_corners=True`). Points outside read
    according to `padding_mode`: `"zeros"` reads 0, `"constant"` reads `fill_value`,
    `"border"` the nearest border pixel, `"reflection"` the image mirrored at its
    border. A point with a NaN or infinite coordinate is outside: it reads
    `fill_value` under `"constant"` and 0 under every other mode, and passes no
    gradient.

    With `antialias=True` (bilinear only), each output point averages the input
    over its footprint where the grid shrinks the image: the points read a pyramid of
    2x average-pooled copies (mip-mapping), at the level the local grid spacing calls
    for, blended linearly between the two nearest levels. Where the spacing is at
    most one input pixel the result is plain bilinear, bit for bit. Levels of an odd
    size average the pixels that exist, so near such a border the footprint is
    approximate. Needs static spatial sizes.

    Args:
        images: `(batch, height, width, channels)` or `(batch, depth, height, width,
            channels)`; channels second with `data_format="channels_first"`.
            Integer images are read as float32.
        grid: `(batch, out_height, out_width, 2)` source coordinates `(x, y)`, or
            `(batch, out_depth, out_height, out_width, 3)` `(x, y, z)` for volumes.
        interpolation: `"bilinear"` (the paper's kernel; trilinear on volumes) or
            `"nearest"` (rounds half to even, as torch does).
        padding_mode: `"zeros"`, `"constant"`, `"border"` or `"reflection"`.
        align_corners: whether -1 and +1 are the centres of the corner pixels.
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.
        fill_value: what `padding_mode="constant"` reads outside: a number, or one
            number per channel.
        antialias: average over each point's footprint where the grid shrinks.

    Returns:
        `(batch, out_height, out_width, channels)` (or the volume's shape, or
        channels first), in the images' dtype (float32 for integer images).
        Coordinates and weights are computed in float32 (float64 if images or grid
        are float64).

    Example:
    >>> import numpy as np
    >>> from keras_stn import ops
    >>> images = np.arange(12, dtype="float32").reshape(1, 3, 4, 1)
    >>> identity = ops.affine_grid(np.array([[1, 0, 0, 0, 1, 0]], "float32"), (3, 4))
    >>> bool(np.all(ops.sample(images, identity) == images))
    True
    """
    _checks.check_choice("interpolation", interpolation, INTERPOLATIONS)
    _checks.check_choice("padding_mode", padding_mode, PADDING_MODES)
    data_format = _checks.check_data_format(data_format)
    antialias = check_antialias(antialias, interpolation)
    images = ops.convert_to_tensor(images)
    grid = ops.convert_to_tensor(grid)
    images_shape = tuple(images.shape)
    rank = _RANKS.get(len(images_shape))
    if rank is None:
        raise ValueError(
            f"`images` must be a rank-4 tensor {_SHAPES[2][0]} or a rank-5 tensor "
            f"{_SHAPES[3][0]}. Received: images with shape {images_shape}"
        )
    grid_shape = tuple(grid.shape)
    if len(grid_shape) != rank + 2 or grid_shape[-1] != rank:
        raise ValueError(
            f"`grid` must have shape {_SHAPES[rank][1]} to sample images "
            f"{_SHAPES[rank][0]}: one coordinate per spatial axis of the images. "
            f"Received: grid with shape {grid_shape} for images with shape {images_shape}"
        )
    if None not in (images_shape[0], grid_shape[0]) and images_shape[0] != grid_shape[0]:
        raise ValueError(
            "`images` and `grid` must have the same batch size. "
            f"Received: images with shape {images_shape}, grid with shape {grid_shape}"
        )
    if data_format == "channels_first":
        images = ops.moveaxis(images, 1, -1)
    channels = tuple(images.shape)[-1]
    fill = _check_fill_value(fill_value, padding_mode, channels)
    if antialias and None in tuple(images.shape)[1:-1]:
        raise ValueError(
            "`antialias=True` needs the images' spatial sizes known when the graph is "
            f"traced. Received: images with shape {images_shape}"
        )
    if not _checks.is_float(images.dtype):
        images = ops.cast(images, "float32")
    if not _checks.is_float(grid.dtype):
        grid = ops.cast(grid, "float32")

    output = _sample_channels_last(
        images, grid, interpolation, padding_mode, bool(align_corners), fill, antialias
    )
    if data_format == "channels_first":
        output = ops.moveaxis(output, -1, 1)
    return output


def sample_compiled(images, grid, **options):
    """`sample`, compiled with XLA on the TensorFlow backend.

    The layers read through this while training. Keras trains without XLA on a CPU
    by default (`jit_compile="auto"` picks XLA only on a GPU), and op by op the
    sampler's few dozen elementwise steps and gathers each make a pass over memory;
    compiled, they fuse into a few loops (see docs/benchmarks.md). The output, the
    images' gradient and the grid's gradient are three XLA functions, so a step that
    needs only the grid's gradient does not compute the images'. Inside a function
    that is already compiled with XLA this is plain `sample`, as it is on the JAX
    (always compiled) and PyTorch backends. Graphs traced for inference, exported
    SavedModels included, keep the plain ops: TensorFlow Serving runs XLA on a CPU
    only when it is started with `--xla_cpu_compilation_enabled`.

    Args and returns: those of `sample` (`options` are its keyword arguments).

    Example:
    >>> import numpy as np
    >>> from keras_stn import ops
    >>> images = np.arange(12, dtype="float32").reshape(1, 3, 4, 1)
    >>> identity = ops.affine_grid(np.array([[1, 0, 0, 0, 1, 0]], "float32"), (3, 4))
    >>> bool(np.all(ops.sample_compiled(images, identity) == images))
    True
    """
    if keras.backend.backend() != "tensorflow" or _inside_xla():
        return sample(images, grid, **options)
    images, grid = ops.convert_to_tensor(images), ops.convert_to_tensor(grid)
    if not (_checks.is_float(images.dtype) and _checks.is_float(grid.dtype)):
        return sample(images, grid, **options)  # no gradient to split
    try:
        key = tuple(sorted((name, _hashable(value)) for name, value in options.items()))
        hash(key)
    except TypeError:  # a tensor as fill_value, say: left to `sample` as it is
        return sample(images, grid, **options)
    return _compiled_sampler(key)(images, grid)


def _hashable(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(np.asarray(value).reshape(-1).tolist())
    return value


def _inside_xla():
    """Whether the graph being traced is itself compiled with XLA (or cannot tell).

    There the sampler is compiled with the rest; an XLA function nested in it would
    make TensorFlow treat the whole step's inputs as compile-time constants and
    recompile it for every batch. TensorFlow has no public test for this; its own
    `tf.function` uses the one below.
    """
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util

        return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
    except (ImportError, AttributeError):  # the plain ops are always safe
        return True


@functools.lru_cache(maxsize=64)
def _compiled_sampler(options):
    """`sample` with `options`, as three XLA functions, each called on its own.

    The output, the images' gradient and the grid's gradient: a graph that needs only
    the grid's gradient (a transformer on the network's input) never runs the images'
    scatter, which one function returning both would always compute.
    """
    import tensorflow as tf  # only on the TensorFlow backend

    read = functools.partial(sample, **dict(options))

    def gradient_to(which):
        def gradient(images, grid, upstream):
            with tf.GradientTape() as tape:
                source = (images, grid)[which]
                tape.watch(source)
                output = read(images, grid)
            return tape.gradient(output, source, output_gradients=upstream,
                                 unconnected_gradients=tf.UnconnectedGradients.ZERO)

        return tf.function(gradient, jit_compile=True, autograph=False)

    forward = tf.function(read, jit_compile=True, autograph=False)
    image_gradient, grid_gradient = gradient_to(0), gradient_to(1)

    @tf.custom_gradient
    def compiled(images, grid):
        def grad(upstream):
            return (image_gradient(images, grid, upstream),
                    grid_gradient(images, grid, upstream))

        return forward(images, grid), grad

    return compiled


def validity_mask(grid, image_size, interpolation="bilinear", align_corners=False):
    """How much of each output point is read from inside the image, in [0, 1].

    For bilinear interpolation, the total weight of a point's taps that fall inside
    the image: 1 where every tap is inside, falling linearly to 0 over the pixel
    outside each border, 0 for NaN or infinite points. For nearest, 1 where the
    nearest pixel is inside. It does not depend on the padding mode: it is what a
    zero-padded read of an image of ones returns. Differentiable with respect to
    the grid (bilinear).

    Args:
        grid: `(batch, out_height, out_width, 2)` or, for volumes,
            `(batch, out_depth, out_height, out_width, 3)`.
        image_size: `(height, width)` or `(depth, height, width)`, Python ints.
        interpolation: `"bilinear"` or `"nearest"`.
        align_corners: the frame convention of `sample`.

    Returns:
        `(batch, out_height, out_width, 1)` (or the volume's), float32 (float64 for
        a float64 grid).

    Example:
    >>> import numpy as np
    >>> grid = np.array([[[[0.0, 0.0], [1.25, 0.0], [3.0, 0.0]]]], "float32")
    >>> np.asarray(validity_mask(grid, (4, 4)))[0, 0, :, 0].tolist()
    [1.0, 0.0, 0.0]
    """
    _checks.check_choice("interpolation", interpolation, INTERPOLATIONS)
    grid = ops.convert_to_tensor(grid)
    if not _checks.is_float(grid.dtype):
        grid = ops.cast(grid, "float32")
    sizes = _checks.check_sizes("image_size", image_size)
    rank = len(sizes)
    grid_shape = _checks.check_rank("grid", grid, rank + 2, _SHAPES[rank][1])
    if grid_shape[-1] != rank:
        raise ValueError(
            f"`grid` must have a last axis of size {rank} for an image_size of {rank} "
            f"sizes. Received: grid with shape {grid_shape}, image_size={image_size!r}"
        )
    dtype = _checks.working_dtype(grid)
    coords = _pixel_coordinates(grid, sizes, bool(align_corners), dtype)
    weight = None
    for coordinate, size in zip(coords, sizes):
        # NaN and infinities onto lines that read nothing (see `_replace_nan`).
        coordinate = ops.clip(_replace_nan(coordinate, -2.0), -2.0, size + 1.0)
        if interpolation == "nearest":
            rounded = ops.round(coordinate)
            axis_weight = ops.cast((rounded >= 0) & (rounded <= size - 1), dtype)
        else:
            axis_weight = _clip_inclusive(ops.minimum(coordinate + 1.0, size - coordinate),
                                          0.0, 1.0)
        weight = axis_weight if weight is None else weight * axis_weight
    return weight[..., None]


def _clip_inclusive(values, low, high):
    """Clips with the gradient passed on the bounds themselves, on every backend.

    `ops.clip` leaves that to the backend: TensorFlow and PyTorch pass it, JAX passes
    half of it (a point exactly on a pixel centre of the border would get half the
    mask's gradient there).
    """
    return ops.where(values < low, low, ops.where(values > high, high, values))


# --------------------------------------------------------------------- coordinates


def _sample_channels_last(images, grid, interpolation, padding_mode, align_corners, fill,
                          antialias):
    rank = grid.shape[-1]
    dtype = _checks.working_dtype(images, grid)
    shape = ops.shape(images)
    sizes = tuple(shape[1 : 1 + rank])
    grid = ops.cast(grid, dtype)
    coords = _pixel_coordinates(grid, sizes, align_corners, dtype)
    level = None
    if antialias:
        static_sizes = tuple(images.shape[1:-1])
        # Steps of one pixel come out of float coordinates a few epsilons times the
        # image side off; 0.1 % more than one pixel is not a shrink worth a blur.
        tolerance = 1e-3 + 8 * _EPSILON[dtype] * max(static_sizes)
        level = _mip_level(coords, len(_level_sizes(static_sizes)) - 1, tolerance)
    zero_outside = padding_mode in ("zeros", "constant")
    if zero_outside and not antialias:
        # NaN onto the line just outside; points a pixel or more outside (infinite
        # ones too) onto that line (see `_clip_outside`).
        coords = [_clip_outside(_replace_nan(c, -1.0), size, dtype)
                  for c, size in zip(coords, sizes)]
    else:
        coords = _prepare(coords, sizes, padding_mode, align_corners, dtype)
    # The images are padded with one line before and two after each axis, read as 0
    # (or `fill`): every tap of a point in [-1, size] is then a plain read.
    padded = _pad_images(images, fill, dtype)
    if interpolation == "nearest":
        return _nearest(padded, coords)
    if antialias:
        return _mip_sample(images, padded, coords, level, fill, zero_outside, dtype)
    return ops.cast(_interpolate(padded, *coords), images.dtype)


def _pixel_coordinates(grid, sizes, align_corners, dtype):
    """Grid `(..., rank)` `(x, y[, z])` -> pixel coordinates, one per image axis.

    Returned in the images' axis order (depth, height, width): the grid's last
    coordinate first.
    """
    rank = len(sizes)
    xyz = ops.unstack(grid, rank, axis=-1)
    return [
        _to_pixels(xyz[rank - 1 - axis], sizes[axis], align_corners, dtype)
        for axis in range(rank)
    ]


def _to_pixels(coordinate, size, align_corners, dtype):
    """[-1, 1] -> pixel index space, where pixel k's centre is at k."""
    size = ops.cast(size, dtype)
    if align_corners:
        return (coordinate + 1.0) * 0.5 * (size - 1.0)
    return ((coordinate + 1.0) * size - 1.0) * 0.5


def _prepare(coords, sizes, padding_mode, align_corners, dtype):
    """Maps points as `padding_mode` says, and non-finite points outside.

    `"zeros"` / `"constant"`: a NaN coordinate moves to -1, just outside, and an
    infinite one to the largest finite float, so the point reads only padding
    whatever its other coordinates (the anti-aliased read clips far-away points next
    to each level; the plain reads clip with `_clip_outside` instead of calling
    this). `"border"` / `"reflection"`: coordinates are clipped (reflected,
    then clipped) into the image, as torch does, and a point with any non-finite
    coordinate moves to -1 on every axis.
    """
    largest = float(np.finfo(dtype).max)
    if padding_mode in ("zeros", "constant"):
        return [ops.clip(_replace_nan(c, -1.0), -largest, largest) for c in coords]
    finite, clipped = None, []
    for coordinate in coords:
        # A boolean test: no NaN to leak. (LiteRT's converter turns an infinite constant
        # into the largest finite float, so no select may write inf as a marker.)
        axis_finite = ops.isfinite(coordinate)
        finite = axis_finite if finite is None else ops.logical_and(finite, axis_finite)
        clipped.append(ops.clip(_replace_nan(coordinate, -1.0), -largest, largest))
    padded = []
    for coordinate, size in zip(clipped, sizes):
        # Replaced before `_pad` too, so that its gradient sees no huge value.
        coordinate = _pad(ops.where(finite, coordinate, -1.0), size, padding_mode,
                          align_corners, dtype)
        padded.append(ops.where(finite, coordinate, -1.0))
    return padded


def _replace_nan(values, replacement):
    """`values` with NaN replaced, by a select that every converter keeps a select.

    Graph converters may lower a float select to `cast(c) * a + cast(!c) * b` (tf2onnx
    does), where `0 * NaN` or `0 * inf` leaks into the result. tf2onnx keeps a real
    select when its condition tests for NaN as `x != x`; the sampler then clips
    infinities to finite values, so that every later select sees finite values only,
    which that lowering computes exactly.
    """
    return ops.where(ops.not_equal(values, values), replacement, values)


def _pad(coordinate, size, padding_mode, align_corners, dtype):
    """Border or reflection: moves pixel coordinates into [0, size - 1]."""
    last = ops.cast(size, dtype) - 1.0
    if padding_mode == "reflection":
        if align_corners:
            coordinate = _reflect(coordinate, 0.0, last)
        else:
            coordinate = _reflect(coordinate, -0.5, last + 0.5)
    return _clip_inside(coordinate, last)


def _clip_inside(coordinate, last):
    """Clips to [0, last] with torch's gradient: 1 strictly inside, 0 on the border.

    torch counts the border pixels' centres as outside for the gradient
    (`clip_coordinates_set_grad`): a point exactly on one gets no coordinate
    gradient, where a plain clip would pass the slope towards the padding.
    """
    inside = ops.logical_and(coordinate > 0.0, coordinate < last)
    return ops.where(inside, coordinate, ops.stop_gradient(ops.clip(coordinate, 0.0, last)))


def _clip_outside(coordinate, size, dtype):
    """Zero padding: points a pixel or more outside move onto the line just outside.

    There they still read only padding, and the clip passes them no gradient; huge
    coordinates never overflow an index.
    """
    return ops.clip(coordinate, -1.0, ops.cast(size, dtype))


def _reflect(coordinate, low, high):
    """Mirrors `coordinate` into [low, high] (torch's `reflect_coordinates`)."""
    span = high - low
    distance = ops.abs(coordinate - low)
    safe_span = ops.where(span > 0, span, 1.0)
    extra = ops.mod(distance, safe_span)
    flips = ops.floor(distance / safe_span)
    even = ops.equal(ops.mod(flips, 2.0), 0.0)
    reflected = ops.where(even, low + extra, high - extra)
    return ops.where(span > 0, reflected, low + 0.0 * coordinate)


def _snap(coordinate, size, dtype):
    """Forward only: moves coordinates within rounding noise of an integer onto it."""
    nearest = ops.round(coordinate)
    tolerance = SNAP_EPSILONS * _EPSILON[dtype] * ops.maximum(ops.cast(size, dtype), 1.0)
    return ops.where(ops.abs(coordinate - nearest) <= tolerance, nearest, coordinate)


_EPSILON = {"float32": 2.0**-23, "float64": 2.0**-52}


def _pad_images(images, fill, dtype):
    """`(batch, *sizes, C)` -> `(batch, *(sizes + 3), C)`: 1 line before, 2 after.

    The new lines read 0, or `fill` (a `(C,)` tensor or a number).
    """
    rank = len(images.shape) - 2
    widths = ((0, 0),) + ((1, 2),) * rank + ((0, 0),)
    padded = ops.pad(images, widths)
    if fill is None:
        return padded
    inside = ops.pad(ops.ones_like(images[:1, ..., :1]), widths)
    outside = ops.cast(1.0 - inside, images.dtype)
    return padded + outside * ops.cast(fill, images.dtype)


def check_antialias(antialias, interpolation):
    """`antialias` as a bool; a ValueError for a non-bool or with nearest reads."""
    antialias = _checks.check_bool("antialias", antialias)
    if antialias and interpolation != "bilinear":
        raise ValueError(
            "`antialias=True` needs `interpolation='bilinear'`. "
            f"Received: interpolation={interpolation!r}"
        )
    return antialias


def fill_value_config(fill_value, padding_mode):
    """`fill_value` checked (channels unknown yet) and as a list or a number, for a
    layer's config; the layers check it against the channels when they see them."""
    _check_fill_value(fill_value, padding_mode, None)
    return np.asarray(fill_value, np.float64).tolist()


def _check_fill_value(fill_value, padding_mode, channels):
    """`None` for a zero fill, else a float64 NumPy array: a number or `(C,)`."""
    try:
        array = None if isinstance(fill_value, bool) else np.asarray(fill_value, np.float64)
    except (TypeError, ValueError):
        array = None
    ok = array is not None and (
        array.ndim == 0 or (array.ndim == 1 and channels in (None, array.shape[0]))
    )
    if not ok or not np.all(np.isfinite(array)):
        raise ValueError(
            "`fill_value` must be a finite number or one finite number per channel, "
            f"shape ({channels},). Received: fill_value={fill_value!r}"
        )
    if not np.any(array):
        return None
    if padding_mode != "constant":
        raise ValueError(
            "`fill_value` is read only with `padding_mode='constant'`. "
            f"Received: fill_value={fill_value!r}, padding_mode={padding_mode!r}"
        )
    return array


# ------------------------------------------------------------------------ kernels


def _taps(rank):
    """The 2 ** rank corners of a cell, as bits per axis, the last axis fastest."""
    return list(itertools.product((0, 1), repeat=rank))


def _corners(coords, strides, base):
    """The flat index of each point's first tap, and its fractions along each axis."""
    floors = [ops.floor(c) for c in coords]
    index = base
    for floor, stride in zip(floors, strides):
        index = index + ops.cast(floor + 1.0, "int32") * stride
    return index, [c - f for c, f in zip(coords, floors)]


def _read(flat, index, offsets, dtype):
    return [ops.cast(_gather_rows(flat, index + offset), dtype) for offset in offsets]


def _gather_rows(flat, index):
    """`flat[index]` for indices known to be in range: `ops.take` without its wrap.

    `ops.take` first maps negative indices (a compare, an add and a select over every
    index); op by op, that triples the cost of each read on TensorFlow and PyTorch.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.gather(flat, index, axis=0)
    if backend == "torch":
        import torch

        rows = torch.index_select(flat, 0, index.reshape(-1))
        return rows.reshape(tuple(index.shape) + tuple(flat.shape[-1:]))
    return ops.take(flat, index, axis=0)


def _segment_sum(rows, ids, size):
    """`ops.segment_sum(rows, ids, size)` of `(N, C)` rows; on PyTorch one
    `scatter_add_` (Keras' own sorts and reduces, and `index_add_` on a CPU adds row
    by row: both several times slower there)."""
    if keras.backend.backend() == "torch":
        import torch

        total = torch.zeros((size, rows.shape[1]), dtype=rows.dtype, device=rows.device)
        return total.scatter_add_(0, ids.long()[:, None].expand(-1, rows.shape[1]), rows)
    return ops.segment_sum(rows, ids, size)


def _needs_gradient(tensor):
    """False only where the backend says so up front (PyTorch's `requires_grad`):
    TensorFlow and JAX drop a gradient nobody reads by themselves."""
    return bool(getattr(tensor, "requires_grad", True))


def _blend(values, fractions):
    """Multilinear interpolation of the 2 ** rank tap values, first axis outermost."""
    if not fractions:
        return values[0]
    fraction, half = ops.expand_dims(fractions[0], -1), len(values) // 2
    low, high = _blend(values[:half], fractions[1:]), _blend(values[half:], fractions[1:])
    return low + fraction * (high - low)


def _slope(sums, fractions, axis):
    """d/d(coordinate `axis`) of the multilinear blend of per-tap scalars `sums`."""
    if not fractions:
        return sums[0]
    half = len(sums) // 2
    low = _slope(sums[:half], fractions[1:], axis - 1)
    high = _slope(sums[half:], fractions[1:], axis - 1)
    if axis == 0:
        return high - low
    return (1.0 - fractions[0]) * low + fractions[0] * high


def _tap_weights(fractions):
    """The weight of each of the 2 ** rank taps, in `_taps` order."""
    weights = None
    for fraction in fractions:
        pair = (1.0 - fraction, fraction)
        weights = list(pair) if weights is None else [w * p for w in weights for p in pair]
    return weights


def _coordinate_gradients(upstream, values, fractions):
    """The upstream gradient times d output / d coordinate, for each axis."""
    sums = [ops.sum(upstream * v, axis=-1) for v in values]
    return [_slope(sums, fractions, axis) for axis in range(len(fractions))]


def _exact_one(finite):
    """1.0, computed from `finite` (finite values only) so that it is not a constant.

    XLA copies cheap elementwise work into every one of its consumers, so each gather
    (for each channel it reads), each weight and each part of the gradient would redo
    the whole coordinate computation, which costs more than the sampling itself. A
    division is not cheap to XLA: it is computed once and stored, however many read it.
    Divided by this one, the coordinates are unchanged (`v / 1 == v` exactly, on any
    IEEE hardware) and computed once; outside XLA it costs one division per value.
    """
    return 1.0 + 0.0 * ops.sum(ops.reshape(finite, (-1,))[:1])


# At most this many channels, the image gradient is scattered as one row of
# taps * channels per output point (its block of 2 ** rank taps) and folded back: a
# fraction of the scatter indices, which is what costs with few channels. With more
# channels, or when the padded image has more than twice as many pixels as the output
# has points (the buffer of blocks, one padded image per tap, would then cost more than
# the indices saved), the taps are scattered as rows of their own.
_BLOCK_SCATTER_MAX_CHANNELS = 4
_BLOCK_SCATTER_MAX_PIXELS_PER_POINT = 2


def _uses_block_scatter(padded_shape, points_shape):
    channels = padded_shape[-1]
    sizes = tuple(padded_shape[1:-1]) + tuple(points_shape[1:])
    if channels is None or channels > _BLOCK_SCATTER_MAX_CHANNELS:
        return False
    if None in sizes:
        return True
    pixels = math.prod(padded_shape[1:-1])
    return pixels <= _BLOCK_SCATTER_MAX_PIXELS_PER_POINT * math.prod(points_shape[1:])


def _scatter(updates, index, offsets, size, block):
    """The image gradient: each tap's `updates` summed into a `(size, C)` buffer.

    `block`: one row of all taps per point, then folded back by shifting each tap's
    column by its (static or uniform) offset; else one segment sum of all taps.
    """
    channels = ops.shape(updates[0])[-1]
    if block:
        rows = ops.reshape(ops.stack(updates, axis=-2), (-1, len(updates) * channels))
        blocks = _segment_sum(rows, ops.reshape(index, (-1,)), size)
        blocks = ops.reshape(blocks, (size, len(updates), channels))
        total = None
        for k, offset in enumerate(offsets):
            # Tap k of the block at row r lands on row r + offset; a block's taps never
            # cross into the next image (two lines of padding after each axis).
            shifted = ops.pad(blocks[: size - offset, k], ((offset, 0), (0, 0)))
            total = shifted if total is None else total + shifted
        return total
    rows = ops.concatenate([ops.reshape(u, (-1, channels)) for u in updates], axis=0)
    ids = ops.concatenate([ops.reshape(index + o, (-1,)) for o in offsets], axis=0)
    return _segment_sum(rows, ids, size)


@ops.custom_gradient
def _interpolate(padded, *coords):
    """Multilinear read of `padded` `(batch, *(sizes + 3), C)` at pixel `coords`.

    Each coordinate `(batch, *out_sizes)` is in [-1, size] (the padding lines are
    where points outside read). Each pass computes one flat index and the fractions
    per point; the gradient recomputes them from its inputs (so that it is
    differentiable again, and XLA computes them once there: see `_exact_one`) at the
    unsnapped coordinates. The coordinates' gradient needs only the taps summed
    against the upstream gradient, no scatter; the image's gradient is a scatter, run
    only where it is used (graph and XLA prune it when only the grid needs a gradient).
    """
    dtype = keras.backend.standardize_dtype(coords[0].dtype)
    layout = _PaddedLayout(padded, coords[0])
    snapped = [_snap(c, s - 3, dtype) for c, s in zip(coords, layout.sizes)]
    index, fractions = _corners(snapped, layout.strides, layout.base())
    flat = ops.reshape(padded, (layout.size, layout.channels))
    output = _blend(_read(flat, index, layout.offsets, dtype), fractions)
    image_gradient = _needs_gradient(padded)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        upstream = ops.cast(upstream, dtype)
        # The forward pass reads the coordinates in its one fusion. The gradient reads
        # them, and its own coordinate gradients, in several places, which must not
        # each recompute them: see `_exact_one`.
        one = _exact_one(coords[0])
        index, fractions = _corners([c / one for c in coords], layout.strides,
                                    layout.base())
        values = _read(flat, index, layout.offsets, dtype)
        coordinate_grads = [g / one for g in _coordinate_gradients(upstream, values, fractions)]
        if not image_gradient:
            return (None, *coordinate_grads)
        updates = [ops.expand_dims(w, -1) * upstream for w in _tap_weights(fractions)]
        block = _uses_block_scatter(tuple(padded.shape), tuple(coords[0].shape))
        padded_grad = _scatter(updates, index, layout.offsets, layout.size, block)
        padded_grad = ops.reshape(ops.cast(padded_grad, padded.dtype), ops.shape(padded))
        return (padded_grad, *coordinate_grads)

    return ops.cast(output, padded.dtype), grad


class _PaddedLayout:
    """Flat-index arithmetic of one padded image batch `(batch, *padded_sizes, C)`.

    The batch size is the points' (`(batch, *out_sizes)`): when the images' differs at
    run time, flattening them fails loudly instead of broadcasting one over the other.
    """

    def __init__(self, padded, points):
        shape = ops.shape(padded)
        self.batch, self.sizes, self.channels = ops.shape(points)[0], tuple(shape[1:-1]), shape[-1]
        rank = len(self.sizes)
        strides = [1] * rank
        for axis in range(rank - 2, -1, -1):
            strides[axis] = strides[axis + 1] * self.sizes[axis + 1]
        self.strides = strides
        self.pixels = strides[0] * self.sizes[0]
        self.size = self.batch * self.pixels
        self.offsets = [
            sum(bit * stride for bit, stride in zip(bits, strides)) for bits in _taps(rank)
        ]

    def base(self):
        """The flat index of each point's image, broadcast against the points."""
        rank = len(self.sizes)
        first = ops.arange(self.batch, dtype="int32") * ops.cast(self.pixels, "int32")
        return ops.reshape(first, (-1,) + (1,) * rank)


def _nearest(padded, coords):
    """Nearest read of `padded` at pixel `coords` in [-1, size]; no grid gradient."""
    layout = _PaddedLayout(padded, coords[0])
    rounded = [ops.stop_gradient(ops.round(c)) for c in coords]
    index, _ = _corners(rounded, layout.strides, layout.base())
    flat = ops.reshape(padded, (layout.size, layout.channels))
    return _gather_rows(flat, index)


# ------------------------------------------------------------------ anti-aliasing


def _level_sizes(sizes):
    """The spatial sizes of each pyramid level, down to a largest side of one pixel."""
    levels = [tuple(sizes)]
    while max(levels[-1]) > 1:
        levels.append(tuple(-(-s // 2) for s in levels[-1]))
    return tuple(levels)


def _mip_level(coords, max_level, tolerance):
    """Per point, log2 of its footprint in input pixels, in [0, max_level].

    The footprint is the longest of the grid's steps to the next output point along
    each output axis (the last point repeats the step before it), in input pixels,
    divided by `1 + tolerance`: a point whose neighbours are at most one pixel away
    (give or take the grid's rounding noise) reads level 0.
    """
    squared = None
    largest = float(np.finfo(keras.backend.standardize_dtype(coords[0].dtype)).max)
    for out_axis in range(1, len(coords) + 1):
        if coords[0].shape[out_axis] == 1:
            continue
        total = None
        for coordinate in coords:
            step = _forward_step(coordinate, out_axis)
            # Non-finite steps count as 0 (see `_replace_nan`).
            step = ops.clip(_replace_nan(step, 0.0), -largest, largest)
            step = ops.where(ops.abs(step) < largest, step, 0.0)
            total = step * step if total is None else total + step * step
        squared = total if squared is None else ops.maximum(squared, total)
    if squared is None:
        return ops.zeros_like(coords[0])
    squared = squared / (1.0 + tolerance) ** 2
    return ops.minimum(0.5 * ops.log2(ops.maximum(squared, 1.0)), float(max_level))


def _forward_step(coordinate, axis):
    """`c[i + 1] - c[i]` along `axis`, the last entry repeating the one before it."""
    def part(start, stop):
        index = [slice(None)] * len(coordinate.shape)
        index[axis] = slice(start, stop)
        return tuple(index)

    steps = coordinate[part(1, None)] - coordinate[part(None, -1)]
    return ops.concatenate([steps, steps[part(-1, None)]], axis=axis)


def _halve(images):
    """2x average pooling of `(batch, *sizes, C)` along every spatial axis.

    An odd side gets a zero line at its end, and its last pixels average only the
    pixels that exist.
    """
    sizes = tuple(images.shape[1:-1])
    widths = ((0, 0),) + tuple((0, s % 2) for s in sizes) + ((0, 0),)
    total = ops.pad(images, widths)
    counts = np.pad(np.ones(sizes), widths[1:-1])
    channels = ops.shape(images)[-1]
    for axis, size in enumerate(sizes):
        half = (size + size % 2) // 2
        shape = [-1] + list(total.shape[1:-1]) + [channels]
        shape[1 + axis : 2 + axis] = [half, 2]
        total = ops.sum(ops.reshape(total, shape), axis=2 + axis)
        count_shape = list(counts.shape)
        count_shape[axis : axis + 1] = [half, 2]
        counts = counts.reshape(count_shape).sum(axis=axis + 1)
    return total / ops.convert_to_tensor(counts[..., None], dtype=images.dtype)


def _mip_sample(images, padded, coords, level, fill, zero_outside, dtype):
    """Reads each point at its two nearest pyramid levels and blends them linearly.

    `coords` are level-0 pixel coordinates (mapped by the padding mode, not yet
    clipped for zero padding); `level` is each point's `_mip_level`.
    """
    sizes = _level_sizes(tuple(images.shape[1:-1]))
    layout = _PyramidLayout(sizes)
    channels = ops.shape(images)[-1]
    levels, current = [padded], ops.cast(images, dtype)
    for _ in sizes[1:]:
        current = _halve(current)
        levels.append(_pad_images(ops.cast(current, images.dtype), fill, dtype))
    buffer = ops.concatenate(
        [ops.reshape(p, (-1, math.prod(p.shape[1:-1]), channels)) for p in levels], axis=1
    )
    low = ops.stop_gradient(ops.floor(level))
    blend = level - low
    pair = ops.stack([low, ops.minimum(low + 1.0, float(layout.max_level))], axis=1)
    pair_index = ops.cast(pair, "int32")
    scales = ops.take(ops.convert_to_tensor(layout.scales, dtype), pair_index)
    pair_coords = []
    for axis, coordinate in enumerate(coords):
        both = ops.stack([coordinate, coordinate], axis=1)
        # Level 0 keeps the coordinate as it is: (c + 0.5) - 0.5 is not always c.
        scaled = ops.where(pair_index == 0, both, (both + 0.5) * scales - 0.5)
        size = ops.take(ops.convert_to_tensor(layout.sizes[:, axis], dtype), pair_index)
        low_limit, high_limit = (-1.0, size) if zero_outside else (0.0, size - 1.0)
        pair_coords.append(ops.clip(scaled, low_limit, high_limit))
    read = ops.cast(_level_kernel(sizes)(buffer, pair, *pair_coords), dtype)
    first, second, weight = read[:, 0], read[:, 1], blend[..., None]
    output = ops.where(weight > 0.0, (1.0 - weight) * first + weight * second, first)
    return ops.cast(output, images.dtype)


class _PyramidLayout:
    """Static tables of the padded pyramid levels, concatenated per image."""

    def __init__(self, sizes):
        rank = len(sizes[0])
        padded = [tuple(s + 3 for s in level) for level in sizes]
        self.max_level = len(sizes) - 1
        self.sizes = np.array(sizes, dtype=np.float64)
        self.scales = np.array([2.0**-level for level in range(len(sizes))])
        pixels = [math.prod(p) for p in padded]
        self.pixels = sum(pixels)
        self.starts = np.cumsum([0] + pixels[:-1]).astype(np.int32)
        strides = np.ones((len(sizes), rank), dtype=np.int32)
        for axis in range(rank - 2, -1, -1):
            strides[:, axis] = strides[:, axis + 1] * np.array([p[axis + 1] for p in padded])
        self.strides = strides


@functools.lru_cache(maxsize=32)
def _level_kernel(sizes):
    """The multilinear read of a pyramid of `sizes` (static), with its gradient.

    Returns `kernel(buffer, level, *coords)`: `buffer` `(batch, pixels of all padded
    levels, C)`, `level` (float, whole numbers) each point's level, `coords` in that
    level's pixels. As `_interpolate`, with strides looked up per point.
    """
    layout = _PyramidLayout(sizes)
    rank = len(sizes[0])

    def indexing(buffer, level):
        batch, channels = ops.shape(level)[0], ops.shape(buffer)[-1]
        level = ops.cast(level, "int32")
        strides = [ops.take(ops.convert_to_tensor(layout.strides[:, axis]), level)
                   for axis in range(rank)]
        first = ops.arange(batch, dtype="int32") * layout.pixels
        base = ops.reshape(first, (-1,) + (1,) * (len(level.shape) - 1))
        base = base + ops.take(ops.convert_to_tensor(layout.starts), level)
        offsets = [sum(bit * stride for bit, stride in zip(bits, strides)) for bits in _taps(rank)]
        flat = ops.reshape(buffer, (batch * layout.pixels, channels))
        return flat, strides, base, offsets

    @ops.custom_gradient
    def kernel(buffer, level, *coords):
        dtype = keras.backend.standardize_dtype(coords[0].dtype)
        flat, strides, base, offsets = indexing(buffer, level)
        snapped = [_snap(c, s, dtype) for c, s in zip(coords, sizes[0])]
        index, fractions = _corners(snapped, strides, base)
        output = _blend(_read(flat, index, offsets, dtype), fractions)
        image_gradient = _needs_gradient(buffer)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = ops.cast(upstream, dtype)
            one = _exact_one(coords[0])
            index, fractions = _corners([c / one for c in coords], strides, base)
            values = _read(flat, index, offsets, dtype)
            coordinate_grads = [g / one for g in _coordinate_gradients(upstream, values, fractions)]
            if not image_gradient:
                return (None, ops.zeros_like(level), *coordinate_grads)
            updates = [ops.expand_dims(w, -1) * upstream for w in _tap_weights(fractions)]
            buffer_grad = _scatter(updates, index, offsets, ops.shape(flat)[0], block=False)
            buffer_grad = ops.reshape(ops.cast(buffer_grad, buffer.dtype), ops.shape(buffer))
            return (buffer_grad, ops.zeros_like(level), *coordinate_grads)

        return ops.cast(output, buffer.dtype), grad

    return kernel
