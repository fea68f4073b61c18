"""Plain-loop NumPy float64 references, written from the definitions, not from keras_stn.

`grid_sample` follows torch.nn.functional.grid_sample's algorithm point by point:
unnormalise, pad (clip / reflect-and-clip), then interpolate.
"""

import math

import numpy as np


def unnormalise(coordinate, size, align_corners):
    if align_corners:
        return (coordinate + 1) / 2 * (size - 1)
    return ((coordinate + 1) * size - 1) / 2


def reflect(coordinate, twice_low, twice_high):
    if twice_low == twice_high:
        return 0.0
    low = twice_low / 2
    span = (twice_high - twice_low) / 2
    coordinate = abs(coordinate - low)
    extra = math.fmod(coordinate, span)
    flips = math.floor(coordinate / span)
    return extra + low if flips % 2 == 0 else span - extra + low


def pad(coordinate, size, padding_mode, align_corners):
    if padding_mode == "zeros":
        return coordinate
    if padding_mode == "reflection":
        if align_corners:
            coordinate = reflect(coordinate, 0, 2 * (size - 1))
        else:
            coordinate = reflect(coordinate, -1, 2 * size - 1)
    return min(max(coordinate, 0.0), size - 1.0)


def read(image, row, column):
    height, width = image.shape[:2]
    if 0 <= row < height and 0 <= column < width:
        return image[row, column]
    return np.zeros(image.shape[2])


def grid_sample(images, grid, interpolation="bilinear", padding_mode="zeros",
                align_corners=False):
    """images (B, H, W, C), grid (B, Ho, Wo, 2) -> (B, Ho, Wo, C), float64."""
    images = np.asarray(images, np.float64)
    grid = np.asarray(grid, np.float64)
    batch, height, width, channels = images.shape
    out = np.zeros(grid.shape[:3] + (channels,))
    for b in range(batch):
        for i in range(grid.shape[1]):
            for j in range(grid.shape[2]):
                gx, gy = grid[b, i, j]
                if not (np.isfinite(gx) and np.isfinite(gy)):
                    continue
                x = pad(unnormalise(gx, width, align_corners), width, padding_mode, align_corners)
                y = pad(unnormalise(gy, height, align_corners), height, padding_mode, align_corners)
                if interpolation == "nearest":
                    out[b, i, j] = read(images[b], int(np.rint(y)), int(np.rint(x)))
                    continue
                x0, y0 = math.floor(x), math.floor(y)
                fx, fy = x - x0, y - y0
                out[b, i, j] = (
                    (1 - fx) * (1 - fy) * read(images[b], y0, x0)
                    + fx * (1 - fy) * read(images[b], y0, x0 + 1)
                    + (1 - fx) * fy * read(images[b], y0 + 1, x0)
                    + fx * fy * read(images[b], y0 + 1, x0 + 1)
                )
    return out


def centres(size, align_corners):
    if align_corners:
        return [0.0] if size == 1 else [-1 + 2 * k / (size - 1) for k in range(size)]
    return [(2 * k + 1) / size - 1 for k in range(size)]


def affine_grid(theta, output_size, align_corners=False):
    """theta (B, 2, 3) -> (B, H, W, 2)."""
    theta = np.asarray(theta, np.float64).reshape(-1, 2, 3)
    height, width = output_size
    out = np.zeros((len(theta), height, width, 2))
    for b, matrix in enumerate(theta):
        for i, y in enumerate(centres(height, align_corners)):
            for j, x in enumerate(centres(width, align_corners)):
                out[b, i, j] = matrix @ [x, y, 1.0]
    return out


def projective_grid(theta, output_size, align_corners=False):
    """theta (B, 8) -> (B, H, W, 2)."""
    theta = np.asarray(theta, np.float64)
    height, width = output_size
    out = np.zeros((len(theta), height, width, 2))
    for b, params in enumerate(theta):
        matrix = np.append(params, 1.0).reshape(3, 3)
        for i, y in enumerate(centres(height, align_corners)):
            for j, x in enumerate(centres(width, align_corners)):
                u, v, w = matrix @ [x, y, 1.0]
                out[b, i, j] = (u / w, v / w)
    return out


def tps_grid(theta, control_points, output_size, align_corners=False):
    """Solves the TPS interpolation system directly for every batch item."""
    points = np.asarray(control_points, np.float64)
    count = len(points)
    theta = np.asarray(theta, np.float64).reshape(-1, count, 2)

    def kernel(p, q):
        r2 = float(np.sum((p - q) ** 2))
        return r2 * math.log(r2) if r2 > 0 else 0.0

    system = np.zeros((count + 3, count + 3))
    for k in range(count):
        for m in range(count):
            system[k, m] = kernel(points[k], points[m])
        system[k, count:] = [1.0, *points[k]]
        system[count:, k] = [1.0, *points[k]]
    height, width = output_size
    out = np.zeros((len(theta), height, width, 2))
    for b, targets in enumerate(theta):
        rhs = np.concatenate([targets, np.zeros((3, 2))])
        coefficients = np.linalg.solve(system, rhs)
        for i, y in enumerate(centres(height, align_corners)):
            for j, x in enumerate(centres(width, align_corners)):
                p = np.array([x, y])
                features = [kernel(p, q) for q in points] + [1.0, x, y]
                out[b, i, j] = np.array(features) @ coefficients
    return out
