"""Transform families: how many parameters theta has, its identity, and its grid.

A family is a small stateless object. `get("affine")` returns one by name; a layer
stores it with `keras.saving.serialize_keras_object`. `tile_parameters(family, count)`
gives `count` parameter vectors that read the tiles of a partition of the image, a
different start for each of several transformers.

Example:
>>> from keras_stn import transforms
>>> family = transforms.get("attention")
>>> family.num_params, family.identity().tolist()
(3, [1.0, 0.0, 0.0])
"""

import math
import numbers

import numpy as np
import keras
from keras import ops

from keras_stn import _checks
from keras_stn.ops import grids

_register = keras.saving.register_keras_serializable(package="keras_stn")


class Transform:
    """Base class of the transform families.

    A subclass sets `name` and `rank` (2 for images, 3 for volumes), and defines
    `num_params`, `identity()` and `grid(theta, output_size, align_corners)`.
    """

    name = None
    rank = 2

    @property
    def num_params(self):
        return len(self.identity())

    def identity(self):
        """The parameter vector of the identity transform, NumPy `(num_params,)`."""
        raise NotImplementedError

    def grid(self, theta, output_size, align_corners=False):
        """`(batch, num_params)` theta -> `(batch, out_height, out_width, 2)` grid
        (`(batch, out_depth, out_height, out_width, 3)` for a volume family)."""
        raise NotImplementedError

    def box_parameters(self, centre, half_size):
        """The parameters that read an axis-aligned box, as closely as the family can.

        Backwards, as everywhere: the output's edges (-1 and +1) read the box's edges.
        Optional: a family without it cannot start from tiles (`tile_parameters`).
        A volume family reads the box in x and y through the whole depth, as
        closely as it can.

        Args:
            centre: `(x, y)` of the box in the normalised frame [-1, 1]^2.
            half_size: `(half_width, half_height)`, positive.

        Returns:
            NumPy float64 `(num_params,)`.
        """
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def _check_theta(self, theta):
        theta = ops.convert_to_tensor(theta)
        _checks.check_float("theta", theta)
        shape = tuple(theta.shape)
        if len(shape) != 2 or shape[1] != self.num_params:
            raise ValueError(
                f"`theta` of the {self.name!r} transform must have shape "
                f"(batch, {self.num_params}). Received: theta with shape {shape}"
            )
        return ops.cast(theta, _checks.working_dtype(theta))


class _AffineFamily(Transform):
    """A family whose transforms are affine: it only says how theta fills `A`."""

    def affine_matrix(self, theta):
        """`(batch, num_params)` -> `(batch, 6)` row-major `[a, b, tx, c, d, ty]`
        (`(batch, 12)`, the 3x4 matrix, for a volume family)."""
        raise NotImplementedError

    def grid(self, theta, output_size, align_corners=False):
        sizes = _checks.check_output_size(output_size, ranks=(self.rank,))
        matrix = self.affine_matrix(self._check_theta(theta))
        return grids.affine_grid(matrix, sizes, align_corners)


@_register
class Translation(_AffineFamily):
    """`[tx, ty]`: a shift, in the normalised frame (2 = the whole image)."""

    name = "translation"

    def identity(self):
        return np.zeros(2)

    def box_parameters(self, centre, half_size):
        """Only the shift: the output reads a whole-image-sized window centred on the box."""
        return np.asarray(centre, dtype="float64").copy()

    def affine_matrix(self, theta):
        one, zero = ops.ones_like(theta[:, :1]), ops.zeros_like(theta[:, :1])
        tx, ty = theta[:, :1], theta[:, 1:]
        return ops.concatenate([one, zero, tx, zero, one, ty], axis=1)


@_register
class Attention(_AffineFamily):
    """`[s, tx, ty]`: isotropic scale and shift, the paper's attention (eq. 2)."""

    name = "attention"

    def identity(self):
        return np.array([1.0, 0.0, 0.0])

    def box_parameters(self, centre, half_size):
        """One scale for x and y: the smaller half-size, so the window fits in the box."""
        return np.array([min(half_size), centre[0], centre[1]], dtype="float64")

    def affine_matrix(self, theta):
        s, tx, ty = theta[:, :1], theta[:, 1:2], theta[:, 2:]
        zero = ops.zeros_like(s)
        return ops.concatenate([s, zero, tx, zero, s, ty], axis=1)


@_register
class Similarity(_AffineFamily):
    """`[a, b, tx, ty]` -> `[[a, -b, tx], [b, a, ty]]`, with `a = s cos(r)`,
    `b = s sin(r)`: rotation, isotropic scale and shift, linear in its parameters."""

    name = "similarity"

    def identity(self):
        return np.array([1.0, 0.0, 0.0, 0.0])

    def box_parameters(self, centre, half_size):
        """No rotation, and the attention's scale: the smaller half-size."""
        return np.array([min(half_size), 0.0, centre[0], centre[1]], dtype="float64")

    def affine_matrix(self, theta):
        a, b, tx, ty = theta[:, :1], theta[:, 1:2], theta[:, 2:3], theta[:, 3:]
        return ops.concatenate([a, -b, tx, b, a, ty], axis=1)


@_register
class Affine(_AffineFamily):
    """`[a, b, tx, c, d, ty]`: the 2x3 matrix applied to `(x_t, y_t, 1)`."""

    name = "affine"

    def identity(self):
        return np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])

    def box_parameters(self, centre, half_size):
        """Exact: `[half_width, 0, cx, 0, half_height, cy]`."""
        (cx, cy), (hw, hh) = centre, half_size
        return np.array([hw, 0.0, cx, 0.0, hh, cy], dtype="float64")

    def affine_matrix(self, theta):
        return theta


@_register
class Projective(Transform):
    """A homography (a projective transform): 8 parameters, in one of three forms.

    Each form's homography is the one that sends the output's four corners, `(-1, -1)`,
    `(1, -1)`, `(-1, 1)`, `(1, 1)` (row by row), to four points of the input:

    - `"keystone"` (the default): `[a, b, tx, c, d, ty, kx, ky]`, an affine map and a
      keystone: corner `(x, y)` reads from `(a x + b y + tx + kx x y,
      c x + d y + ty + ky x y)`: the output reads a trapezoid whose bottom edge `kx`
      makes `2 kx` longer and top edge `2 kx` shorter (`ky`: the right and left
      edges). With `kx = ky = 0` it is exactly the affine transform
      `[a, b, tx, c, d, ty]`, as the matrix form is with `h31 = h32 = 0`: the two
      share their identity, `[1, 0, 0, 0, 1, 0, 0, 0]`, and the effect of their first
      six parameters there. Unlike the matrix form it has no horizon within reach:
      a corner moves by at most the sum of four parameters' changes.
    - `"corners"`: `[x_tl, y_tl, x_tr, y_tr, x_bl, y_bl, x_br, y_br]`, the four
      points themselves (the "4-point" form of DeTone et al. 2016). Under Adam a
      localisation network moves each corner more slowly through it than through
      the other forms: by one parameter per coordinate, where they move it by three
      or four at once.
    - `"matrix"`: `[h11, h12, h13, h21, h22, h23, h31, h32]` with `h33 = 1`, the
      paper's. `h31 + h32 = 1` puts a corner of the output at infinity; a
      localisation network whose first steps are large (Adam on a 60x60 input) can
      cross that horizon and never come back (docs/training.md).

    `homography(theta)` gives the `(batch, 3, 3)` matrix of any form.

    Example:
    >>> Projective().identity().tolist()
    [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    >>> Projective("corners").identity().tolist()
    [-1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    """

    name = "projective"
    PARAMETERISATIONS = ("keystone", "corners", "matrix")

    def __init__(self, parameterisation="keystone"):
        if parameterisation not in self.PARAMETERISATIONS:
            raise ValueError(
                f"`parameterisation` must be one of {self.PARAMETERISATIONS}. "
                f"Received: parameterisation={parameterisation!r}"
            )
        self.parameterisation = parameterisation

    def identity(self):
        if self.parameterisation == "corners":
            return np.array([-1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
        return np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])

    def box_parameters(self, centre, half_size):
        """Exact: the affine box with no keystone or perspective, or its corners."""
        (cx, cy), (hw, hh) = centre, half_size
        if self.parameterisation != "corners":
            return np.array([hw, 0.0, cx, 0.0, hh, cy, 0.0, 0.0], dtype="float64")
        corners = [(cx + sx * hw, cy + sy * hh) for sy in (-1, 1) for sx in (-1, 1)]
        return np.asarray(corners, dtype="float64").reshape(-1)

    def homography(self, theta):
        """`(batch, 8)` theta -> the `(batch, 3, 3)` homography from the output's
        normalised frame to the input's (`[[h11, h12, h13], ..., [h31, h32, h33]]`)."""
        theta = self._check_theta(theta)
        if self.parameterisation == "matrix":
            one = ops.ones_like(theta[:, :1])
            return ops.reshape(ops.concatenate([theta, one], axis=1), (-1, 3, 3))
        if self.parameterisation == "keystone":
            theta = keystone_corners(theta)
        return corners_homography(theta)

    def grid(self, theta, output_size, align_corners=False):
        return grids.projective_grid(self.homography(theta), output_size, align_corners)

    def get_config(self):
        return {"parameterisation": self.parameterisation}

    @classmethod
    def from_config(cls, config):
        # A config without the key was saved when the matrix was the only form.
        return cls(config.get("parameterisation", "matrix"))


def keystone_corners(theta):
    """`(batch, 8)` `[a, b, tx, c, d, ty, kx, ky]` -> the `(batch, 8)` corners
    `[x_tl, y_tl, ..., x_br, y_br]`: corner `(x, y)` reads from
    `(a x + b y + tx + kx x y, c x + d y + ty + ky x y)`.

    Example:
    >>> import numpy as np
    >>> corners = keystone_corners(np.array([[1, 0, 0, 0, 1, 0, 0.25, 0]], "float32"))
    >>> np.asarray(corners)[0].tolist()   # the top edge narrower, the bottom wider
    [-0.75, -1.0, 0.75, -1.0, -1.25, 1.0, 1.25, 1.0]
    """
    a, b, tx, c, d, ty, kx, ky = ops.unstack(theta, 8, axis=1)
    corners = []
    for y in (-1.0, 1.0):
        for x in (-1.0, 1.0):
            corners += [a * x + b * y + tx + kx * (x * y), c * x + d * y + ty + ky * (x * y)]
    return ops.stack(corners, axis=1)


def corners_homography(corners):
    """The homography that maps the output's corners to `corners`.

    Heckbert's closed form (Fundamentals of Texture Mapping, 1989, sec. 2.2.3): the
    unit square to the quadrilateral, after the frame [-1, 1]^2 to the unit square.
    Exact at the identity. Where the top right, bottom right and bottom left corners
    are on one line the form divides by zero: the matrix is NaN, so is the grid, and
    `keras_stn.ops.sample` reads 0 there. Other degenerate quadrilaterals give a
    singular matrix, which reads along a line.

    Args:
        corners: `(batch, 8)` `[x_tl, y_tl, x_tr, y_tr, x_bl, y_bl, x_br, y_br]`.

    Returns:
        `(batch, 3, 3)`.

    Example:
    >>> import numpy as np
    >>> square = np.array([[-1, -1, 1, -1, -1, 1, 1, 1]], "float32")   # the identity
    >>> bool(np.allclose(corners_homography(square), np.eye(3)))
    True
    """
    x0, y0, x1, y1 = corners[:, 0], corners[:, 1], corners[:, 2], corners[:, 3]
    x3, y3, x2, y2 = corners[:, 4], corners[:, 5], corners[:, 6], corners[:, 7]
    dx1, dy1, dx2, dy2 = x1 - x2, y1 - y2, x3 - x2, y3 - y2
    sx, sy = x0 - x1 + x2 - x3, y0 - y1 + y2 - y3
    det = dx1 * dy2 - dx2 * dy1
    epsilon = np.finfo(keras.backend.standardize_dtype(corners.dtype)).eps
    degenerate = ops.abs(det) <= epsilon
    det = ops.where(degenerate, ops.ones_like(det), det)
    g = ops.where(degenerate, float("nan"), (sx * dy2 - dx2 * sy) / det)
    h = ops.where(degenerate, float("nan"), (dx1 * sy - sx * dy1) / det)
    # The unit square's homography [[a, b, c], [d, e, f], [g, h, 1]], then u = (x + 1) / 2.
    a, b, d, e = x1 - x0 + g * x1, x3 - x0 + h * x3, y1 - y0 + g * y1, y3 - y0 + h * y3
    rows = [
        a / 2, b / 2, (a + b) / 2 + x0,
        d / 2, e / 2, (d + e) / 2 + y0,
        g / 2, h / 2, (g + h) / 2 + 1,
    ]
    return ops.reshape(ops.stack(rows, axis=1), (-1, 3, 3))


@_register
class TPS(Transform):
    """Thin-plate spline through K control points: theta is where each one reads from.

    Args:
        control_points: `(K, 2)` target-space `(x, y)` points; `None` puts
            `grid_shape` points on a regular grid over [-1, 1]^2, row by row.
        grid_shape: `(rows, columns)` of the regular grid; `(4, 4)` is the paper's
            16-point TPS.

    Example:
    >>> TPS().num_params
    32
    """

    name = "tps"

    def __init__(self, control_points=None, grid_shape=(4, 4)):
        if control_points is None:
            rows, columns = _checks.check_output_size(grid_shape, "grid_shape")
            if rows < 2 or columns < 2:
                raise ValueError(
                    "`grid_shape` needs at least 2 rows and 2 columns of control "
                    f"points. Received: grid_shape={grid_shape!r}"
                )
            y, x = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, columns), indexing="ij")
            control_points = np.stack([x.ravel(), y.ravel()], axis=-1)
            self.grid_shape = (rows, columns)
        else:
            self.grid_shape = None
        self.control_points = grids.check_control_points(control_points)

    def identity(self):
        return self.control_points.reshape(-1).copy()

    def box_parameters(self, centre, half_size):
        """Exact: each control point reads its image under the box's affine map (a
        thin-plate spline through affinely moved points is that affine map)."""
        moved = np.asarray(centre, "float64") + self.control_points * np.asarray(half_size)
        return moved.reshape(-1)

    def grid(self, theta, output_size, align_corners=False):
        theta = self._check_theta(theta)
        return grids.tps_grid(theta, self.control_points, output_size, align_corners)

    def get_config(self):
        if self.grid_shape is not None:
            return {"control_points": None, "grid_shape": list(self.grid_shape)}
        return {"control_points": self.control_points.tolist(), "grid_shape": None}

    def __hash__(self):
        return hash((type(self), self.control_points.tobytes()))


@_register
class Translation3D(_AffineFamily):
    """`[tx, ty, tz]`: a shift of a volume, in the normalised frame."""

    name = "translation3d"
    rank = 3

    def identity(self):
        return np.zeros(3)

    def box_parameters(self, centre, half_size):
        """Only the shift in x and y, as `Translation`; z unchanged."""
        return np.array([centre[0], centre[1], 0.0], dtype="float64")

    def affine_matrix(self, theta):
        one, zero = ops.ones_like(theta[:, :1]), ops.zeros_like(theta[:, :1])
        tx, ty, tz = theta[:, :1], theta[:, 1:2], theta[:, 2:]
        rows = [one, zero, zero, tx, zero, one, zero, ty, zero, zero, one, tz]
        return ops.concatenate(rows, axis=1)


@_register
class Attention3D(_AffineFamily):
    """`[s, tx, ty, tz]`: isotropic scale and shift of a volume."""

    name = "attention3d"
    rank = 3

    def identity(self):
        return np.array([1.0, 0.0, 0.0, 0.0])

    def box_parameters(self, centre, half_size):
        """As `Attention` in x and y; the one scale shrinks z too: the box's square
        through the middle of the depth."""
        return np.array([min(half_size), centre[0], centre[1], 0.0], dtype="float64")

    def affine_matrix(self, theta):
        s, tx, ty, tz = theta[:, :1], theta[:, 1:2], theta[:, 2:3], theta[:, 3:]
        zero = ops.zeros_like(s)
        rows = [s, zero, zero, tx, zero, s, zero, ty, zero, zero, s, tz]
        return ops.concatenate(rows, axis=1)


@_register
class Affine3D(_AffineFamily):
    """The row-major 3x4 matrix applied to `(x_t, y_t, z_t, 1)` (12 parameters)."""

    name = "affine3d"
    rank = 3

    def identity(self):
        return np.eye(3, 4).reshape(-1)

    def box_parameters(self, centre, half_size):
        """Exact: the box in x and y, the whole depth in z."""
        (cx, cy), (hw, hh) = centre, half_size
        return np.array([hw, 0, 0, cx, 0, hh, 0, cy, 0, 0, 1, 0], dtype="float64")

    def affine_matrix(self, theta):
        return theta


FAMILIES = {
    f.name: f
    for f in (
        Translation, Attention, Similarity, Affine, Projective, TPS,
        Translation3D, Attention3D, Affine3D,
    )
}


def get(identifier):
    """A family from its name, a `Transform`, or its serialized config.

    Example:
    >>> get("tps").num_params
    32
    """
    if isinstance(identifier, Transform):
        return identifier
    if isinstance(identifier, str) and identifier in FAMILIES:
        return FAMILIES[identifier]()
    if isinstance(identifier, dict):
        family = keras.saving.deserialize_keras_object(identifier)
        if isinstance(family, Transform):
            return family
    raise ValueError(
        f"`transform` must be one of {sorted(FAMILIES)} or a keras_stn.transforms."
        f"Transform. Received: transform={identifier!r}"
    )


# Names whose bare form in a saved config means another family than `get` gives
# today: "projective" written by 0.1.0, when the matrix was the only projective form.
# `serialize` never writes them bare; `from_saved` reads them as they were meant.
SAVED_NAMES = {"projective": Projective("matrix")}


def serialize(transform):
    """The family's name when that is enough to rebuild it, else its Keras config."""
    transform = get(transform)
    default = FAMILIES.get(transform.name)
    if default is not None and transform == default() and transform.name not in SAVED_NAMES:
        return transform.name
    return keras.saving.serialize_keras_object(transform)


def from_saved(identifier):
    """`get` for a family read back from a saved config (`serialize`'s output): a bare
    name in `SAVED_NAMES` is the family it meant when it was written.

    Example:
    >>> from_saved("projective").parameterisation
    'matrix'
    """
    if isinstance(identifier, str) and identifier in SAVED_NAMES:
        return SAVED_NAMES[identifier]
    return get(identifier)


def tile_layout(count):
    """`(rows, columns)` of the partition that tiles the image for `count` transformers.

    As square as possible with `rows * columns >= count`: `columns = ceil(sqrt(count))`,
    `rows = ceil(count / columns)`. When `count` is not a product, the last tiles of the
    bottom row are left unused.

    Example:
    >>> tile_layout(2), tile_layout(4), tile_layout(5)
    ((1, 2), (2, 2), (2, 3))
    """
    count = _check_count(count)
    columns = math.isqrt(count - 1) + 1
    return -(-count // columns), columns


def tile_parameters(transform, count):
    """Parameters that start `count` transformers on different tiles of the image.

    The image's frame [-1, 1]^2 is cut into `tile_layout(count)` equal tiles, numbered
    row by row from the top left; transformer k reads tile k as closely as its family
    can (`Transform.box_parameters`):

    - affine, projective, TPS: exactly, e.g. affine `[1/columns, 0, cx, 0, 1/rows, cy]`;
    - attention, similarity (one scale for x and y): the largest square window of the
      normalised frame that fits in the tile, centred on it (scale `min(1/columns,
      1/rows)`), so no two transformers start on overlapping regions;
    - translation: a shift to the tile's centre (it cannot zoom).

    Volume families tile x and y and keep the depth: affine3d reads each tile
    through the whole depth, attention3d (one scale for x, y and z) its square
    through the middle of the depth, translation3d shifts to its centre.
    `count=1` is the identity of every family.

    Args:
        transform: a family name or a `keras_stn.transforms.Transform`.
        count: the number of transformers, a positive int.

    Returns:
        NumPy float64 `(count, num_params)`, row k for transformer k.

    Example:
    >>> tile_parameters("affine", 4)[0].tolist()   # x and y in [-1, 0]: the top left
    [0.5, 0.0, -0.5, 0.0, 0.5, -0.5]
    >>> tile_parameters("attention", 2).tolist()   # tiles 1 wide, 2 high: scale 1/2
    [[0.5, -0.5, 0.0], [0.5, 0.5, 0.0]]
    """
    family = get(transform)
    rows, columns = tile_layout(count)
    half_size = (1.0 / columns, 1.0 / rows)
    tiles = []
    for k in range(count):
        row, column = divmod(k, columns)
        centre = (-1.0 + (2 * column + 1) / columns, -1.0 + (2 * row + 1) / rows)
        try:
            tiles.append(np.asarray(family.box_parameters(centre, half_size), "float64"))
        except NotImplementedError:
            raise ValueError(
                "`transform` must define `box_parameters` to start from tiles. "
                f"Received: transform={family!r}"
            ) from None
    return np.stack(tiles)


def _check_count(count):
    if not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 1:
        raise ValueError(f"`count` must be a positive int. Received: count={count!r}")
    return int(count)
