"""Times keras_stn's sampler against a plain gather sampler, map_coordinates and torch.

Every method computes the same thing: an affine grid from theta `(B, 6)` and a
bilinear read of `(B, H, W, C)` images along it (`align_corners=False`, zeros
padding, float32); for the volume shapes, a 3-D affine grid from theta `(B, 12)` and
a trilinear read of `(B, D, H, W, C)` volumes (torch's 5-D `affine_grid` +
`grid_sample`; the gather and map_coordinates baselines are 2-D only). Three modes:

- `fwd`: the output only.
- `fwd+bwd`: the output and the gradients to the images and to theta for a fixed
  upstream gradient.
- `fwd+bwd, grid only`: the output and the gradient to theta only (the images need
  none, as for a spatial transformer on the network's input).

Methods:

- `torch`: `torch.nn.functional.affine_grid` + `grid_sample` (only when torch is
  installed; it is never a dependency of keras_stn).
- `gather XLA`: the plain sampler below (meshgrid, floor, four gathers, weighted
  sum) under `tf.function(jit_compile=True)`, left to autodiff: the baseline.
- `map_coords XLA`: `keras.ops.image.map_coordinates(order=1)` under XLA.
- `stn graph` / `stn XLA`: `keras_stn.ops.affine_grid` + `keras_stn.ops.sample`
  under `tf.function` without and with `jit_compile=True`. `stn graph` is what a
  SavedModel serves and what Keras runs without XLA for inference.
- `stn fit graph`: the same `tf.function` without `jit_compile`, reading through
  `keras_stn.ops.sample_compiled` (the sampler as one XLA function): what the layers
  run while training when the model is not compiled with XLA (Keras' CPU default).
- `reads graph` (`fwd` only): keras_stn's own `tf.gather` reads of the 2 ** rank taps
  and its blend, op by op, from flat indices and fractions computed before the clock. No
  sampler that TensorFlow runs op by op with `tf.gather` (a served SavedModel) can
  take less: the floor under `stn graph`.

The methods take turns in one process, round after round, each in a block of four
calls of which the last three are timed (the first wakes its library's threads, as
in a loop of one library's calls); each figure is the median of `--repeats` timed
calls after two untimed warm-up calls (slow methods get fewer, at least 3). Runs on a
GPU unchanged when TensorFlow (and torch) see one.

    python benchmarks/bench_sampler.py [--repeats 15] [--shapes 0 2] [--modes fwd]
        [--skip "map_coords XLA"] [--threads 1] [--batch 1]
    python benchmarks/bench_sampler.py --shapes 5 6    # the volumes only

`--batch N` gives every shape a batch of N: with `--repeats 3` a quick check that
the script runs, not a measurement.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf
from keras import ops

import keras_stn
from keras_stn.ops import sampling  # the sampler's own reads, for `reads graph`

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing

# torch's OpenMP workers spin while they wait for work; in one process with
# TensorFlow's own thread pool, on a few cores, the spinning starves whichever
# framework runs next (torch's median grows tenfold on a busy 2-core machine). Passive
# waiting lets the two share the cores; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
try:
    import torch
except ImportError:
    torch = None

# (batch, height, width, channels, out_height, out_width): the shapes of issue #5;
# then volumes, (batch, depth, height, width, channels, out_depth, out_height,
# out_width): the shapes of issue #10.
SHAPES = [
    (256, 28, 28, 1, 28, 28),
    (128, 60, 60, 1, 30, 30),
    (64, 64, 64, 3, 64, 64),
    (16, 56, 56, 64, 56, 56),
    (8, 224, 224, 3, 224, 224),
    (8, 32, 32, 32, 1, 32, 32, 32),
    (2, 48, 48, 48, 4, 32, 32, 32),
]
MODES = ("fwd", "fwd+bwd", "fwd+bwd, grid only")


# ------------------------------------------------------------------------ the shapes


def rank(shape):
    """2 for an image shape, 3 for a volume shape."""
    return (len(shape) - 2) // 2


def split(shape):
    """`(batch, in_sizes, channels, out_sizes)` of a shape of `SHAPES`."""
    r = rank(shape)
    return shape[0], tuple(shape[1 : 1 + r]), shape[1 + r], tuple(shape[2 + r :])


def with_batch(shape, batch):
    return (batch,) + tuple(shape[1:]) if batch else tuple(shape)


def label(shape):
    batch, sizes, channels, out = split(shape)
    return f"{batch}, {'x'.join(map(str, sizes))}x{channels} -> {'x'.join(map(str, out))}"


# ------------------------------------------------------------------------ the samplers


def stn_sample(images, theta, *out_sizes):
    grid = keras_stn.ops.affine_grid(theta, out_sizes)
    return keras_stn.ops.sample(images, grid)


def stn_sample_compiled(images, theta, *out_sizes):
    grid = keras_stn.ops.affine_grid(theta, out_sizes)
    return keras_stn.ops.sample_compiled(images, grid)


def gather_sample(images, theta, out_height, out_width):
    """The plain sampler: meshgrid, floor, four gathers, weighted sum."""
    batch = ops.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    xs = (2.0 * ops.arange(out_width, dtype="float32") + 1.0) / out_width - 1.0
    ys = (2.0 * ops.arange(out_height, dtype="float32") + 1.0) / out_height - 1.0
    xx, yy = ops.meshgrid(xs, ys)
    targets = ops.stack([ops.ravel(xx), ops.ravel(yy), ops.ones_like(ops.ravel(xx))])
    grid = ops.matmul(ops.reshape(theta, (-1, 2, 3)), targets)  # (B, 2, Ho * Wo)
    x = ((grid[:, 0] + 1.0) * width - 1.0) * 0.5
    y = ((grid[:, 1] + 1.0) * height - 1.0) * 0.5
    x0, y0 = ops.floor(x), ops.floor(y)
    x1, y1 = x0 + 1.0, y0 + 1.0
    flat = ops.reshape(images, (-1, channels))
    base = ops.arange(batch, dtype="int32")[:, None] * (height * width)

    def read(xi, yi):
        inside = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
        column = ops.cast(ops.clip(xi, 0, width - 1), "int32")
        row = ops.cast(ops.clip(yi, 0, height - 1), "int32")
        values = ops.take(flat, base + row * width + column, axis=0)
        return values * ops.cast(inside, "float32")[..., None]

    out = (
        ((x1 - x) * (y1 - y))[..., None] * read(x0, y0)
        + ((x - x0) * (y1 - y))[..., None] * read(x1, y0)
        + ((x1 - x) * (y - y0))[..., None] * read(x0, y1)
        + ((x - x0) * (y - y0))[..., None] * read(x1, y1)
    )
    return ops.reshape(out, (-1, out_height, out_width, channels))


def map_coordinates_sample(images, theta, out_height, out_width):
    batch = ops.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    grid = keras_stn.ops.affine_grid(theta, (out_height, out_width))
    x = ((grid[..., 0] + 1.0) * width - 1.0) * 0.5
    y = ((grid[..., 1] + 1.0) * height - 1.0) * 0.5
    shape = (batch, out_height, out_width, channels)
    b = ops.broadcast_to(ops.cast(ops.reshape(ops.arange(batch), (-1, 1, 1, 1)), "float32"), shape)
    c = ops.broadcast_to(ops.arange(channels, dtype="float32"), shape)
    x = ops.broadcast_to(x[..., None], shape)
    y = ops.broadcast_to(y[..., None], shape)
    return keras.ops.image.map_coordinates(images, ops.stack([b, y, x, c]), order=1)


def tap_reads(arrays, out_size):
    """`(flat, index, fractions, offsets)`: what keras_stn's bilinear read starts from,
    computed by its own functions (zeros padding, unsnapped coordinates): the padded
    images as `(pixels, C)` rows, each point's first tap, its fractions per axis, and
    the taps' offsets from it."""
    images, theta, _ = arrays
    images = tf.constant(images)
    sizes = tuple(images.shape[1:-1])
    grid = keras_stn.ops.affine_grid(tf.constant(theta), out_size)
    coords = [sampling._clip_outside(c, size, "float32") for c, size in
              zip(sampling._pixel_coordinates(grid, sizes, False, "float32"), sizes)]
    padded = sampling._pad_images(images, None, "float32")
    layout = sampling._PaddedLayout(padded, coords[0])
    index, fractions = sampling._corners(coords, layout.strides, layout.base())
    return ops.reshape(padded, (layout.size, layout.channels)), index, fractions, layout.offsets


@tf.function(jit_compile=False)
def gather_reads(flat, index, fractions, offsets):
    """The sampler's own reads and blend, op by op (`offsets`: a Python list)."""
    return sampling._blend(sampling._read(flat, index, offsets, "float32"), fractions)


def reads_call(arrays, out_size):
    flat, index, fractions, offsets = tap_reads(arrays, out_size)

    def call():
        gather_reads(flat, index, fractions, offsets)
        timing.sync_tensorflow()

    return call


# -------------------------------------------------------------------------- the callers


def tensorflow_call(sampler, arrays, out_size, mode, jit_compile):
    images, theta, upstream = (tf.constant(a) for a in arrays)

    def forward(images, theta):
        return sampler(images, theta, *out_size)

    if mode == "fwd":
        step = tf.function(forward, jit_compile=jit_compile)
    else:
        image_grad = mode == "fwd+bwd"

        def forward_backward(images, theta, upstream):
            with tf.GradientTape() as tape:
                tape.watch(theta)
                if image_grad:
                    tape.watch(images)
                out = forward(images, theta)
            sources = [images, theta] if image_grad else [theta]
            return out, tape.gradient(out, sources, output_gradients=upstream)

        step = tf.function(forward_backward, jit_compile=jit_compile)

    def call():
        if mode == "fwd":
            step(images, theta)
        else:
            step(images, theta, upstream)
        timing.sync_tensorflow()

    return call


def call_overhead_ms():
    """Milliseconds per call of a jit-compiled `tf.function` that returns a constant
    slice of its input: the fixed cost inside every TensorFlow figure (a sampler inside
    a compiled training step does not pay it)."""
    empty = tensorflow_call(
        lambda images, theta, *size: theta[:1, :1], inputs((1, 1, 1, 1, 1, 1)), (1, 1),
        "fwd", True,
    )
    return 1000 * timing.time_interleaved({"empty": empty}, 51)["empty"]


def channels_first(array):
    return np.ascontiguousarray(np.moveaxis(array, -1, 1))


def torch_call(arrays, out_size, mode):
    """torch's affine_grid + grid_sample: 4-D for images, 5-D for volumes."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    images, theta, upstream = arrays
    r = len(out_size)
    images = torch.from_numpy(channels_first(images)).to(device)
    upstream = torch.from_numpy(channels_first(upstream)).to(device)
    theta = torch.from_numpy(theta.reshape(-1, r, r + 1)).to(device)
    size = (images.shape[0], images.shape[1]) + tuple(out_size)
    functional = torch.nn.functional

    def forward():
        grid = functional.affine_grid(theta, size, align_corners=False)
        return functional.grid_sample(
            images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )

    if mode == "fwd":
        def step():
            with torch.no_grad():
                forward()
    else:
        sources = [images, theta] if mode == "fwd+bwd" else [theta]

        def step():
            for source in sources:
                source.requires_grad_(True)
            out = forward()
            torch.autograd.grad(out, sources, upstream)
            for source in sources:
                source.requires_grad_(False)

    def call():
        step()
        if device == "cuda":
            torch.cuda.synchronize()

    return call


def inputs(shape, seed=0):
    batch, sizes, channels, out_sizes = split(shape)
    r = len(sizes)
    rng = np.random.default_rng(seed)
    images = rng.random((batch, *sizes, channels), dtype=np.float32)
    # Near the identity, a few points outside the image: rotations, scales, shifts.
    identity = np.eye(r, r + 1, dtype=np.float32).reshape(-1)
    theta = identity + 0.15 * rng.standard_normal((batch, identity.size)).astype(np.float32)
    upstream = rng.standard_normal((batch, *out_sizes, channels)).astype(np.float32)
    return images, theta, upstream


def methods(shape, mode, skip):
    arrays = inputs(shape)
    out_size = split(shape)[3]
    found = {}
    if torch is not None:
        found["torch"] = torch_call(arrays, out_size, mode)
    if rank(shape) == 2:
        found["gather XLA"] = tensorflow_call(gather_sample, arrays, out_size, mode, True)
        found["map_coords XLA"] = tensorflow_call(
            map_coordinates_sample, arrays, out_size, mode, True
        )
    found["stn graph"] = tensorflow_call(stn_sample, arrays, out_size, mode, False)
    found["stn fit graph"] = tensorflow_call(stn_sample_compiled, arrays, out_size, mode, False)
    found["stn XLA"] = tensorflow_call(stn_sample, arrays, out_size, mode, True)
    if mode == "fwd":
        found["reads graph"] = reads_call(arrays, out_size)
    return {name: call for name, call in found.items() if name not in skip}


def check_agreement(shape):
    """The methods compute the same output (a benchmark of wrong answers is no use)."""
    images, theta, _ = inputs(shape)
    _, sizes, channels, out_size = split(shape)
    r = len(sizes)
    reference = np.asarray(stn_sample(tf.constant(images), tf.constant(theta), *out_size))
    others = {}
    if r == 2:
        others["gather"] = gather_sample(tf.constant(images), tf.constant(theta), *out_size)
    if torch is not None:
        functional = torch.nn.functional
        grid = functional.affine_grid(
            torch.from_numpy(theta.reshape(-1, r, r + 1)),
            (shape[0], channels) + tuple(out_size),
            align_corners=False,
        )
        out = functional.grid_sample(
            torch.from_numpy(channels_first(images)), grid, align_corners=False
        )
        others["torch"] = np.moveaxis(out.numpy(), 1, -1)
    others["reads"] = gather_reads(*tap_reads((images, theta, None), out_size))
    for name, out in others.items():
        error = np.max(np.abs(np.asarray(out) - reference))
        if error > 1e-4:
            raise AssertionError(f"{name} differs from keras_stn by {error} on {shape}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--shapes", type=int, nargs="*", default=list(range(len(SHAPES))),
                        help="indices into SHAPES")
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--skip", nargs="*", default=[], help="method names to leave out")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for TensorFlow and torch alike (0: their defaults)")
    parser.add_argument("--batch", type=int, default=0,
                        help="every shape's batch size (0: the shape's own)")
    args = parser.parse_args()
    timing.set_threads(args.threads)

    print(timing.machine())
    print(f"{timing.load()}; median of {args.repeats} calls, in interleaved blocks; ms (ratio to "
          "torch, or to the gather baseline when torch is absent)")
    print(f"Calling a jit-compiled tf.function that does nothing takes {call_overhead_ms():.2f} "
          "ms here: every TensorFlow figure includes that once.\n")
    tables = {}  # one per rank: the volumes have fewer methods, `fwd` has one more
    for index in args.shapes:
        shape = with_batch(SHAPES[index], args.batch)
        check_agreement(shape)
        for mode in args.modes:
            calls = methods(shape, mode, set(args.skip))
            seconds = timing.time_interleaved(calls, args.repeats)
            reference = "torch" if "torch" in seconds else "gather XLA"
            names, rows = tables.setdefault(rank(shape), ([], []))
            names.extend(name for name in seconds if name not in names)
            row = {"shape": label(shape), "mode": mode}
            for name, value in seconds.items():
                row[name] = f"{1000 * value:.2f}"
                if name != reference and reference in seconds:
                    row[name] += f" ({value / seconds[reference]:.2f}x)"
            rows.append(row)
            table = timing.markdown_table(header(rank(shape), names), [cells(row, names)])
            print(table.splitlines()[-1], flush=True)
    print(f"\n{timing.load()}")
    for rank_, (names, rows) in tables.items():
        print()
        print(timing.markdown_table(header(rank_, names), [cells(row, names) for row in rows]))


def header(rank_, names):
    what = "B, H, W, C" if rank_ == 2 else "B, D, H, W, C"
    return [f"shape ({what} -> out)", "mode"] + names


def cells(row, names):
    return [row["shape"], row["mode"]] + [row.get(name, "-") for name in names]


if __name__ == "__main__":
    main()
