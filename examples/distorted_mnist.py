"""Distorted MNIST with spatial transformers: Jaderberg et al. 2015, sec. 4.1, Table 1.

Trains the paper's CNN and ST-CNNs (affine by default; projective and thin-plate
spline with `--models`) on one variant of distorted MNIST
(`keras_stn.datasets.distorted_mnist`, default RTS), prints their test errors beside
the paper's Table 1, saves pictures of what the transformers learned, exports the
first ST-CNN as a SavedModel, reloads it with `tf.saved_model.load` and serves a
batch through `serving_default`.

    python examples/distorted_mnist.py                      # RTS, CNN and affine ST-CNN, 5-8 min on 2 CPU cores
    python examples/distorted_mnist.py --models cnn,affine,projective,tps   # all four, ~19 min
    python examples/distorted_mnist.py --variant E --models cnn,tps --epochs 30
    python examples/distorted_mnist.py --source tfds --download --epochs 50   # needs TFDS
    python examples/distorted_mnist.py --smoke              # a few steps: does it all run?

Without `--source tfds` the digits are TFDS's `mnist` if it is prepared on this
machine, else the 5,000 MNIST digits bundled with keras_stn (4,000 train / 1,000
test); the data line printed first says which. Nothing is downloaded unless
`--download` is given; TFDS needs `pip install tensorflow-datasets`.

TensorFlow's start-up log (CUDA probing, CPU features) is hidden unless
`TF_CPP_MIN_LOG_LEVEL` is set: `TF_CPP_MIN_LOG_LEVEL=0 python examples/...` shows it.

Measured with the defaults (2-core CPU, offline digits): on RTS, seed 0, CNN 8.1% test
error, affine ST-CNN 3.3%, 4 min 50 s in all on a quiet machine (2026-12-07). The
recipe's transformers hold still for their first 16 steps
(`warmup_steps`, chosen on held-out digits): without that, on cluttered MNIST (TC) one
seed of three walked off the image in the first steps (`scripts/probe_walk_off.py
--warmup-steps 0` shows it).
docs/reproduction.md has the three-seed table (examples/distorted_mnist_table.py
makes it).

The networks (see docs/reproduction.md for what the paper says and what is chosen here):

- CNN: conv 9x9 32 - max-pool 2 - conv 9x9 64 - max-pool 2 - softmax (ReLU, no padding).
- ST-CNN: a `keras_stn.SpatialTransformer` at the input, with the package's default
  localisation network (the paper's: conv 5x5 20 - max-pool 2 - conv 5x5 20 -
  dense 20) and its identity-initialised regression head, then the same CNN. Its
  output keeps the input's size (28x28 on R, P, E; 42x42 on RTS; 60x60 on TC), so
  the classifier sees the digit at full resolution wherever the transformer puts it.
  It holds still for the first 16 training steps (`warmup_steps`), then learns.
"""

import argparse
import collections
import contextlib
import importlib.util
import json
import logging
import os
import sys
import time


@contextlib.contextmanager
def quiet_stderr(quiet):
    """Sends file descriptor 2 to /dev/null: what C++ libraries print while they load.
    A Python error raised inside is printed after, with stderr back."""
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


# TensorFlow's C++ start-up log, unless the user asked for it: on a machine without a
# GPU it reports CUDA's absence (one line at level E), and CPU features.
QUIET = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
with quiet_stderr(QUIET):
    import numpy as np
    import keras
    import tensorflow as tf

import keras_stn
from keras_stn import datasets
from keras_stn import visualize

# Jaderberg et al. 2015, Table 1: test error (%) on distorted MNIST (the full training
# set); TC (translated and cluttered) from its text: FCN 13.2, CNN 3.5, ST-CNN 1.7.
PAPER = {
    "FCN": {"R": 2.1, "RTS": 5.2, "P": 3.1, "E": 3.2, "TC": 13.2},
    "CNN": {"R": 1.2, "RTS": 0.8, "P": 1.5, "E": 1.4, "TC": 3.5},
    "ST-CNN Aff": {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.2, "TC": 1.7},
    "ST-CNN Proj": {"R": 0.8, "RTS": 0.6, "P": 0.8, "E": 1.3},
    "ST-CNN TPS": {"R": 0.7, "RTS": 0.5, "P": 0.8, "E": 1.1},
}
MODELS = {
    "cnn": ("CNN", None),
    "affine": ("ST-CNN Aff", "affine"),
    "projective": ("ST-CNN Proj", "projective"),
    "tps": ("ST-CNN TPS", "tps"),
}
PAPER_VARIANTS = ("R", "RTS", "P", "E", "TC")


class Recipe(collections.namedtuple(
    "Recipe", ["output_size", "antialias", "localisation_learning_rate", "warmup_steps"]
)):
    """How the ST-CNNs are built; the same for every variant (docs/reproduction.md
    has the runs behind each default).

    - `output_size`: the side of the transformer's output, what the classifier sees;
      0 (the default) keeps the input's size, 28 would be MNIST's own size.
    - `antialias`: the transformer averages over each output pixel's footprint
      where it shrinks the input (where it zooms out, or with a smaller
      `output_size`).
    - `localisation_learning_rate`: the localisation network's learning-rate
      multiplier.
    - `warmup_steps`: training steps for which the transformers hold still (their
      `warmup_steps`) while the classifier learns the untransformed view: 16 steps,
      chosen on held-out digits against 0 and 63 (the first epoch of 4,000 digits at
      batch 64).
    """


DEFAULT_RECIPE = Recipe(
    output_size=0, antialias=True, localisation_learning_rate=1.0, warmup_steps=16
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and every flag's default."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--variant", default="RTS", choices=datasets.VARIANTS, help="distorted MNIST variant"
    )
    parser.add_argument(
        "--models",
        default="cnn,affine",
        help="comma-separated, from: " + ", ".join(MODELS),
    )
    parser.add_argument("--epochs", type=int, default=20, help="training epochs per model")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam's peak learning rate; it decays to 0 along a cosine",
    )
    parser.add_argument(
        "--source",
        default="auto",
        choices=datasets.SOURCES,
        help="where the digits come from; auto: TFDS if prepared, else the bundled 5,000",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="let TFDS download mnist (implies --source tfds unless given)",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data directory")
    parser.add_argument(
        "--train-digits", type=int, default=None, help="use only this many training digits"
    )
    parser.add_argument(
        "--test-digits", type=int, default=None, help="use only this many test digits"
    )
    parser.add_argument(
        "--out-dir",
        default=os.path.join("runs", "distorted_mnist"),
        help="where results, pictures, logs and the SavedModel go",
    )
    parser.add_argument(
        "--frames",
        action="store_true",
        help="also write the transformers' outputs of every epoch as PNG frames",
    )
    parser.add_argument(
        "--output-size",
        type=int,
        default=DEFAULT_RECIPE.output_size,
        help="side of the transformers' outputs, what the ST-CNNs' classifier sees "
        "(0: the input's size)",
    )
    parser.add_argument(
        "--antialias",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_RECIPE.antialias,
        help="the transformers average over each output pixel's footprint where they shrink",
    )
    parser.add_argument(
        "--localisation-learning-rate",
        type=float,
        default=DEFAULT_RECIPE.localisation_learning_rate,
        help="the localisation networks' learning-rate multiplier",
    )
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=DEFAULT_RECIPE.warmup_steps,
        help="training steps for which the transformers hold still while the classifier "
        "learns the untransformed view",
    )
    parser.add_argument(
        "--validation-digits",
        type=int,
        default=0,
        help="hold out the last N training digits and report the error on them (with "
        "fixed distortions) instead of the test error: for choosing a recipe",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights and the data")
    parser.add_argument(
        "--jit",
        action="store_true",
        help="jit_compile=True: XLA on a CPU too (Keras uses it on a GPU anyway); "
        "it made this CNN 5x slower on a 2-core CPU",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        default=1,
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
        args.train_digits = args.train_digits or 32
        args.test_digits = args.test_digits or 32
    for name in ("epochs", "batch_size", "train_digits", "test_digits"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive; got {value}")
    if args.output_size < 0 or args.validation_digits < 0 or args.warmup_steps < 0:
        parser.error("--output-size, --validation-digits and --warmup-steps must be >= 0")
    if args.localisation_learning_rate <= 0:
        parser.error("--localisation-learning-rate must be positive")
    args.recipe = Recipe(
        args.output_size, args.antialias, args.localisation_learning_rate, args.warmup_steps
    )
    return args


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


def build_model(key, image_size, recipe=DEFAULT_RECIPE):
    """The CNN (`key="cnn"`) or an ST-CNN of `recipe` for `image_size` inputs."""
    label, transform = MODELS[key]
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = inputs
    if transform is not None:
        side = recipe.output_size or image_size
        x = keras_stn.SpatialTransformer(
            transform,
            output_size=None if side == image_size else (side, side),
            antialias=recipe.antialias,
            learning_rate_multiplier=recipe.localisation_learning_rate,
            warmup_steps=recipe.warmup_steps,
            name="st",
        )(x)
    outputs = classifier(x, "classifier")
    return keras.Model(inputs, outputs, name=label.lower().replace(" ", "_").replace("-", "_"))


def training_data(args):
    """The training pipeline of `args`, the same whatever ran before in this process.

    It seeds every generator with `args.seed`, then builds a fresh pipeline: the
    pipeline's shuffle and distortions take TensorFlow's global seed along with their
    own, and a pipeline reshuffles each time it is iterated, so one built earlier, or
    used by another model first, would hand this run other batches.
    """
    keras.utils.set_random_seed(args.seed)
    return load_data(args)[0]


def train_and_evaluate(key, variant, test, steps, args, callbacks=()):
    """Trains one model on `training_data(args)` (`steps` batches an epoch) and
    returns it with its error (%) on `test` and the training time (s)."""
    train = training_data(args)
    model = build_model(key, datasets.IMAGE_SIZES[variant], args.recipe)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, args.epochs * steps)
    model.compile(
        keras.optimizers.Adam(schedule),
        keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
        jit_compile=True if args.jit else "auto",
    )
    tic = time.time()
    model.fit(
        train, epochs=args.epochs, verbose=args.verbose, callbacks=list(callbacks), shuffle=False
    )
    seconds = time.time() - tic
    _, accuracy = model.evaluate(test, verbose=0)
    return model, 100.0 * (1.0 - accuracy), seconds


def load_data(args):
    """`(train, test, steps, source, train_count)`: the tf.data pipelines of `args`.

    With `--validation-digits N`, `test` is the last N training digits (distortions
    fixed by their own seed) and `train` the others.
    """
    source = "tfds" if args.download and args.source == "auto" else args.source
    options = dict(source=source, download=args.download, data_dir=args.data_dir)
    variant = args.variant
    if args.validation_digits:
        digits = datasets.load_digits("train", **options)
        count = min(len(digits.labels), args.train_digits or len(digits.labels))
        count -= args.validation_digits
        if count < 1:
            raise SystemExit("--validation-digits leaves no training digit")
        train = datasets.distorted_mnist_from_digits(
            variant, "train", digits.images[:count], digits.labels[:count],
            batch_size=args.batch_size, seed=args.seed,
        )
        held = slice(count, count + args.validation_digits)
        test = datasets.distorted_mnist_from_digits(
            variant, "test", digits.images[held], digits.labels[held], batch_size=256,
            seed=VALIDATION_SEED,
        ).cache()
    else:
        train = datasets.distorted_mnist(
            variant, "train", batch_size=args.batch_size, seed=args.seed,
            num_digits=args.train_digits, **options,
        )
        test = datasets.distorted_mnist(
            variant, "test", batch_size=256, num_digits=args.test_digits, **options
        ).cache()
        count = len(datasets.load_digits("train", **options).labels)
        count = min(count, args.train_digits or count)
    source = datasets.resolve_source(source, args.download, args.data_dir)
    return train, test, -(-count // args.batch_size), source, count


# The distortions of held-out validation digits (any fixed seed other than the test's).
VALIDATION_SEED = 12345


# ----------------------------------------------------------------------- the run


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    # One tf.function per model and per fit/evaluate/predict: TensorFlow counts them as
    # retracings of one function and warns, though nothing is traced twice needlessly.
    tf.get_logger().addFilter(NoRetracingWarning())
    os.makedirs(args.out_dir, exist_ok=True)
    variant = args.variant
    _, test, steps, source, train_count = load_data(args)
    test_images, test_labels = (
        np.concatenate(a) for a in zip(*((x.numpy(), y.numpy()) for x, y in test))
    )
    shown = _mixed(test_labels, 16)
    evaluated_on = "validation" if args.validation_digits else "test"

    tensorboard = importlib.util.find_spec("tensorboard") is not None
    if not tensorboard:
        print("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")

    errors, seconds, trained = {}, {}, {}
    for key in args.models:
        label, transform = MODELS[key]
        print(
            f"\n=== {label} on {variant}: {args.epochs} epochs of {train_count:,} digits ===",
            flush=True,
        )
        callbacks = []
        log_dir = os.path.join(args.out_dir, "tensorboard", key) if tensorboard else None
        png_dir = os.path.join(args.out_dir, "frames", key) if args.frames else None
        if transform is not None and (log_dir or png_dir):
            callbacks.append(
                visualize.TransformerSnapshots(
                    test_images[shown], layer="st", log_dir=log_dir, png_dir=png_dir
                )
            )
        model, errors[key], seconds[key] = train_and_evaluate(
            key, variant, test, steps, args, callbacks
        )
        trained[key] = model
        print(
            f"{label}: {evaluated_on} error {errors[key]:.1f}% ({seconds[key]:.0f} s)",
            flush=True,
        )
        if transform is not None:
            save_pictures(model, test_images[shown], args.out_dir, f"{variant}_{key}")

    table = results_table(
        variant, args, errors, seconds, source, train_count, len(test_labels), evaluated_on
    )
    print("\n" + table)
    with open(os.path.join(args.out_dir, f"results_{variant}.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out_dir, f"results_{variant}.json"), "w") as f:
        json.dump(
            {
                "variant": variant,
                "errors": errors,
                "seconds": seconds,
                "source": source,
                "train_digits": train_count,
                "test_digits": len(test_labels),
                "epochs": args.epochs,
                "evaluated_on": evaluated_on,
                "recipe": args.recipe._asdict(),
                "seed": args.seed,
                "argv": sys.argv[1:] if argv is None else argv,
            },
            f,
            indent=1,
        )

    st_keys = [k for k in args.models if MODELS[k][1] is not None]
    if st_keys:
        serve(trained[st_keys[0]], test_images[:32], args.out_dir, f"{variant}_{st_keys[0]}")
    print(
        f"\nIn {args.out_dir}: the table (results_{variant}.md), the numbers "
        f"(results_{variant}.json)"
        + (", the pictures (*.png) and the SavedModel" if st_keys else "")
    )
    if tensorboard and st_keys:
        print(
            "The transformers' outputs, epoch by epoch: "
            f"tensorboard --logdir {os.path.join(args.out_dir, 'tensorboard')}"
        )
    print(f"Total time: {time.time() - started:.0f} s")
    return errors


class NoRetracingWarning(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def _mixed(labels, count):
    """Indices of `count` digits, the classes in turn."""
    by_class = [np.flatnonzero(labels == digit) for digit in range(10)]
    picked = []
    for rank in range(len(labels)):
        for members in by_class:
            if rank < len(members) and len(picked) < count:
                picked.append(members[rank])
    return np.array(picked)


def save_pictures(model, images, out_dir, stem):
    layer = model.get_layer("st")
    outputs, grid, _ = visualize.transformer_outputs(layer, images)
    name = stem.replace("_", " ")
    visualize.plot_transformed(
        images,
        outputs,
        columns=4,
        title=f"{name}: test inputs and the transformer's outputs",
        path=os.path.join(out_dir, f"{stem}_outputs.png"),
    )
    visualize.plot_sampling_grid(
        images,
        grid,
        columns=4,
        title=f"{name}: where the transformer reads each test input",
        path=os.path.join(out_dir, f"{stem}_grid.png"),
    )
    print(f"Saved {stem}_outputs.png and {stem}_grid.png")


def serve(model, images, out_dir, stem):
    """Exports `model` as a SavedModel, reloads it with TensorFlow alone, serves a batch."""
    path = os.path.join(out_dir, f"{stem}_savedmodel")
    model.export(path, verbose=False)
    loaded = tf.saved_model.load(path)
    serving = loaded.signatures["serving_default"]
    (input_name,) = serving.structured_input_signature[1].keys()
    served = serving(**{input_name: tf.constant(images)})
    (probabilities,) = served.values()
    probabilities = probabilities.numpy()
    expected = model.predict(images, verbose=0)
    agree = int(np.sum(probabilities.argmax(-1) == expected.argmax(-1)))
    difference = np.abs(probabilities - expected).max()
    print(
        f"\nExported {model.name} to {path}; reloaded with tf.saved_model.load and served "
        f"{len(images)} digits through serving_default: predictions "
        f"{probabilities.argmax(-1)[:16].tolist()}..., {agree}/{len(images)} agree with "
        f"Keras, max |difference| {difference:.1e}"
    )
    return probabilities


def results_table(variant, args, errors, seconds, source, train_count, test_count,
                  evaluated_on="test"):
    lines = [
        f"Distorted MNIST {variant}: {evaluated_on} error (%) on {test_count:,} "
        f"{evaluated_on} digits "
        f"(source: {source}), trained on {train_count:,} digits x {args.epochs} epochs",
        "",
        f"| model | this run ({variant}) | train time (s) | "
        + " | ".join(f"paper {v}" for v in PAPER_VARIANTS)
        + " |",
        "|---|---:|---:|" + "---:|" * len(PAPER_VARIANTS),
    ]
    labels = {MODELS[k][0]: k for k in MODELS}
    for label, paper in PAPER.items():
        key = labels.get(label)
        mine = f"{errors[key]:.1f}" if key in errors else "-"
        time_taken = f"{seconds[key]:.0f}" if key in seconds else "-"
        marks = [
            "-" if v not in paper else f"**{paper[v]}**" if v == variant else f"{paper[v]}"
            for v in PAPER_VARIANTS
        ]
        lines.append(f"| {label} | {mine} | {time_taken} | " + " | ".join(marks) + " |")
    lines.append("")
    lines.append(
        "Paper: Jaderberg et al. 2015, Table 1 "
        "(all 60,000 MNIST training digits, far longer training)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
