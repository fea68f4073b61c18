"""MNIST addition with two spatial transformers: Jaderberg et al. 2015, appendix A.1.

Each input holds two MNIST digits, one per channel of a 42x42 image, each rotated,
scaled and placed independently (RTS: up to 45 degrees, scale 0.7-1.2, anywhere);
the label is their sum, one of 19 classes. Trains the models named by `--models`,
prints their test errors beside the paper's Table 4 and saves pictures of what each
transformer attends to.

    python examples/mnist_addition.py                       # the CNN and the 2xST-CNN, digit sum, ~5.5 min
    python examples/mnist_addition.py --epochs 10           # twice as long, both models better
    python examples/mnist_addition.py --seed 1
    python examples/mnist_addition.py --models fcn,cnn,2st  # the paper's models
    python examples/mnist_addition.py --models fcn-sum,st-fcn-sum,2st-fcn-sum   # the FCN rows, digit sum
    python examples/mnist_addition.py --holdout 500         # choose settings without the test set
    python examples/mnist_addition.py --smoke               # a few steps: does it all run?

The digits are `keras_stn.datasets.load_digits`' (offline: 4,000 train / 1,000 test).
Every epoch draws new pairs and new distortions of the training digits; the test set
is a fixed set of pairs of test digits. `--holdout N` trains on all but the last N
training digits and reports the error on pairs of those N instead of the test set.

Two ways to read the sum:

- The paper's: the network ends in a softmax over the 19 sums. Within this budget
  (even 2,500 steps of 64 pairs, `--epochs 10`) none of these models learns the
  task: on 500 held-out digits, seed 0, the CNN had 77.8% error and the 2xST-CNN
  80.8% (always answering the commonest sum, 9, is 90% wrong).
- Digit sum (the default models): one digit classifier reads each digit, and
  `DigitSum` turns the two digits' distributions into their sum's. The labels are
  still only the sums. `cnn-sum` reads each channel as it is; `2st-cnn-sum` reads
  channel 1 as transformer 1 sees it and channel 2 as transformer 2 sees it.
  `fcn-sum` and `2st-fcn-sum` are the same with an FCN as the digit classifier;
  `st-fcn-sum` reads both channels through one transformer.

docs/multiple-transformers.md has the runs.

The networks (every hidden dense layer is batch-normalised):

- FCN: dense 256 - dense 256 - softmax 19 (ReLU).
- CNN: conv 5x5 16 - max-pool 2 - conv 5x5 32 - max-pool 2 - dense 128 - softmax 19.
- ST-FCN: one affine `keras_stn.SpatialTransformer` before the FCN.
- 2xST-FCN, 2xST-CNN: two affine transformers from one localisation network
  (max-pool 2 - conv 5x5 16 - max-pool 2 - conv 5x5 16 - dense 32) and one
  regression head, each sampling both channels (at 42x42, `--st-size`); their 2 + 2
  output channels go to the FCN or the CNN.
- CNN and 2xST-CNN, digit sum: the same two transformers (for the 2xST model), then
  one digit classifier for both digits, Table 1's CNN (conv 9x9 32 - max-pool 2 -
  conv 9x9 64 - max-pool 2 - softmax 10, as `examples/distorted_mnist.py`; or this
  example's CNN with a softmax over 10, `--digit-classifier cnn`), then `DigitSum`.
- FCN, ST-FCN and 2xST-FCN, digit sum: the same with the FCN (softmax over 10) as
  the digit classifier; the ST-FCN's one transformer, as in the ST-FCN above, moves
  both channels alike.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import distorted_mnist  # noqa: E402  (Table 1's CNN, from the example beside this file)

# Jaderberg et al. 2015, Table 4 (left): test error (%) on MNIST addition.
PAPER = {"FCN": 47.7, "CNN": 14.7, "ST-FCN": 18.5, "2xST-FCN": 5.8, "2xST-CNN": None,
         "FCN, digit sum": None, "ST-FCN, digit sum": None, "2xST-FCN, digit sum": None,
         "CNN, digit sum": None, "2xST-CNN, digit sum": None}
MODELS = {"fcn": "FCN", "cnn": "CNN", "st": "ST-FCN", "2st": "2xST-FCN", "2st-cnn": "2xST-CNN",
          "fcn-sum": "FCN, digit sum", "st-fcn-sum": "ST-FCN, digit sum",
          "2st-fcn-sum": "2xST-FCN, digit sum",
          "cnn-sum": "CNN, digit sum", "2st-cnn-sum": "2xST-CNN, digit sum"}
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
        default="cnn-sum,2st-cnn-sum",
        help="comma-separated, from: " + ", ".join(f"{k} ({v})" for k, v in MODELS.items()),
    )
    parser.add_argument("--epochs", type=int, default=5)
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
        "--st-size", type=int, default=CANVAS,
        help="each transformer's output is this size, square",
    )
    parser.add_argument(
        "--localiser", default="small", choices=("small", "default"),
        help="the transformers' localisation network: this example's small one, or "
        "keras_stn's default",
    )
    parser.add_argument(
        "--digit-classifier", default="table1", choices=("table1", "cnn"),
        help="the digit-sum models' digit classifier: Table 1's CNN (distorted_mnist.py's) "
        "or this example's CNN",
    )
    parser.add_argument(
        "--pairs", type=int, default=16000, help="new training pairs per epoch"
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
        args.pairs = min(args.pairs, 64)
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


def fcn(x, name="fcn", classes=CLASSES):
    """Two hidden layers of 256 ReLU units (batch-normalised), then a softmax over
    `classes`."""
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    for k in (1, 2):
        x = _dense(x, 256, f"{name}_dense{k}")
    return keras.layers.Dense(classes, activation="softmax", name=f"{name}_softmax")(x)


def cnn(x, name="cnn", classes=CLASSES):
    """Two 5x5 convolutions (16 and 32 filters), each followed by 2x2 max-pooling, then
    a hidden layer of 128 units (batch-normalised) and a softmax over `classes`."""
    x = keras.layers.Conv2D(16, 5, activation="relu", name=f"{name}_conv1")(x)
    x = keras.layers.MaxPooling2D(2, name=f"{name}_pool1")(x)
    x = keras.layers.Conv2D(32, 5, activation="relu", name=f"{name}_conv2")(x)
    x = keras.layers.MaxPooling2D(2, padding="same", name=f"{name}_pool2")(x)
    x = _dense(keras.layers.Flatten(name=f"{name}_flatten")(x), 128, f"{name}_dense")
    return keras.layers.Dense(classes, activation="softmax", name=f"{name}_softmax")(x)


def digit_classifier(size, kind="table1"):
    """A CNN with a softmax over the 10 digits, for one channel: `(batch, size, size, 1)`
    -> `(batch, 10)`. The digit-sum models apply one to both digits.

    `kind="table1"`: the paper's Table 1 CNN, `examples/distorted_mnist.py`'s
    `classifier` (two 9x9 convolutions of 32 and 64 filters, each followed by 2x2
    max-pooling, then the softmax). `"cnn"`: this example's `cnn`; `"fcn"` its `fcn`.
    """
    inputs = keras.Input((size, size, 1), name="digit")
    if kind == "fcn":
        outputs = fcn(inputs, "digit", classes=10)
    elif kind == "cnn":
        outputs = cnn(inputs, "digit", classes=10)
    else:
        outputs = distorted_mnist.classifier(inputs, "digit")
    return keras.Model(inputs, outputs, name="digit_classifier")


# SUM_OF_PAIR[10 i + j] is the one-hot sum i + j.
SUM_OF_PAIR = np.eye(CLASSES, dtype="float32")[np.add.outer(np.arange(10), np.arange(10)).ravel()]


@keras.saving.register_keras_serializable(package="mnist_addition")
class DigitSum(keras.layers.Layer):
    """The distribution of the sum of two independent digits:
    `P(s) = sum_i p1(i) p2(s - i)`.

    Inputs `[p1, p2]`, each `(batch, 10)`; output `(batch, 19)`.
    """

    def call(self, inputs):
        first, second = inputs
        joint = keras.ops.reshape(first[:, :, None] * second[:, None, :], (-1, 100))
        return keras.ops.matmul(joint, keras.ops.convert_to_tensor(SUM_OF_PAIR, joint.dtype))

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], CLASSES)


@keras.saving.register_keras_serializable(package="mnist_addition")
class Channel(keras.layers.Layer):
    """Channel `index` of a channels-last image: `(b, h, w, c)` -> `(b, h, w, 1)`."""

    def __init__(self, index, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, images):
        return images[..., self.index : self.index + 1]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)

    def get_config(self):
        return {**super().get_config(), "index": self.index}


def _dense(x, units, name):
    x = keras.layers.Dense(units, use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def localisation(kind="small"):
    """The transformers' localisation network: max-pool 2 - conv 5x5 16 - max-pool 2 -
    conv 5x5 16 - dense 32 (ReLU), a quarter of the cost of the package's default
    on 42x42 inputs; `kind="default"` gives `None`, keras_stn's own."""
    if kind == "default":
        return None
    return keras.Sequential(
        [
            keras.layers.MaxPooling2D(2, name="pool0"),
            keras.layers.Conv2D(16, 5, padding="same", activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(16, 5, padding="same", activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="dense"),
        ],
        name="localisation",
    )


def parallel_transformers(x, count, transform, output_size, initial, localiser="small"):
    """`count` transformers from one localisation network and one regression head
    (`keras_stn.SpatialTransformer(num_transformers=count)`), starting on the
    identity (`initial="identity"`) or each on its own tile of the image
    (`"tiles"`).

    Returns `(outputs, theta)`: `(batch, out_h, out_w, count * channels)` (block k
    is transformer k's output) and `(batch, count, num_params)`.
    """
    return keras_stn.SpatialTransformer(
        transform,
        output_size=output_size,
        localisation=localisation(localiser),
        num_transformers=count,
        initial_transform=initial,
        return_transform=True,
        name="st",
    )(x)


def digit_sum(first, second, kind):
    """One digit classifier of `kind` on each `(batch, size, size, 1)` digit, then
    `DigitSum`."""
    classify = digit_classifier(first.shape[1], kind)
    return DigitSum(name="digit_sum")([classify(first), classify(second)])


def transformer_thetas(model, pairs):
    """The 2xST model's theta on `pairs`: NumPy `(batch, count, num_params)`."""
    layer = model.get_layer("st")
    theta = keras.Model(model.input, layer.output[1])
    return keras.ops.convert_to_numpy(theta(pairs))


# The digit-sum models: how many transformers come first, and the digit classifier
# (None: `--digit-classifier`'s). With one transformer both digits are read through it.
SUM_MODELS = {"fcn-sum": (0, "fcn"), "st-fcn-sum": (1, "fcn"), "2st-fcn-sum": (2, "fcn"),
              "cnn-sum": (0, None), "2st-cnn-sum": (2, None)}
NAMES = {"fcn": "fcn", "cnn": "cnn", "st": "st_fcn", "2st": "two_st_fcn", "2st-cnn": "two_st_cnn",
         "fcn-sum": "fcn_sum", "st-fcn-sum": "st_fcn_sum", "2st-fcn-sum": "two_st_fcn_sum",
         "cnn-sum": "cnn_sum", "2st-cnn-sum": "two_st_cnn_sum"}


def one_transformer(x, args):
    """The ST-FCN's transformer: one, moving every channel of `x` alike."""
    return keras_stn.SpatialTransformer(
        args.transform, output_size=(args.st_size, args.st_size),
        localisation=localisation(args.localiser), name="st",
    )(x)


def build_model(key, args):
    inputs = keras.Input((CANVAS, CANVAS, 2), name="pair")
    size = (args.st_size, args.st_size)
    if key in SUM_MODELS:
        count, kind = SUM_MODELS[key]
        x, second = inputs, 1
        if count == 1:
            x = one_transformer(inputs, args)
        elif count == 2:
            x, _ = parallel_transformers(inputs, 2, args.transform, size, args.initial, args.localiser)
            second = 3  # Transformer 1's view of channel 1, transformer 2's of channel 2.
        first, second = Channel(0, name="digit1")(x), Channel(second, name="digit2")(x)
        outputs = digit_sum(first, second, kind or args.digit_classifier)
    elif key == "fcn":
        outputs = fcn(inputs)
    elif key == "cnn":
        outputs = cnn(inputs)
    elif key == "st":
        outputs = fcn(one_transformer(inputs, args))
    else:
        x, _ = parallel_transformers(inputs, 2, args.transform, size, args.initial, args.localiser)
        outputs = fcn(x) if key == "2st" else cnn(x)
    return keras.Model(inputs, outputs, name=NAMES[key])


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
    pairs_per_epoch = args.pairs
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
    for key in ("2st", "2st-cnn", "2st-fcn-sum", "2st-cnn-sum"):
        if key in trained:
            shown = _first_of_each_sum(test_sums, 8)
            name = f"addition_{key}.png"
            plot_attention(trained[key], test_pairs[shown], test_sums[shown],
                           os.path.join(args.out_dir, name))
            written.append(name)
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
    layer = model.get_layer("st")
    family = layer.transform
    outputs = keras.ops.convert_to_numpy(keras.Model(model.input, layer.output[0])(pairs))
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
        paper = "-" if paper is None else paper
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
