"""MNIST addition with two spatial transformers: Jaderberg et al. 2015, appendix A.1.

Each input holds two MNIST digits, one per channel of a 42x42 image, each rotated,
scaled and placed independently (RTS: up to 45 degrees, scale 0.7-1.2, anywhere);
the label is their sum, one of 19 classes. Trains an FCN, a CNN and a 2xST-FCN (two
spatial transformers in parallel, each reading both channels, their outputs
concatenated for a fully connected classifier), prints their test errors beside the
paper's Table 4 and saves pictures of what each transformer attends to.

    python examples/mnist_addition.py                       # 3 models, a few minutes on 2 CPU cores
    python examples/mnist_addition.py --seed 1 --models cnn,2st
    python examples/mnist_addition.py --holdout 800         # choose settings without the test set
    python examples/mnist_addition.py --smoke               # a few steps: does it all run?

The digits are `keras_stn.datasets.load_digits`' (offline: 4,000 train / 1,000 test).
Every epoch draws new pairs and new distortions of the training digits; the test set
is a fixed set of pairs of test digits. `--holdout N` trains on all but the last N
training digits and reports the error on pairs of those N instead of the test set.

The networks (docs/multiple-transformers.md says what the paper says and what is
chosen here):

- FCN: dense 256 - dense 256 - softmax 19 (ReLU).
- CNN: conv 9x9 32 - max-pool 2 - conv 9x9 64 - max-pool 2 - dense 256 - softmax 19.
- ST-FCN: one affine `keras_stn.SpatialTransformer` (28x28 output) before the FCN.
- 2xST-FCN: two affine transformers from one localisation network (the package's
  default) and one regression head, each sampling both channels at 28x28; their
  2 + 2 output channels go to the FCN.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import keras

import keras_stn
from keras_stn import datasets
from keras_stn import visualize

# Jaderberg et al. 2015, Table 4 (left): test error (%) on MNIST addition.
PAPER = {"FCN": 47.7, "CNN": 14.7, "ST-FCN": 18.5, "2xST-FCN": 5.8}
MODELS = {"fcn": "FCN", "cnn": "CNN", "st": "ST-FCN", "2st": "2xST-FCN"}
CANVAS = datasets.IMAGE_SIZES["RTS"]  # 42
CLASSES = 19  # sums 0 .. 18
TEST_SEED = 20150605


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--models",
        default="fcn,cnn,2st",
        help="comma-separated, from: " + ", ".join(f"{k} ({v})" for k, v in MODELS.items()),
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam's peak learning rate; it decays to 0 along a cosine",
    )
    parser.add_argument(
        "--transform",
        default="affine",
        choices=sorted(keras_stn.transforms.FAMILIES),
        help="the transformers' family",
    )
    parser.add_argument(
        "--initial",
        default="identity",
        choices=("identity", "tiles"),
        help="where the 2xST model's transformers start: both on the identity, or each "
        "on its own half of the image (keras_stn.initializers.TransformTiles)",
    )
    parser.add_argument(
        "--st-size", type=int, default=28, help="each transformer's output is this size, square"
    )
    parser.add_argument(
        "--pairs", type=int, default=None, help="training pairs per epoch (default: one per digit)"
    )
    parser.add_argument(
        "--test-pairs", type=int, default=2000, help="pairs of test (or held-out) digits"
    )
    parser.add_argument(
        "--train-digits", type=int, default=None, help="use only this many training digits"
    )
    parser.add_argument(
        "--holdout",
        type=int,
        default=0,
        help="hold out the last N training digits and report the error on pairs of "
        "them instead of the test set",
    )
    parser.add_argument("--out-dir", default=os.path.join("runs", "mnist_addition"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--verbose",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="Keras fit verbosity: 1 progress bars, 2 one line per epoch",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few steps on a few digits: checks that everything runs",
    )
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        parser.error(
            f"--models must be a comma-separated list from {list(MODELS)}; got {args.models!r}"
        )
    args.models = models
    if args.smoke:
        args.epochs = min(args.epochs, 1)
        args.batch_size = min(args.batch_size, 16)
        args.train_digits = args.train_digits or 64
        args.test_pairs = min(args.test_pairs, 32)
        args.holdout = min(args.holdout, 16)
    for name in ("epochs", "batch_size", "st_size", "pairs", "test_pairs", "train_digits"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive; got {value}")
    if args.holdout < 0:
        parser.error(f"--holdout must be 0 or more; got {args.holdout}")
    return args


# ----------------------------------------------------------------------- the data


def make_pairs(images, labels, count, rng):
    """`count` two-digit inputs and their sums, from digits drawn with `rng`.

    Each channel holds one digit with its own RTS distortion (as
    `keras_stn.datasets`' RTS: rotation up to 45 degrees, scale 0.7-1.2, anywhere
    in the 42x42 image), rendered with `keras_stn.datasets.place`.

    Args:
        images: uint8 `(N, 28, 28)` digits.
        labels: int `(N,)`.
        count: the number of pairs.
        rng: a `numpy.random.Generator`.

    Returns:
        `(pairs, sums, which)`: float32 `(count, 42, 42, 2)` in [0, 1], int64
        `(count,)` and int `(count, 2)`, the digits' indices per channel.
    """
    which = rng.integers(0, len(labels), size=(count, 2))
    channels = []
    for channel in range(2):
        scale = rng.uniform(*datasets.SCALE_RTS, size=count)
        half = datasets.DIGIT_SIZE / 2 * scale
        low, high = half - 0.5, CANVAS - 0.5 - half
        position = low[:, None] + (high - low)[:, None] * rng.uniform(size=(count, 2))
        angle = rng.uniform(-datasets.ROTATION_RTS, datasets.ROTATION_RTS, size=count)
        digits = images[which[:, channel]][..., None].astype("float32") / 255.0
        placed = datasets.place(digits, angle, scale, position, CANVAS)
        channels.append(np.clip(np.asarray(placed)[..., 0], 0.0, 1.0))
    sums = labels[which[:, 0]] + labels[which[:, 1]]
    return np.stack(channels, axis=-1), sums.astype("int64"), which


class FreshPairs(keras.utils.PyDataset):
    """Batches of `make_pairs`, with new pairs and distortions every epoch."""

    def __init__(self, images, labels, count, batch_size, seed):
        super().__init__()
        self.images, self.labels, self.count, self.batch_size = images, labels, count, batch_size
        self.rng = np.random.default_rng(seed)
        self.on_epoch_end()

    def __len__(self):
        return -(-self.count // self.batch_size)

    def __getitem__(self, index):
        batch = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.pairs[batch], self.sums[batch]

    def on_epoch_end(self):
        self.pairs, self.sums, _ = make_pairs(self.images, self.labels, self.count, self.rng)


# ----------------------------------------------------------------------- models


def fcn(x, name="fcn"):
    """Two hidden layers of 256 ReLU units, then a softmax over the 19 sums."""
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = keras.layers.Dense(256, activation="relu", name=f"{name}_dense1")(x)
    x = keras.layers.Dense(256, activation="relu", name=f"{name}_dense2")(x)
    return keras.layers.Dense(CLASSES, activation="softmax", name=f"{name}_softmax")(x)


def cnn(x, name="cnn"):
    """Two 9x9 convolutions, each followed by 2x2 max-pooling, then dense 256 and the
    softmax."""
    x = keras.layers.Conv2D(32, 9, activation="relu", name=f"{name}_conv1")(x)
    x = keras.layers.MaxPooling2D(2, name=f"{name}_pool1")(x)
    x = keras.layers.Conv2D(64, 9, activation="relu", name=f"{name}_conv2")(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name=f"{name}_pool2")(x)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    x = keras.layers.Dense(256, activation="relu", name=f"{name}_dense")(x)
    return keras.layers.Dense(CLASSES, activation="softmax", name=f"{name}_softmax")(x)


def parallel_transformers(x, count, transform, output_size, initial):
    """`count` transformers from one localisation network and one regression head.

    Returns `(batch, out_h, out_w, count * channels)`: block k is transformer k's
    output. The head's `count * num_params` outputs start at the identity
    (`initial="identity"`) or on the image's tiles (`"tiles"`).

    Built from the package's parts until `keras_stn.SpatialTransformer` takes
    `num_transformers`; `transformer_thetas` below reads theta from it.
    """
    family = keras_stn.transforms.get(transform)
    start = (
        keras_stn.initializers.TransformTiles(family, count)
        if initial == "tiles"
        else keras_stn.initializers.TransformIdentity(family, count)
    )
    localisation = keras_stn.layers.default_localisation(tuple(x.shape))
    theta = keras.layers.Dense(
        count * family.num_params,
        kernel_initializer="zeros",
        bias_initializer=start,
        name="theta",
    )(localisation(x))
    outputs = []
    for k, theta_k in enumerate(keras.ops.split(theta, count, axis=1)):
        grid = keras_stn.GridGenerator(family, output_size, name=f"grid{k}")(theta_k)
        outputs.append(keras_stn.Sampler(name=f"sampler{k}")([x, grid]))
    return keras.layers.Concatenate(name="st")(outputs)


def transformer_thetas(model, pairs):
    """The 2xST model's theta on `pairs`: NumPy `(batch, count, num_params)`."""
    theta = keras.Model(model.input, model.get_layer("theta").output)
    values = keras.ops.convert_to_numpy(theta(pairs))
    return values.reshape(len(pairs), 2, -1)


def build_model(key, args):
    inputs = keras.Input((CANVAS, CANVAS, 2), name="pair")
    size = (args.st_size, args.st_size)
    if key == "fcn":
        outputs = fcn(inputs)
    elif key == "cnn":
        outputs = cnn(inputs)
    elif key == "st":
        x = keras_stn.SpatialTransformer(args.transform, output_size=size, name="st")(inputs)
        outputs = fcn(x)
    else:
        outputs = fcn(parallel_transformers(inputs, 2, args.transform, size, args.initial))
    names = {"fcn": "fcn", "cnn": "cnn", "st": "st_fcn", "2st": "two_st_fcn"}
    return keras.Model(inputs, outputs, name=names[key])


# ----------------------------------------------------------------------- the run


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    os.makedirs(args.out_dir, exist_ok=True)
    digits = datasets.load_digits("train")
    images, labels = digits.images, digits.labels
    if args.holdout:
        held_images, held_labels = images[-args.holdout :], labels[-args.holdout :]
        images, labels = images[: -args.holdout], labels[: -args.holdout]
    if args.train_digits:
        images, labels = images[: args.train_digits], labels[: args.train_digits]
    if args.holdout:
        evaluated, split = (held_images, held_labels), f"{len(held_labels):,} held-out training digits"
    else:
        test = datasets.load_digits("test")
        evaluated, split = (test.images, test.labels), f"{len(test.labels):,} test digits"
    pairs_per_epoch = args.pairs or len(labels)
    test_pairs, test_sums, _ = make_pairs(*evaluated, args.test_pairs, np.random.default_rng(TEST_SEED))
    print(
        f"MNIST addition: {len(labels):,} training digits ({digits.source}), "
        f"{pairs_per_epoch:,} new pairs per epoch; evaluated on {len(test_sums):,} pairs "
        f"of {split}",
        flush=True,
    )
    steps = -(-pairs_per_epoch // args.batch_size)

    errors, seconds, parameters, trained = {}, {}, {}, {}
    for key in args.models:
        label = MODELS[key]
        print(f"\n=== {label}: {args.epochs} epochs of {pairs_per_epoch:,} pairs ===", flush=True)
        keras.utils.set_random_seed(args.seed)
        # The pairs of every epoch depend only on the seed: each model sees the same data.
        train = FreshPairs(images, labels, pairs_per_epoch, args.batch_size, args.seed)
        model = build_model(key, args)
        schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, args.epochs * steps)
        model.compile(
            keras.optimizers.Adam(schedule),
            keras.losses.SparseCategoricalCrossentropy(),
            metrics=["accuracy"],
        )
        tic = time.time()
        model.fit(train, epochs=args.epochs, verbose=args.verbose)
        seconds[key] = time.time() - tic
        _, accuracy = model.evaluate(test_pairs, test_sums, batch_size=256, verbose=0)
        errors[key] = 100.0 * (1.0 - accuracy)
        parameters[key] = model.count_params()
        trained[key] = model
        print(f"{label}: error {errors[key]:.1f}% ({seconds[key]:.0f} s)", flush=True)

    stem = "results_holdout" if args.holdout else "results"
    table = results_table(args, errors, seconds, parameters, split, len(test_sums))
    print("\n" + table)
    with open(os.path.join(args.out_dir, f"{stem}.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out_dir, f"{stem}.json"), "w") as f:
        json.dump(
            {
                "errors": errors,
                "seconds": seconds,
                "parameters": parameters,
                "evaluated_on": split,
                "evaluated_pairs": len(test_sums),
                "train_digits": len(labels),
                "pairs_per_epoch": pairs_per_epoch,
                "epochs": args.epochs,
                "seed": args.seed,
                "source": digits.source,
                "argv": sys.argv[1:] if argv is None else argv,
            },
            f,
            indent=1,
        )
    written = [f"{stem}.md", f"{stem}.json"]
    if "2st" in trained:
        shown = _first_of_each_sum(test_sums, 8)
        path = os.path.join(args.out_dir, "addition_2st.png")
        plot_attention(trained["2st"], test_pairs[shown], test_sums[shown], path)
        written.append("addition_2st.png")
    print(f"\nWrote {', '.join(written)} to {args.out_dir}")
    print(f"Total time: {time.time() - started:.0f} s")
    return errors


def _first_of_each_sum(sums, count):
    """Indices of `count` pairs with different sums where there are enough."""
    picked, seen = [], set()
    for index, value in enumerate(sums):
        if value not in seen:
            picked.append(index)
            seen.add(value)
    for index in range(len(sums)):
        if len(picked) >= count:
            break
        if index not in picked:
            picked.append(index)
    return np.array(picked[:count])


def plot_attention(model, pairs, sums, path):
    """Each pair's two channels with the regions the two transformers read (ST1
    orange, ST2 blue), and the transformers' four output channels."""
    thetas = transformer_thetas(model, pairs)
    family = keras_stn.transforms.get(model.get_layer("grid0").transform)
    outputs = keras.ops.convert_to_numpy(
        keras.Model(model.input, model.get_layer("st").output)(pairs)
    )
    size = outputs.shape[1:3]
    colours = ("tab:orange", "tab:blue")
    titles = ("channel 1", "channel 2", "ST1: ch 1", "ST1: ch 2", "ST2: ch 1", "ST2: ch 2")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6 * 1.1, len(pairs) * 1.1 + 0.3))
    for row, pair in enumerate(pairs):
        outlines = []
        for k in range(2):
            grid = keras.ops.convert_to_numpy(family.grid(thetas[row, k][None], size))[0]
            edge = np.concatenate([grid[0, :], grid[:, -1], grid[-1, ::-1], grid[::-1, 0]])
            outlines.append(visualize.grid_to_pixels(edge, (CANVAS, CANVAS)))
        panels = [pair[..., 0], pair[..., 1]] + [outputs[row, ..., c] for c in range(4)]
        for column, panel in enumerate(panels):
            axes = figure.add_subplot(len(pairs), 6, row * 6 + column + 1)
            axes.imshow(panel, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if column < 2:
                for outline, colour in zip(outlines, colours):
                    axes.plot(outline[:, 0], outline[:, 1], color=colour, linewidth=0.8)
                axes.set_xlim(-0.5, CANVAS - 0.5)
                axes.set_ylim(CANVAS - 0.5, -0.5)
            if column == 0:
                axes.set_ylabel(f"sum {sums[row]}", fontsize=7)
            if row == 0:
                axes.set_title(titles[column], fontsize=7)
    figure.savefig(path, dpi=80)
    return figure


def results_table(args, errors, seconds, parameters, split, count):
    lines = [
        f"MNIST addition: error (%) on {count:,} pairs of {split}, "
        f"{args.epochs} epochs, seed {args.seed}",
        "",
        "| model | this run | parameters | train time (s) | paper |",
        "|---|---:|---:|---:|---:|",
    ]
    keys = {label: key for key, label in MODELS.items()}
    for label, paper in PAPER.items():
        key = keys[label]
        if key in errors:
            lines.append(
                f"| {label} | {errors[key]:.1f} | {parameters[key]:,} | {seconds[key]:.0f} | "
                f"{paper} |"
            )
        else:
            lines.append(f"| {label} | - | - | - | {paper} |")
    lines.append("")
    lines.append("Paper: Jaderberg et al. 2015, Table 4 (all 60,000 MNIST training digits).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
