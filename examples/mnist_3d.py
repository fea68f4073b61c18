"""3-D MNIST with a volumetric spatial transformer: Jaderberg et al. 2015, appendix A.3.

Each digit is extruded into a slab, turned, scaled and moved at random in 3-D, and
rendered into a volume. Two models classify the volumes with the same 2-D CNN:

- CNN: the volume projected along its depth (a fixed view), then the CNN.
- 3-D ST-CNN: a `keras_stn.SpatialTransformer("affine3d")` turns the volume first,
  then the same projection (`keras_stn.DepthProjection`) and the same CNN: the
  transformer chooses the view.

Prints both test errors, saves pictures of test volumes with what each CNN sees, and
writes the table and the numbers.

    python examples/mnist_3d.py                      # both models, a few minutes on 2 CPU cores
    python examples/mnist_3d.py --seed 1 --out-dir runs/mnist_3d_1
    python examples/mnist_3d.py --validation-digits 500   # recipe choices: never the test set
    python examples/mnist_3d.py --smoke              # a few steps: does it all run?

The digits are the 5,000 MNIST digits bundled with keras_stn (4,000 train / 1,000
test; TFDS's full MNIST when it is prepared on this machine, see `--source`); nothing
is downloaded. The volumes are made with the package's own ops: `keras_stn.ops.
affine_grid` (3-D) and `keras_stn.ops.sample` (trilinear). docs/volumes.md has the
measured errors, what differs from the paper and the pictures.

The networks:

- CNN (the paper's MNIST CNN, as in examples/distorted_mnist.py): conv 9x9 32 -
  max-pool 2 - conv 9x9 64 - max-pool 2 - softmax, on the projection: the mean along
  the depth (the paper sums; the mean is the sum over the depth's length), rescaled so
  that an upright slab shows the digit's own intensities.
- 3-D ST-CNN: the transformer (affine3d, 12 parameters, identity at the start) samples
  an 8x28x28 volume (`--out-size`), localised by two dense layers (64, 32, ReLU) on a
  2x average-pooled copy of the volume; then the same projection and the same CNN.
"""

import argparse
import contextlib
import json
import os
import sys
import time


@contextlib.contextmanager
def quiet_stderr(quiet):
    """Sends file descriptor 2 to /dev/null: what C++ libraries print while they load."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


QUIET = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
with quiet_stderr(QUIET):
    import numpy as np
    import keras
    import tensorflow as tf

import keras_stn
from keras_stn import datasets

MODELS = {"cnn": "CNN", "st": "3-D ST-CNN"}
DIGIT_SIZE = 28
# The paper's volumes are 60^3 with 28-px digits: a digit spans 28/60 of the side.
DIGIT_FRACTION = 28 / 60
# The seed of the test volumes' poses, whatever --seed is: every run sees one test set.
TEST_SEED = 20151207


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and every flag's default."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--models", default="cnn,st", help="comma-separated, from: " + ", ".join(MODELS)
    )
    parser.add_argument("--size", type=int, default=32,
                        help="the volume's side in voxels (the paper: 60)")
    parser.add_argument("--thickness", type=float, default=14.0,
                        help="the slab's thickness, in the digit's pixels (its side is 28)")
    parser.add_argument("--max-tilt", type=float, default=45.0,
                        help="largest turn about the x and y axes, degrees: tilts the slab")
    parser.add_argument("--max-turn", type=float, default=45.0,
                        help="largest turn about the z axis (in the slab's plane), degrees")
    parser.add_argument("--scale", type=float, nargs=2, default=(0.8, 1.2),
                        help="the digit's scale, uniform between these two")
    parser.add_argument("--max-shift", type=float, default=0.2,
                        help="largest move along each axis, in half-sides of the volume")
    parser.add_argument("--out-size", type=int, nargs=3, default=(8, 28, 28),
                        help="the transformer's output (depth, height, width)")
    parser.add_argument("--antialias", action="store_true",
                        help="the transformer averages where it shrinks the volume")
    parser.add_argument("--lr-multiplier", type=float, default=1.0,
                        help="the transformer's learning_rate_multiplier")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs per model")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--learning-rate", type=float, default=1e-3,
                        help="Adam's peak learning rate; it decays to 0 along a cosine")
    parser.add_argument("--source", default="auto", choices=datasets.SOURCES,
                        help="where the digits come from; auto: TFDS if prepared, else the "
                        "bundled 5,000")
    parser.add_argument("--train-digits", type=int, default=None,
                        help="use only this many training digits")
    parser.add_argument("--test-digits", type=int, default=None,
                        help="use only this many test digits")
    parser.add_argument("--validation-digits", type=int, default=0,
                        help="hold out the last N training digits and report the error on "
                        "them instead of on the test set (for choosing a recipe)")
    parser.add_argument("--out-dir", default=os.path.join("runs", "mnist_3d"),
                        help="where results and pictures go")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the weights and the training volumes' poses")
    parser.add_argument("--jit", action="store_true",
                        help="jit_compile=True for training (XLA; slower convolutions on a CPU)")
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                        help="Keras fit verbosity: 1 progress bars, 2 one line per epoch")
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps on a few small volumes: checks that everything runs")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        parser.error(f"--models must be a comma-separated list from {list(MODELS)}; "
                     f"got {args.models!r}")
    args.models = models
    if args.smoke:
        args.epochs = min(args.epochs, 1)
        args.batch_size = min(args.batch_size, 16)
        args.size = min(args.size, 24)
        args.train_digits = args.train_digits or 32
        args.test_digits = args.test_digits or 32
    for name in ("epochs", "batch_size", "size", "train_digits", "test_digits"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive; got {value}")
    if min(args.out_size) < 1 or min(args.out_size[1:]) < 24:
        parser.error(f"--out-size must be positive, height and width at least 24 (the CNN's "
                     f"9x9 convolutions); got {args.out_size}")
    if args.size < 24:
        parser.error(f"--size must be at least 24 (the CNN's 9x9 convolutions); got {args.size}")
    if args.validation_digits < 0:
        parser.error(f"--validation-digits must be 0 or more; got {args.validation_digits}")
    if not 0 < args.thickness <= DIGIT_SIZE * 4:
        parser.error(f"--thickness must be in (0, {DIGIT_SIZE * 4}]; got {args.thickness}")
    if not 0 < args.scale[0] <= args.scale[1]:
        parser.error(f"--scale must be two positive numbers, low first; got {args.scale}")
    return args


# ----------------------------------------------------------------------- the volumes


def rotation(tilt_x, tilt_y, turn):
    """`(N, 3, 3)` rotations `R = Rx @ Ry @ Rz`: about z by `turn`, then about y by
    `tilt_y`, then about x by `tilt_x` (radians; right-handed, in the volume's frame:
    x right, y down, z along the depth, so a positive `turn` looks clockwise on the
    screen). Turns about x and y tilt the slab out of the projection's plane.

    Example:
    >>> np.round(rotation(np.zeros(1), np.zeros(1), np.array([np.pi / 2]))[0], 6).tolist()
    [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    def turn_about(axis, angle):
        c, s = np.cos(angle), np.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        matrix = np.tile(np.eye(3), (len(angle), 1, 1))
        matrix[:, i, i], matrix[:, i, j], matrix[:, j, i], matrix[:, j, j] = c, -s, s, c
        return matrix

    return turn_about(0, tilt_x) @ turn_about(1, tilt_y) @ turn_about(2, turn)


def draw_poses(rng, count, max_tilt, max_turn, scale, max_shift):
    """Random poses `(count, 3, 4)`: `[s R | t]`, which takes a point of the upright,
    centred slab to the volume (both in the volume's normalised frame [-1, 1]^3)."""
    tilts = np.radians(rng.uniform(-max_tilt, max_tilt, (2, count)))
    turns = np.radians(rng.uniform(-max_turn, max_turn, count))
    scales = rng.uniform(scale[0], scale[1], count)
    shifts = rng.uniform(-max_shift, max_shift, (count, 3))
    linear = scales[:, None, None] * rotation(tilts[0], tilts[1], turns)
    return np.concatenate([linear, shifts[..., None]], axis=-1)


def slab_half_sizes(thickness):
    """The upright slab's half-sizes `(x, y, z)` in the volume's normalised frame."""
    half = DIGIT_FRACTION
    return np.array([half, half, half * thickness / DIGIT_SIZE])


def sampling_theta(poses, half_sizes):
    """`(N, 12)` theta for `keras_stn.ops.affine_grid`: where each voxel of the
    volume reads the slab, in the slab's own normalised frame.

    Backwards, as every grid: a voxel at `p` reads the slab at
    `diag(1 / half_sizes) @ (s R)^-1 @ (p - t)`.

    Example:
    >>> upright = np.eye(3, 4)[None]              # s = 1, no turn, no shift
    >>> sampling_theta(upright, np.array([0.5, 0.5, 0.25]))[0].reshape(3, 4)[:, :3].diagonal()
    array([2., 2., 4.])
    """
    linear, shift = poses[:, :, :3], poses[:, :, 3:]
    inverse = np.linalg.inv(linear) / half_sizes[None, :, None]
    return np.concatenate([inverse, -inverse @ shift], axis=-1).reshape(-1, 12)


def extrude(digits, thickness):
    """uint8 digits `(N, 28, 28)` -> float32 slabs `(N, depth, 28, 28, 1)` in [0, 1]:
    each digit repeated through `round(thickness)` (at least 1) layers."""
    layers = max(1, int(round(thickness)))
    slabs = np.repeat(digits[:, None, :, :, None], layers, axis=1)
    return slabs.astype("float32") / 255.0


def render(digits, poses, size, thickness, batch_size=64):
    """Volumes `(N, size, size, size, 1)` float32 of `digits` extruded and posed.

    Trilinear reads (`keras_stn.ops.sample`, zeros outside the slab) along 3-D affine
    grids (`keras_stn.ops.affine_grid`), compiled with XLA, `batch_size` at a time.
    """
    theta = sampling_theta(poses, slab_half_sizes(thickness)).astype("float32")
    read = _renderer(size)
    volumes = np.empty((len(digits), size, size, size, 1), "float32")
    for start in range(0, len(digits), batch_size):
        stop = start + batch_size
        slabs = extrude(digits[start:stop], thickness)
        volumes[start:stop] = read(slabs, theta[start:stop]).numpy()
    return volumes


_RENDERERS = {}


def _renderer(size):
    if size not in _RENDERERS:
        def read(slabs, theta):
            grid = keras_stn.ops.affine_grid(theta, (size, size, size))
            return keras_stn.ops.sample(slabs, grid)

        _RENDERERS[size] = tf.function(read, jit_compile=True)
    return _RENDERERS[size]


def ray_tilts(poses, theta=None):
    """Degrees between each slab's normal and the rays the projection sums along.

    0: the rays run straight through the slab's thickness and the projection shows
    the whole digit, crisp; the larger, the more the slab leans and the digit smears.
    `theta` `(N, 12)`: a transformer's, whose output frame the rays then run in;
    `None`: the fixed view, along the volume's depth.

    Example:
    >>> poses = np.eye(3, 4)[None].repeat(2, axis=0)
    >>> poses[1, :, :3] = rotation(np.radians([30.0]), np.zeros(1), np.zeros(1))[0]
    >>> np.round(ray_tilts(poses), 6).tolist()
    [0.0, 30.0]
    """
    # The slab is c_z = const; c = (s R)^-1 (p - t), so its normal in the volume's
    # frame is (s R)^-T e_z, and in a transformer's output frame (p = A q + b)
    # A^T (s R)^-T e_z.
    normal = np.swapaxes(np.linalg.inv(poses[:, :, :3]), 1, 2)[:, :, 2]
    if theta is not None:
        linear = np.asarray(theta, np.float64).reshape(-1, 3, 4)[:, :, :3]
        normal = np.einsum("nji,nj->ni", linear, normal)
    cosine = np.abs(normal[:, 2]) / np.linalg.norm(normal, axis=1)
    return np.degrees(np.arccos(np.clip(cosine, 0.0, 1.0)))


def projection_scale(thickness):
    """What the mean along the depth is multiplied by so that an upright, unscaled
    slab projects to its digit's intensities: 1 over the slab's share of the depth."""
    return 1.0 / slab_half_sizes(thickness)[2]


# ----------------------------------------------------------------------- models


def classifier(x, name):
    """The paper's CNN: two 9x9 convolutions with ReLU, each followed by 2x2 max-pooling,
    then a softmax layer."""
    x = keras.layers.Conv2D(32, 9, activation="relu", name=f"{name}_conv1")(x)
    x = keras.layers.MaxPooling2D(2, name=f"{name}_pool1")(x)
    x = keras.layers.Conv2D(64, min(9, x.shape[1]), activation="relu", name=f"{name}_conv2")(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name=f"{name}_pool2")(x)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    return keras.layers.Dense(10, activation="softmax", name=f"{name}_softmax")(x)


def localisation():
    """Two dense layers on the 2x average-pooled volume (as the paper's FCN
    localisation): TensorFlow's 3-D convolutions are slow on a CPU, their gradients
    most of all."""
    return keras.Sequential(
        [
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense1"),
            keras.layers.Dense(32, activation="relu", name="dense2"),
        ],
        name="localisation",
    )


def build_model(key, size, thickness, out_size=(8, 28, 28), antialias=False,
                lr_multiplier=1.0):
    inputs = keras.Input((size, size, size, 1), name="volume")
    x = inputs
    if key == "st":
        small = keras.layers.AveragePooling3D(2, name="pooled")(inputs)
        x = keras_stn.SpatialTransformer(
            "affine3d",
            output_size=tuple(out_size),
            localisation=localisation(),
            antialias=antialias,
            learning_rate_multiplier=lr_multiplier,
            name="st",
        )([inputs, small])
    x = keras_stn.DepthProjection("mean", name="projection")(x)
    x = keras.layers.Rescaling(projection_scale(thickness), name="projection_scale")(x)
    outputs = classifier(x, "classifier")
    name = "st_cnn_3d" if key == "st" else "cnn"
    return keras.Model(inputs, outputs, name=name)


def transformer_theta(model, volumes, batch_size=250):
    """The 3-D ST-CNN's theta `(N, 12)` for `volumes`."""
    layer = model.get_layer("st")
    pooled = keras.Model(model.inputs, model.get_layer("pooled").output)
    thetas = []
    for start in range(0, len(volumes), batch_size):
        batch = volumes[start : start + batch_size]
        small = pooled.predict(batch, verbose=0)
        thetas.append(keras.ops.convert_to_numpy(layer.localise([batch, small])))
    return np.concatenate(thetas)


def views(model, volumes):
    """What the model's CNN sees: the projection layer's output."""
    layer = model.get_layer("projection_scale")
    return keras.Model(model.inputs, layer.output).predict(volumes, verbose=0)


# ----------------------------------------------------------------------- the run


def split_digits(args):
    train = datasets.load_digits("train", source=args.source)
    images, labels = train.images, train.labels
    if args.validation_digits:
        if args.validation_digits >= len(labels):
            raise SystemExit(
                f"--validation-digits {args.validation_digits} leaves no training digits "
                f"of {len(labels)}"
            )
        cut = len(labels) - args.validation_digits
        test_images, test_labels = images[cut:], labels[cut:]
        images, labels = images[:cut], labels[:cut]
        evaluated = f"{len(test_labels):,} held-out training digits (validation)"
    else:
        test = datasets.load_digits("test", source=args.source)
        test_images, test_labels = test.images, test.labels
        evaluated = f"{len(test_labels[: args.test_digits]):,} test digits"
    images, labels = images[: args.train_digits], labels[: args.train_digits]
    test_images, test_labels = test_images[: args.test_digits], test_labels[: args.test_digits]
    return (images, labels), (test_images, test_labels), train.source, evaluated


def pose_options(args):
    return dict(max_tilt=args.max_tilt, max_turn=args.max_turn, scale=args.scale,
                max_shift=args.max_shift)


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    os.makedirs(args.out_dir, exist_ok=True)
    (train_digits, train_labels), (test_digits, test_labels), source, evaluated = split_digits(args)
    print(f"Digits: {source}; {len(train_labels):,} training digits, evaluated on {evaluated}; "
          f"volumes {args.size}^3", flush=True)

    tic = time.time()
    test_poses = draw_poses(np.random.default_rng(TEST_SEED), len(test_labels), **pose_options(args))
    test_volumes = render(test_digits, test_poses, args.size, args.thickness)
    rng = np.random.default_rng(args.seed)
    train_poses = draw_poses(rng, len(train_labels), **pose_options(args))
    train_volumes = render(train_digits, train_poses, args.size, args.thickness)
    render_seconds = time.time() - tic
    print(f"Rendered {len(train_labels) + len(test_labels):,} volumes in {render_seconds:.0f} s",
          flush=True)

    steps = -(-len(train_labels) // args.batch_size)
    errors, seconds, trained, tilts = {}, {}, {}, {}
    for key in args.models:
        print(f"\n=== {MODELS[key]}: {args.epochs} epochs of {len(train_labels):,} volumes ===",
              flush=True)
        keras.utils.set_random_seed(args.seed)
        model = build_model(key, args.size, args.thickness, args.out_size, args.antialias,
                            args.lr_multiplier)
        schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, args.epochs * steps)
        model.compile(
            keras.optimizers.Adam(schedule),
            keras.losses.SparseCategoricalCrossentropy(),
            metrics=["accuracy"],
            jit_compile=True if args.jit else "auto",
        )
        tic = time.time()
        model.fit(train_volumes, train_labels, batch_size=args.batch_size, epochs=args.epochs,
                  verbose=args.verbose)
        seconds[key] = time.time() - tic
        _, accuracy = model.evaluate(test_volumes, test_labels, batch_size=256, verbose=0)
        errors[key] = 100.0 * (1.0 - accuracy)
        trained[key] = model
        theta = transformer_theta(model, test_volumes) if key == "st" else None
        tilts[key] = float(np.median(ray_tilts(test_poses, theta)))
        print(f"{MODELS[key]}: error {errors[key]:.1f}% on the {evaluated} "
              f"({seconds[key]:.0f} s); the slab leans from the rays its CNN sees by "
              f"{tilts[key]:.0f} degrees (median)", flush=True)

    table = results_table(args, errors, seconds, tilts, source, len(train_labels), evaluated)
    print("\n" + table)
    with open(os.path.join(args.out_dir, "results_mnist_3d.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out_dir, "results_mnist_3d.json"), "w") as f:
        json.dump(
            {
                "errors": errors,
                "median_tilt_degrees": tilts,
                "seconds": seconds,
                "render_seconds": render_seconds,
                "evaluated_on": "validation" if args.validation_digits else "test",
                "source": source,
                "train_digits": len(train_labels),
                "evaluated_digits": len(test_labels),
                "args": {k: v for k, v in vars(args).items()},
                "argv": sys.argv[1:] if argv is None else argv,
            },
            f,
            indent=1,
        )
    pictures = save_pictures(trained, test_volumes[:8], args.out_dir)
    print(f"\nIn {args.out_dir}: the table (results_mnist_3d.md), the numbers "
          f"(results_mnist_3d.json)" + (f", the pictures ({', '.join(pictures)})" if pictures
                                        else ""))
    print(f"Total time: {time.time() - started:.0f} s")
    return errors


def results_table(args, errors, seconds, tilts, source, train_count, evaluated):
    lines = [
        f"3-D MNIST ({args.size}^3 volumes, slab {args.thickness:g} px thick, tilt up to "
        f"{args.max_tilt:g} deg, turn up to {args.max_turn:g} deg, scale {args.scale[0]:g}-"
        f"{args.scale[1]:g}, shift up to {args.max_shift:g}): error (%) on {evaluated} "
        f"(source: {source}), trained on {train_count:,} volumes x {args.epochs} epochs, "
        f"seed {args.seed}",
        "",
        "| model | error (%) | slab's tilt from the rays, median (deg) | train time (s) |",
        "|---|---:|---:|---:|",
    ]
    for key in args.models:
        lines.append(f"| {MODELS[key]} | {errors[key]:.1f} | {tilts[key]:.0f} | "
                     f"{seconds[key]:.0f} |")
    return "\n".join(lines)


def save_pictures(trained, volumes, out_dir):
    """One column per volume: the volume in 3-D, then what each model's CNN sees."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no pictures (pip install matplotlib)")
        return []
    rows = [("the volume", None)]
    rows += [(f"{MODELS[key]} sees", views(model, volumes)) for key, model in trained.items()]
    figure = plt.figure(figsize=(1.6 * len(volumes), 1.7 * len(rows)))
    for row, (title, seen) in enumerate(rows):
        for column, volume in enumerate(volumes):
            index = row * len(volumes) + column + 1
            if seen is None:
                axes = figure.add_subplot(len(rows), len(volumes), index, projection="3d")
                draw_volume(axes, volume[..., 0])
            else:
                axes = figure.add_subplot(len(rows), len(volumes), index)
                axes.imshow(seen[column, :, :, 0], cmap="gray", vmin=0)
                axes.set_xticks([])
                axes.set_yticks([])
            if column == 0:
                axes.set_title(title, fontsize=9, loc="left")
    figure.tight_layout()
    path = os.path.join(out_dir, "mnist_3d_views.png")
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return [os.path.basename(path)]


def draw_volume(axes, volume, threshold=0.25):
    """The voxels brighter than `threshold` as points (darker: brighter), x right,
    y down, the depth (what the projection collapses) going back."""
    depth, height, width = np.nonzero(volume > threshold)
    values = volume[depth, height, width]
    axes.scatter(width, depth, -height, c=values, cmap="Greys", vmin=0, vmax=1, s=3,
                 alpha=0.5, linewidths=0)
    size = volume.shape[0]
    axes.set_xlim(0, size)
    axes.set_ylim(0, size)
    axes.set_zlim(-size, 0)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_zticks([])
    axes.set_xlabel("x", labelpad=-14, fontsize=7)
    axes.set_ylabel("depth", labelpad=-14, fontsize=7)
    axes.set_zlabel("y", labelpad=-14, fontsize=7)


if __name__ == "__main__":
    main()
