"""Grid generators: turn transform parameters theta into a sampling grid.

Every grid is `(batch, out_height, out_width, 2)` with last axis `(x, y)` in the
normalised frame of `keras_stn.ops.sample`. The mapping is backwards: each output
pixel's target coordinate is mapped to the source coordinate it reads from.
"""

import functools

import numpy as np
import keras
from keras import ops

from keras_stn import _checks


def target_coordinates(output_size, align_corners=False):
    """The regular target grid as a NumPy float64 array `(height, width, 2)`, or
    `(depth, height, width, 3)` for a volume's `(depth, height, width)`.

    Pixel centres in the normalised frame: `(2j + 1) / width - 1` for
    `align_corners=False`, `-1 + 2j / (width - 1)` for `align_corners=True`
    (0 when `width == 1`), as `torch.nn.functional.affine_grid` does. The last axis
    is `(x, y)`, or `(x, y, z)`.

    Example:
    >>> target_coordinates((1, 2))[0, :, 0].tolist()
    [-0.5, 0.5]
    """
    sizes = _checks.check_output_size(output_size, ranks=(2, 3))
    axes = np.meshgrid(*[_centres(size, align_corners) for size in sizes], indexing="ij")
    return np.stack(axes[::-1], axis=-1)


def _centres(size, align_corners):
    if align_corners:
        return np.linspace(-1.0, 1.0, size) if size > 1 else np.zeros(1)
    return (2.0 * np.arange(size) + 1.0) / size - 1.0


def affine_grid(theta, output_size, align_corners=False):
    """Sampling grid of an affine transform (`torch.nn.functional.affine_grid`).

    Source `(x_s, y_s) = A @ (x_t, y_t, 1)` for the 2x3 matrix `A` of each batch item;
    for volumes, `(x_s, y_s, z_s) = A @ (x_t, y_t, z_t, 1)` for a 3x4 matrix.

    Args:
        theta: `(batch, 2, 3)` or `(batch, 6)`, row-major `[a, b, tx, c, d, ty]`;
            identity `[1, 0, 0, 0, 1, 0]`. For volumes `(batch, 3, 4)` or
            `(batch, 12)`, identity `[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]`.
        output_size: `(out_height, out_width)` or `(out_depth, out_height,
            out_width)`, Python ints.
        align_corners: the frame convention of `keras_stn.ops.sample`.

    Returns:
        `(batch, out_height, out_width, 2)` or `(batch, out_depth, out_height,
        out_width, 3)`, float32 (float64 for float64 theta).

    Example:
    >>> import numpy as np
    >>> grid = affine_grid(np.array([[1, 0, 0, 0, 1, 0]], "float32"), (2, 3))
    >>> tuple(grid.shape)
    (1, 2, 3, 2)
    """
    sizes = _checks.check_output_size(output_size, ranks=(2, 3))
    rank = len(sizes)
    shape = (rank, rank + 1)
    theta = _as_float_tensor(theta)
    other = 5 - rank
    if tuple(theta.shape)[1:] in ((other * (other + 1),), (other, other + 1)):
        raise ValueError(
            f"`output_size` has {rank} sizes but `theta` is a {other}-D affine matrix. "
            f"Received: output_size={output_size!r}, theta with shape {tuple(theta.shape)}"
        )
    matrix = _check_theta(theta, rank * (rank + 1), shape)
    homogeneous = _homogeneous_targets(sizes, align_corners, matrix.dtype)
    # Batch first: XLA lays the product out as (batch, rank, points), so each
    # coordinate is contiguous; with the targets first every read of the grid strides
    # across the batch.
    grid = ops.einsum("bjk,nk->bnj", matrix, homogeneous)
    return ops.reshape(grid, (-1, *sizes, rank))


def projective_grid(theta, output_size, align_corners=False):
    """Sampling grid of a projective transform (a homography with `h33 = 1`).

    `(x', y', w') = H @ (x_t, y_t, 1)`, source `(x'/w', y'/w')`. Where `|w'|` is
    below the float epsilon the point is at infinity: its grid value is NaN, and
    `keras_stn.ops.sample` reads 0 there and passes it no gradient.

    Args:
        theta: `(batch, 8)` `[h11, h12, h13, h21, h22, h23, h31, h32]`, or
            `(batch, 3, 3)` (its `h33` is used as given). Identity
            `[1, 0, 0, 0, 1, 0, 0, 0]`.
        output_size: `(out_height, out_width)`, Python ints.
        align_corners: the frame convention of `keras_stn.ops.sample`.

    Returns:
        `(batch, out_height, out_width, 2)`.

    Example:
    >>> import numpy as np
    >>> grid = projective_grid(np.array([[1, 0, 0, 0, 1, 0, 0, 0]], "float32"), (2, 2))
    >>> np.asarray(grid[0, 0, 0]).tolist()
    [-0.5, -0.5]
    """
    height, width = _checks.check_output_size(output_size)
    theta = _as_float_tensor(theta)
    shape = tuple(theta.shape)
    if len(shape) == 2 and shape[1] == 8:
        one = ops.ones_like(theta[:, :1])
        theta = ops.reshape(ops.concatenate([theta, one], axis=1), (-1, 3, 3))
    matrix = _check_theta(theta, None, (3, 3), expected="(batch, 8) or (batch, 3, 3)")
    homogeneous = _homogeneous_targets((height, width), align_corners, matrix.dtype)
    projected = ops.einsum("bjk,nk->bnj", matrix, homogeneous)  # batch first, as above
    w = projected[..., 2:]
    epsilon = np.finfo(keras.backend.standardize_dtype(matrix.dtype)).eps
    at_infinity = ops.abs(w) <= epsilon
    safe_w = ops.where(at_infinity, ops.ones_like(w), w)
    grid = ops.where(at_infinity, float("nan"), projected[..., :2] / safe_w)
    return ops.reshape(grid, (-1, height, width, 2))


def tps_grid(theta, control_points, output_size, align_corners=False):
    """Sampling grid of a thin-plate spline (TPS) through moved control points.

    The spline `f` maps each target control point `P_k` to the source point
    `theta_k` and is otherwise the smoothest such map: an affine part plus
    `sum_k w_k U(|p - P_k|)`, `U(r) = r^2 log r^2`, `U(0) = 0`. It depends on the
    control points only through a `(out_height * out_width, K)` matrix solved once in
    float64 (and cached), so the grid is linear in `theta`.

    Args:
        theta: `(batch, 2K)` flat `[x_1, y_1, ..., x_K, y_K]` or `(batch, K, 2)`:
            where each control point reads from. `theta == control_points` is the
            identity.
        control_points: `(K, 2)` target-space `(x, y)` points, K >= 3, not all on
            one line, no two equal.
        output_size: `(out_height, out_width)`, Python ints.
        align_corners: the frame convention of `keras_stn.ops.sample`.

    Returns:
        `(batch, out_height, out_width, 2)`.

    Example:
    >>> import numpy as np
    >>> points = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], "float32")
    >>> grid = tps_grid(points.reshape(1, 8), points, (2, 2))
    >>> np.asarray(grid[0, 1, 1]).tolist()
    [0.5, 0.5]
    """
    height, width = _checks.check_output_size(output_size)
    points = check_control_points(control_points)
    count = points.shape[0]
    theta = _as_float_tensor(theta)
    shape = tuple(theta.shape)
    if len(shape) == 3 and shape[1:] == (count, 2):
        theta = ops.reshape(theta, (-1, 2 * count))
    theta = _check_theta(theta, 2 * count, (2 * count,), f"(batch, {2 * count}) or (batch, {count}, 2)")
    dtype = theta.dtype
    offsets = ops.reshape(theta, (-1, count, 2)) - ops.cast(points, dtype)
    weights = _tps_weights(_key(points), height, width, bool(align_corners))
    targets = target_coordinates((height, width), align_corners).reshape(-1, 2)
    # Identity on the target grid plus the spline of the offsets: exact at identity.
    grid = ops.cast(targets, dtype) + ops.einsum("bkj,nk->bnj", offsets, ops.cast(weights, dtype))
    return ops.reshape(grid, (-1, height, width, 2))


def check_control_points(control_points, name="control_points"):
    """Returns control points as a float64 `(K, 2)` array, or raises `ValueError`."""
    points = np.asarray(control_points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 3:
        raise ValueError(
            f"`{name}` must be an array of at least 3 (x, y) points, shape (K, 2). "
            f"Received: {name} with shape {points.shape}"
        )
    if not np.all(np.isfinite(points)):
        raise ValueError(f"`{name}` must be finite. Received: {name}={points.tolist()}")
    if len(np.unique(points, axis=0)) != len(points):
        raise ValueError(
            f"`{name}` must not repeat a point. Received: {name}={points.tolist()}"
        )
    affine_part = np.concatenate([np.ones((len(points), 1)), points], axis=1)
    if np.linalg.matrix_rank(affine_part) < 3:
        raise ValueError(
            f"`{name}` must not all lie on one line. Received: {name}={points.tolist()}"
        )
    return points


def _key(points):
    return tuple(map(tuple, points.tolist()))


def _tps_kernel(squared_distance):
    safe = np.where(squared_distance > 0, squared_distance, 1.0)
    return np.where(squared_distance > 0, squared_distance * np.log(safe), 0.0)


@functools.lru_cache(maxsize=64)
def _tps_weights(points_key, height, width, align_corners):
    """`(height * width, K)` float64: the TPS value at each target for unit data."""
    points = np.array(points_key)
    count = len(points)
    system = np.zeros((count + 3, count + 3))
    system[:count, :count] = _tps_kernel(_squared_distances(points, points))
    system[:count, count] = 1.0
    system[:count, count + 1 :] = points
    system[count, :count] = 1.0
    system[count + 1 :, :count] = points.T
    # Columns: the spline coefficients (kernel weights, then affine) for each unit datum.
    coefficients = np.linalg.solve(system, np.eye(count + 3)[:, :count])
    targets = target_coordinates((height, width), align_corners).reshape(-1, 2)
    features = np.concatenate(
        [
            _tps_kernel(_squared_distances(targets, points)),
            np.ones((len(targets), 1)),
            targets,
        ],
        axis=1,
    )
    return features @ coefficients


def _squared_distances(a, b):
    return np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)


def _homogeneous_targets(sizes, align_corners, dtype):
    targets = target_coordinates(sizes, align_corners).reshape(-1, len(sizes))
    homogeneous = np.concatenate([targets, np.ones((len(targets), 1))], axis=1)
    return ops.convert_to_tensor(homogeneous, dtype=dtype)


def _as_float_tensor(theta, name="theta"):
    theta = ops.convert_to_tensor(theta)
    _checks.check_float(name, theta)
    return theta


def _check_theta(theta, size, matrix_shape, expected=None, name="theta"):
    """Returns theta as a float32/64 tensor of shape `(batch,) + matrix_shape`."""
    theta = _as_float_tensor(theta, name)
    shape = tuple(theta.shape)
    flat_ok = size is not None and len(shape) == 2 and shape[1] == size
    matrix_ok = len(shape) == 1 + len(matrix_shape) and shape[1:] == tuple(matrix_shape)
    if not (flat_ok or matrix_ok):
        expected = expected or f"(batch, {size}) or (batch, {', '.join(map(str, matrix_shape))})"
        raise ValueError(
            f"`{name}` must have shape {expected}. Received: {name} with shape {shape}"
        )
    theta = ops.cast(theta, _checks.working_dtype(theta))
    return ops.reshape(theta, (-1,) + tuple(matrix_shape))
