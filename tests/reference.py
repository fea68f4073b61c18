"""A plain-loop NumPy float64 reference for the core ops, independent of keras_stn.

Everything here is written from the published semantics, one sample point at a time,
so that it can be read line by line against them:

- `grid_sample` follows `torch.nn.functional.grid_sample` (ATen's `GridSampler.h`):
  unnormalise the coordinate, then clip it (``"border"``) or reflect it and clip it
  (``"reflection"``), then interpolate, with out-of-range taps reading zero.
  Bilinear interpolation weights the four neighbours; nearest rounds half to even
  (``std::nearbyint``). A point whose x or y is NaN or infinite reads zero, under every
  padding mode (the package's documented rule).
- `affine_grid` follows `torch.nn.functional.affine_grid`.
- `projective_grid` divides by ``h31 x + h32 y + 1`` and gives NaN where that is zero.
- `tps_grid` solves the ``(K + 3) x (K + 3)`` thin-plate-spline system with
  `numpy.linalg.solve` on every call.

Arrays are channels_last: images ``(B, H, W, C)``, grids ``(B, Ho, Wo, 2)`` with the
last axis ``(x, y)``, x along the width and y along the height, both in [-1, 1].
"""

import itertools
import math

import numpy as np


# ----------------------------------------------------------------------- coordinates


def unnormalize(coord, size, align_corners):
    """Normalised coordinate in [-1, 1] -> pixel index units (pixel centres at 0..size-1)."""
    if align_corners:
        # -1 and +1 are the centres of the corner pixels.
        return (coord + 1.0) / 2.0 * (size - 1)
    # -1 and +1 are the outer edges of the corner pixels.
    return ((coord + 1.0) * size - 1.0) / 2.0


def normalize(index, size, align_corners):
    """The inverse of `unnormalize` (for building test grids in pixel units)."""
    if align_corners:
        return 2.0 * index / (size - 1) - 1.0
    return (2.0 * index + 1.0) / size - 1.0


def clip_coordinates(coord, size):
    return min(size - 1.0, max(coord, 0.0))


def reflect_coordinates(coord, twice_low, twice_high):
    """Reflects `coord` into [twice_low / 2, twice_high / 2], as ATen does."""
    if twice_low == twice_high:
        return 0.0
    low = twice_low / 2.0
    span = (twice_high - twice_low) / 2.0
    coord = abs(coord - low)
    extra = math.fmod(coord, span)
    flips = math.floor(coord / span)
    if flips % 2 == 0:
        return extra + low
    return span - extra + low


def source_index(coord, size, padding_mode, align_corners):
    coord = unnormalize(coord, size, align_corners)
    if padding_mode == "border":
        coord = clip_coordinates(coord, size)
    elif padding_mode == "reflection":
        if align_corners:
            coord = reflect_coordinates(coord, 0.0, 2.0 * (size - 1))
        else:
            coord = reflect_coordinates(coord, -1.0, 2.0 * size - 1.0)
        coord = clip_coordinates(coord, size)
    elif padding_mode != "zeros":
        raise ValueError(f"unknown padding_mode {padding_mode!r}")
    return coord


# -------------------------------------------------------------------------- sampler


def grid_sample(
    images, grid, interpolation="bilinear", padding_mode="zeros", align_corners=False,
    fill_value=0.0,
):
    """Reads `images` (B, H, W, C) at `grid` (B, Ho, Wo, 2), or volumes (B, D, H, W, C)
    at (B, Do, Ho, Wo, 3) (trilinear, as torch's 5-D grid_sample); returns
    (B, Ho, Wo, C) or (B, Do, Ho, Wo, C). ``"constant"`` padding reads `fill_value`
    (a number or one per channel) where ``"zeros"`` reads 0; a non-finite point reads
    what is outside the image: `fill_value` under ``"constant"``, else 0."""
    images = np.asarray(images, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    rank = images.ndim - 2
    sizes, channels = images.shape[1:-1], images.shape[-1]
    outside = np.broadcast_to(
        np.asarray(fill_value if padding_mode == "constant" else 0.0, np.float64), (channels,)
    )
    mode = "zeros" if padding_mode == "constant" else padding_mode
    out = np.zeros(grid.shape[:-1] + (channels,))

    def tap(b, cell):
        if all(0 <= c < size for c, size in zip(cell, sizes)):
            return images[(b, *cell)]
        return outside

    for b in range(grid.shape[0]):
        for index in np.ndindex(*grid.shape[1:-1]):
            point = grid[(b, *index)]  # (x, y[, z])
            if not all(math.isfinite(v) for v in point):
                out[(b, *index)] = outside  # reads what is outside the image
                continue
            # Image-axis order (depth, height, width): the grid's last coordinate first.
            pixel = [
                source_index(point[rank - 1 - axis], sizes[axis], mode, align_corners)
                for axis in range(rank)
            ]
            if interpolation == "nearest":
                # Round half to even, like std::nearbyint.
                out[(b, *index)] = tap(b, [int(np.rint(p)) for p in pixel])
            elif interpolation == "bilinear":
                low = [math.floor(p) for p in pixel]
                value = np.zeros(channels)
                for bits in itertools.product((0, 1), repeat=rank):
                    weight = 1.0
                    for p, f, bit in zip(pixel, low, bits):
                        weight *= (p - f) if bit else (f + 1 - p)
                    value = value + weight * tap(b, [f + bit for f, bit in zip(low, bits)])
                out[(b, *index)] = value
            else:
                raise ValueError(f"unknown interpolation {interpolation!r}")
    return out


# ---------------------------------------------------------------------------- grids


def base_coordinates(size, align_corners):
    """The target-grid coordinates along one axis, as torch's affine_grid makes them."""
    if align_corners:
        if size == 1:
            return np.zeros(1)
        return np.array([-1.0 + 2.0 * j / (size - 1) for j in range(size)])
    return np.array([(2.0 * j + 1.0) / size - 1.0 for j in range(size)])


def affine_grid(theta, output_size, align_corners=False):
    """theta (B, 6) row-major [a, b, tx, c, d, ty] or (B, 2, 3) -> grid (B, H, W, 2)."""
    theta = np.asarray(theta, dtype=np.float64).reshape(-1, 2, 3)
    height, width = output_size
    xs = base_coordinates(width, align_corners)
    ys = base_coordinates(height, align_corners)
    grid = np.zeros((theta.shape[0], height, width, 2))
    for b in range(theta.shape[0]):
        (a, b_, tx), (c, d, ty) = theta[b]
        for i in range(height):
            for j in range(width):
                x, y = xs[j], ys[i]
                grid[b, i, j, 0] = a * x + b_ * y + tx
                grid[b, i, j, 1] = c * x + d * y + ty
    return grid


def projective_grid(theta, output_size, align_corners=False):
    """theta (B, 8) [h11, h12, h13, h21, h22, h23, h31, h32] (h33 = 1) or (B, 3, 3)."""
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim == 3:
        theta = theta.reshape(-1, 9)[:, :8]
    height, width = output_size
    xs = base_coordinates(width, align_corners)
    ys = base_coordinates(height, align_corners)
    grid = np.zeros((theta.shape[0], height, width, 2))
    for b in range(theta.shape[0]):
        h11, h12, h13, h21, h22, h23, h31, h32 = theta[b]
        for i in range(height):
            for j in range(width):
                x, y = xs[j], ys[i]
                den = h31 * x + h32 * y + 1.0
                if den == 0.0:
                    grid[b, i, j] = np.nan
                    continue
                grid[b, i, j, 0] = (h11 * x + h12 * y + h13) / den
                grid[b, i, j, 1] = (h21 * x + h22 * y + h23) / den
    return grid


def corners_homography(corners):
    """(B, 8) corners [x_tl, y_tl, x_tr, y_tr, x_bl, y_bl, x_br, y_br] -> (B, 3, 3) with
    h33 = 1: the homography that maps the output's corners (-1, -1), (1, -1), (-1, 1),
    (1, 1) there, by solving the direct linear transform's 8x8 system (two rows a
    point: h11 x + h12 y + h13 - u (h31 x + h32 y) = u, and the same for v)."""
    corners = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)
    targets = [(-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)]
    matrices = []
    for points in corners:
        rows, values = [], []
        for (x, y), (u, v) in zip(targets, points):
            rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
            rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
            values += [u, v]
        h = np.linalg.solve(np.array(rows), np.array(values))
        matrices.append(np.append(h, 1.0).reshape(3, 3))
    return np.stack(matrices)


def default_control_points(grid_shape=(4, 4)):
    """A regular grid in [-1, 1]^2 with the corners, row by row (y outer, x inner)."""
    rows, cols = grid_shape
    return np.array(
        [(x, y) for y in np.linspace(-1.0, 1.0, rows) for x in np.linspace(-1.0, 1.0, cols)]
    )


def tps_kernel(squared_distance):
    """U(r) = r^2 log r^2, with U(0) = 0."""
    if squared_distance == 0.0:
        return 0.0
    return squared_distance * math.log(squared_distance)


def tps_coefficients(control_points, targets):
    """Solves for the kernel weights w (K, 2) and the affine part a (3, 2) of f with
    f(P_k) = targets_k, sum_k w_k = 0, sum_k w_k P_k = 0."""
    points = np.asarray(control_points, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    k = points.shape[0]
    system = np.zeros((k + 3, k + 3))
    for i in range(k):
        for j in range(k):
            system[i, j] = tps_kernel(float(np.sum((points[i] - points[j]) ** 2)))
        system[i, k] = 1.0
        system[i, k + 1 :] = points[i]
        system[k, i] = 1.0
        system[k + 1 :, i] = points[i]
    rhs = np.zeros((k + 3, 2))
    rhs[:k] = targets
    solution = np.linalg.solve(system, rhs)
    return solution[:k], solution[k:]


def tps_grid(theta, control_points, output_size, align_corners=False):
    """theta (B, 2K) [x1, y1, ...] or (B, K, 2): where each control point maps to."""
    points = np.asarray(control_points, dtype=np.float64)
    k = points.shape[0]
    theta = np.asarray(theta, dtype=np.float64).reshape(-1, k, 2)
    height, width = output_size
    xs = base_coordinates(width, align_corners)
    ys = base_coordinates(height, align_corners)
    grid = np.zeros((theta.shape[0], height, width, 2))
    for b in range(theta.shape[0]):
        weights, affine = tps_coefficients(points, theta[b])
        for i in range(height):
            for j in range(width):
                p = np.array([xs[j], ys[i]])
                value = affine[0] + p[0] * affine[1] + p[1] * affine[2]
                for n in range(k):
                    value = value + weights[n] * tps_kernel(float(np.sum((p - points[n]) ** 2)))
                grid[b, i, j] = value
    return grid


# ------------------------------------------------------------- transform families


def family_to_affine(name, theta):
    """The affine (B, 6) theta that a low-parameter family's theta (B, P) stands for."""
    theta = np.asarray(theta, dtype=np.float64)
    zeros = np.zeros(theta.shape[0])
    ones = np.ones(theta.shape[0])
    if name == "translation":
        tx, ty = theta.T
        rows = [ones, zeros, tx, zeros, ones, ty]
    elif name == "attention":
        s, tx, ty = theta.T
        rows = [s, zeros, tx, zeros, s, ty]
    elif name == "similarity":
        a, b, tx, ty = theta.T
        rows = [a, -b, tx, b, a, ty]
    elif name == "affine":
        return theta.reshape(-1, 6)
    else:
        raise ValueError(f"{name!r} is not an affine family")
    return np.stack(rows, axis=1)


def keystone_corners(theta):
    """(B, 8) [a, b, tx, c, d, ty, kx, ky] -> (B, 8) corners: (x, y) in (-1, -1),
    (1, -1), (-1, 1), (1, 1) reads from (a x + b y + tx + kx x y, c x + d y + ty + ky x y)."""
    corners = []
    for a, b, tx, c, d, ty, kx, ky in np.asarray(theta, dtype=np.float64):
        corners.append([value for y in (-1, 1) for x in (-1, 1)
                        for value in (a * x + b * y + tx + kx * x * y,
                                      c * x + d * y + ty + ky * x * y)])
    return np.array(corners)


def family_grid(name, theta, output_size, align_corners=False):
    """The grid of a family's default form (projective: the keystone)."""
    if name == "projective":
        matrix = corners_homography(keystone_corners(theta))
        return projective_grid(matrix, output_size, align_corners)
    if name == "tps":
        return tps_grid(theta, default_control_points(), output_size, align_corners)
    return affine_grid(family_to_affine(name, theta), output_size, align_corners)
