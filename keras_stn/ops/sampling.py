"""The differentiable sampler: read images at the points of a grid."""

from keras import ops

from keras_stn import _checks

INTERPOLATIONS = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection")

# Pixel coordinates this many float epsilons times the image side away from an integer
# are snapped to it. The round trip pixel -> [-1, 1] -> pixel alone is off by a few
# epsilons times the side, so snapping only removes rounding noise: it is what makes an
# identity transform return its input bit for bit. Gradients are unchanged by it.
SNAP_EPSILONS = 4


def sample(
    images,
    grid,
    interpolation="bilinear",
    padding_mode="zeros",
    align_corners=False,
    data_format=None,
):
    """Samples `images` at the normalised coordinates in `grid`.

    Output pixel `(b, i, j)` is `images[b]` read at `grid[b, i, j]`, with the same
    semantics as `torch.nn.functional.grid_sample` for the same `interpolation`
    (`mode`), `padding_mode` and `align_corners`. Differentiable with respect to
    `images` and, for bilinear interpolation, `grid`.

    Coordinates: `grid[..., 0]` is x, along the width; `grid[..., 1]` is y, along the
    height; both are normalised so that -1 and +1 are the outer edges of the corner
    pixels (`align_corners=False`) or the centres of the corner pixels
    (`align_corners=True`). Points outside are read according to `padding_mode`:
    `"zeros"` reads 0, `"border"` the nearest border pixel, `"reflection"` the image
    mirrored at its border. A point with a NaN or infinite coordinate reads 0 under
    every padding mode and passes no gradient.

    Args:
        images: `(batch, height, width, channels)`, or `(batch, channels, height,
            width)` when `data_format="channels_first"`. Integer images are read as
            float32.
        grid: `(batch, out_height, out_width, 2)` source coordinates `(x, y)`.
        interpolation: `"bilinear"` (the paper's kernel) or `"nearest"` (rounds half
            to even, as torch does).
        padding_mode: `"zeros"`, `"border"` or `"reflection"`.
        align_corners: whether -1 and +1 are the centres of the corner pixels.
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.

    Returns:
        `(batch, out_height, out_width, channels)` (or channels first), in the
        images' dtype (float32 for integer images). Coordinates and weights are
        computed in float32 (float64 if images or grid are float64).

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
    images = ops.convert_to_tensor(images)
    grid = ops.convert_to_tensor(grid)
    _checks.check_rank("images", images, 4, "(batch, height, width, channels)")
    grid_shape = _checks.check_rank("grid", grid, 4, "(batch, out_height, out_width, 2)")
    if grid_shape[-1] != 2:
        raise ValueError(
            "`grid` must have a last axis of size 2, the (x, y) coordinates. "
            f"Received: grid with shape {grid_shape}"
        )
    images_batch = tuple(images.shape)[0]
    if None not in (images_batch, grid_shape[0]) and images_batch != grid_shape[0]:
        raise ValueError(
            "`images` and `grid` must have the same batch size. "
            f"Received: images with shape {tuple(images.shape)}, grid with shape {grid_shape}"
        )
    if data_format == "channels_first":
        images = ops.transpose(images, (0, 2, 3, 1))
    if not _checks.is_float(images.dtype):
        images = ops.cast(images, "float32")
    if not _checks.is_float(grid.dtype):
        grid = ops.cast(grid, "float32")

    output = _sample_channels_last(
        images, grid, interpolation, padding_mode, bool(align_corners)
    )
    if data_format == "channels_first":
        output = ops.transpose(output, (0, 3, 1, 2))
    return output


def _sample_channels_last(images, grid, interpolation, padding_mode, align_corners):
    dtype = _checks.working_dtype(images, grid)
    shape = ops.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    grid = ops.cast(grid, dtype)

    x = _to_pixels(grid[..., 0], width, align_corners, dtype)
    y = _to_pixels(grid[..., 1], height, align_corners, dtype)
    # The images are flattened with the grid's batch size: when the two batch sizes
    # differ at run time that reshape fails loudly instead of broadcasting one over the
    # other (a reshape of the grid would not do: graph optimisation removes it).
    grid_batch = ops.shape(grid)[0]
    if interpolation == "bilinear":
        return _bilinear(images, x, y, padding_mode, align_corners, grid_batch, dtype)

    finite = ops.logical_and(ops.isfinite(x), ops.isfinite(y))
    x = _pad(ops.where(finite, x, -2.0), width, padding_mode, align_corners, dtype)
    y = _pad(ops.where(finite, y, -2.0), height, padding_mode, align_corners, dtype)
    x = ops.stop_gradient(ops.round(x))
    y = ops.stop_gradient(ops.round(y))
    inside = ops.logical_and(_inside(x, width), _inside(y, height))
    weight = ops.cast(ops.logical_and(finite, inside), dtype)
    flat_images = ops.reshape(images, (grid_batch * height * width, channels))
    first_pixel = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1))
    first_pixel = first_pixel * ops.cast(height * width, "int32")
    column = ops.cast(ops.clip(x, 0, ops.cast(width - 1, dtype)), "int32")
    row = ops.cast(ops.clip(y, 0, ops.cast(height - 1, dtype)), "int32")
    index = first_pixel + row * ops.cast(width, "int32") + column
    values = ops.cast(ops.take(flat_images, index, axis=0), dtype)
    return ops.cast(values * weight[..., None], images.dtype)


# At most this many channels, the image gradient is scattered as one row of
# 4 * channels per output point (its 2 x 2 block of taps) and folded back: a quarter
# of the scatter indices, which is what costs with few channels. With more channels,
# or when the padded image has more than twice as many pixels as the output has points
# (the buffer of blocks, four padded images, would then cost more than the indices
# saved), the four taps are scattered as rows of their own, into a buffer the padded
# image's size.
_BLOCK_SCATTER_MAX_CHANNELS = 4
_BLOCK_SCATTER_MAX_PIXELS_PER_POINT = 2


def _bilinear(images, x, y, padding_mode, align_corners, batch, dtype):
    """Bilinear read at pixel coordinates `x`, `y`, with a hand-written gradient.

    The image is padded with zeros (one line before, two after each axis), so that
    every tap of a point in [-1, size] is a plain read: no masks, no clipping. Each pass
    computes one flat index and two fractions per point; the gradient recomputes them
    from its inputs (so that it is differentiable again, and XLA computes them once
    there: see `_exact_one`). The grid's gradient needs only the four taps summed
    against the upstream gradient, no scatter; the image's gradient is a scatter, run
    only where it is used (graph and XLA prune it when only the grid needs a gradient).
    """
    shape = ops.shape(images)
    height, width, channels = shape[1], shape[2], shape[3]
    images_dtype = images.dtype
    if padding_mode == "zeros":
        # A point with a coordinate one pixel or more outside reads only padding,
        # whatever its other coordinate: each coordinate alone moves onto the line just
        # outside (-1 or size), where the point still reads 0 and the clip passes no
        # gradient. A non-finite coordinate goes there too, with no gradient.
        x = ops.clip(ops.where(ops.isfinite(x), x, -1.0), -1.0, ops.cast(width, dtype))
        y = ops.clip(ops.where(ops.isfinite(y), y, -1.0), -1.0, ops.cast(height, dtype))
    else:
        # Inside after padding, but a point with a non-finite coordinate reads 0: both
        # of its coordinates go to -1 (replaced before `_pad` too, so that no NaN
        # reaches its gradient).
        finite = ops.logical_and(ops.isfinite(x), ops.isfinite(y))
        x = _pad(ops.where(finite, x, -1.0), width, padding_mode, align_corners, dtype)
        y = _pad(ops.where(finite, y, -1.0), height, padding_mode, align_corners, dtype)
        x = ops.where(finite, x, -1.0)
        y = ops.where(finite, y, -1.0)
    rows, cols = height + 3, width + 3
    offsets = (0, 1, cols, cols + 1)
    static_channels = images.shape[-1]
    static_sizes = (images.shape[1], images.shape[2], x.shape[1], x.shape[2])
    block_scatter = (
        static_channels is not None
        and static_channels <= _BLOCK_SCATTER_MAX_CHANNELS
        and (
            None in static_sizes
            or (static_sizes[0] + 3) * (static_sizes[1] + 3)
            <= _BLOCK_SCATTER_MAX_PIXELS_PER_POINT * static_sizes[2] * static_sizes[3]
        )
    )

    def corners(x, y):
        """The flat index of each point's top-left tap, and its fractions."""
        x0, y0 = ops.floor(x), ops.floor(y)
        first = ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1)) * (rows * cols)
        index = first + ops.cast(y0 + 1.0, "int32") * cols + ops.cast(x0 + 1.0, "int32")
        return index, x - x0, y - y0

    def read(index):
        padded = ops.pad(images, ((0, 0), (1, 2), (1, 2), (0, 0)))
        flat = ops.reshape(padded, (batch * rows * cols, channels))
        return [ops.cast(ops.take(flat, index + k, axis=0), dtype) for k in offsets]

    def backward(upstream, index, fx, fy):
        upstream = ops.cast(upstream, dtype)
        v0, v1, v2, v3 = read(index)
        wx1, wy1 = fx[..., None], fy[..., None]
        wx0, wy0 = 1.0 - wx1, 1.0 - wy1
        if static_channels == 1:
            # One channel: no sums to share, the derivative along each coordinate.
            x_grad = ops.sum(upstream * (wy0 * (v1 - v0) + wy1 * (v3 - v2)), axis=-1)
            y_grad = ops.sum(upstream * (wx0 * (v2 - v0) + wx1 * (v3 - v1)), axis=-1)
        else:
            # Four channel sums, one per tap, then the derivatives from those.
            s0, s1, s2, s3 = (ops.sum(upstream * v, axis=-1) for v in (v0, v1, v2, v3))
            x_grad = (1.0 - fy) * (s1 - s0) + fy * (s3 - s2)
            y_grad = (1.0 - fx) * (s2 - s0) + fx * (s3 - s1)
        weights = (wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1)
        size = batch * rows * cols
        if block_scatter:
            updates = ops.stack([w * upstream for w in weights], axis=-2)
            updates = ops.reshape(updates, (-1, 4 * channels))
            blocks = ops.segment_sum(updates, ops.reshape(index, (-1,)), size)
            blocks = ops.reshape(blocks, (batch, rows, cols, 4, channels))
            image_grad = (
                blocks[:, 1 : height + 1, 1 : width + 1, 0]
                + blocks[:, 1 : height + 1, :width, 1]
                + blocks[:, :height, 1 : width + 1, 2]
                + blocks[:, :height, :width, 3]
            )
        else:
            # The four taps as rows of their own, in one segment sum.
            updates = ops.concatenate(
                [ops.reshape(w * upstream, (-1, channels)) for w in weights], axis=0
            )
            ids = ops.concatenate([ops.reshape(index + k, (-1,)) for k in offsets], axis=0)
            padded = ops.segment_sum(updates, ids, size)
            padded = ops.reshape(padded, (batch, rows, cols, channels))
            image_grad = padded[:, 1 : height + 1, 1 : width + 1]
        return ops.cast(image_grad, images_dtype), x_grad, y_grad

    @ops.custom_gradient
    def interpolate(images, x, y):
        x, y = _snap(x, width, dtype), _snap(y, height, dtype)
        index, fx, fy = corners(x, y)
        v0, v1, v2, v3 = read(index)
        wx1, wy1 = fx[..., None], fy[..., None]
        wx0, wy0 = 1.0 - wx1, 1.0 - wy1
        output = wy0 * (wx0 * v0 + wx1 * v1) + wy1 * (wx0 * v2 + wx1 * v3)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            # The forward pass reads the coordinates in its one fusion. The gradient
            # reads them, and its own coordinate gradients, in several places, which
            # must not each recompute them: see `_exact_one`.
            one = _exact_one(x)
            image_grad, x_grad, y_grad = backward(upstream, *corners(x / one, y / one))
            return image_grad, x_grad / one, y_grad / one

        return ops.cast(output, images_dtype), grad

    return interpolate(images, x, y)


def _exact_one(finite):
    """1.0, computed from `finite` (finite values only) so that it is not a constant.

    XLA copies cheap elementwise work into every one of its consumers, so each gather
    (for each channel it reads), each weight and each part of the gradient would redo
    the whole coordinate computation, which costs more than the sampling itself. A
    division is not cheap to XLA: it is computed once and stored, however many read it.
    Divided by this one, the coordinates are unchanged (`v / 1 == v` exactly, on any
    IEEE hardware) and computed once; outside XLA it costs one division per value.
    """
    return 1.0 + 0.0 * ops.sum(finite[:1, :1, :1])


def _to_pixels(coordinate, size, align_corners, dtype):
    """[-1, 1] -> pixel index space, where pixel k's centre is at k."""
    size = ops.cast(size, dtype)
    if align_corners:
        return (coordinate + 1.0) * 0.5 * (size - 1.0)
    return ((coordinate + 1.0) * size - 1.0) * 0.5


def _pad(coordinate, size, padding_mode, align_corners, dtype):
    """Maps pixel coordinates outside the image as `padding_mode` says.

    For `"zeros"` only clips far-away points to just outside the image (they still
    read 0 and pass no gradient), so that huge values never overflow an index.
    """
    last = ops.cast(size, dtype) - 1.0
    if padding_mode == "zeros":
        return ops.clip(coordinate, -2.0, last + 2.0)
    if padding_mode == "reflection":
        if align_corners:
            coordinate = _reflect(coordinate, 0.0, last)
        else:
            coordinate = _reflect(coordinate, -0.5, last + 0.5)
    return ops.clip(coordinate, 0.0, last)


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
    """Forward only: `_bilinear`'s custom gradient passes through it unchanged."""
    nearest = ops.round(coordinate)
    tolerance = SNAP_EPSILONS * _EPSILON[dtype] * ops.maximum(ops.cast(size, dtype), 1.0)
    return ops.where(ops.abs(coordinate - nearest) <= tolerance, nearest, coordinate)


_EPSILON = {"float32": 2.0**-23, "float64": 2.0**-52}


def _inside(coordinate, size):
    last = ops.cast(size, coordinate.dtype) - 1.0
    return ops.logical_and(coordinate >= 0, coordinate <= last)
