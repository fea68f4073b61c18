"""Times one training step of the paper's ST-CNN against the same CNN without the ST.

Batch 256 of 42x42 RTS digits (`keras_stn.datasets.distorted_mnist("RTS")`, or random
images of that shape with `--data random`), `model.train_on_batch` after
`model.compile(SGD, sparse categorical cross-entropy, jit_compile=True)` (`--no-xla`:
`jit_compile=False`).

Models (the CNN is the one of `examples/distorted_mnist.py`, after the paper: two 9x9
convolutions with ReLU, 32 then 64 filters, each followed by 2x2 max-pooling, then a
10-way softmax):

- `CNN`: the CNN on the 42x42 images.
- `ST-CNN`: `keras_stn.SpatialTransformer()` (affine, default localisation network,
  output 42x42) in front of the same CNN: the issue's comparison.
- `ST-CNN, 28x28 out`: the transformer samples a 28x28 output, as
  `examples/distorted_mnist.py` does for RTS; its CNN sees 28x28.
- `ST-CNN, no sampler`: the ST-CNN with the sampler replaced by a pass-through that
  keeps theta in the graph: what the localisation network and the grid cost alone.
- `ST-CNN, sampler op by op` (`--no-xla` only): the ST-CNN with its sampler run op by
  op, as inference graphs run it, instead of as one XLA function
  (`keras_stn.ops.sample_compiled`, what the layer trains through without XLA).
- `CNN, input gradient`: the CNN behind a layer that adds one trainable scalar to its
  input, so that its first convolution computes the gradient to its input, as it must
  behind any transformer: the floor under every ST-CNN.
- `ST-CNN, minimal localisation`: the transformer with a localisation network of a
  global average pool and a dense layer: the sampler, the grid and the head on top of
  that floor.
- `ST-CNN, localisation at half size`: the default localisation network after a 2x2
  max-pool (21x21 instead of 42x42).

The models take turns in one process, round after round, each in a block of four
steps of which the last three are timed; each figure is the median of `--repeats`
timed steps after two untimed ones. Runs on a GPU unchanged.

    python benchmarks/bench_training.py [--repeats 15] [--data random] [--no-xla]
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
from keras import ops

import keras_stn
from keras_stn.layers import spatial_transformer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing

BATCH = 256
SIZE = 42


def cnn(x):
    x = keras.layers.Conv2D(32, 9, activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(64, min(9, x.shape[1]), activation="relu")(x)
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    return keras.layers.Dense(10, activation="softmax")(x)


def build(transformer=None, jit_compile=True):
    inputs = keras.Input((SIZE, SIZE, 1))
    x = inputs if transformer is None else transformer(inputs)
    model = keras.Model(inputs, cnn(x))
    model.compile(
        keras.optimizers.SGD(0.01),
        "sparse_categorical_crossentropy",
        jit_compile=jit_compile,
    )
    return model


class AddScalar(keras.layers.Layer):
    """`x + b` with one trainable scalar `b` (0): makes the next layer back-propagate
    to its input."""

    def build(self, input_shape):
        self.scalar = self.add_weight(shape=(), initializer="zeros", name="scalar")

    def call(self, x):
        return x + self.scalar


def minimal_localisation():
    return keras.Sequential(
        [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(20, activation="relu")]
    )


def half_size_localisation():
    default = spatial_transformer.default_localisation((None, SIZE // 2, SIZE // 2, 1))
    return keras.Sequential([keras.layers.MaxPooling2D(2), *default.layers])


def pass_through(images, grid, **kwargs):
    """The images unchanged, with a zero that depends on the grid (so on theta)."""
    return images + 0.0 * ops.mean(grid)


def batch(data):
    if data == "rts":
        try:
            dataset = keras_stn.datasets.distorted_mnist(
                "RTS", "train", batch_size=BATCH, seed=0, verbose=False
            )
            images, labels = next(iter(dataset))
            return np.asarray(images), np.asarray(labels)
        except (ImportError, OSError, RuntimeError, ValueError) as error:  # no digits here
            print(f"RTS digits unavailable ({type(error).__name__}: {error}); random images")
    rng = np.random.default_rng(0)
    images = rng.random((BATCH, SIZE, SIZE, 1), dtype=np.float32)
    return images, rng.integers(0, 10, BATCH)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--data", choices=["rts", "random"], default="rts")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads (0: its default)")
    parser.add_argument("--no-xla", action="store_true",
                        help="compile with jit_compile=False instead")
    args = parser.parse_args()
    jit = not args.no_xla
    timing.set_threads(args.threads)

    print(timing.machine())
    images, labels = batch(args.data)
    keras.utils.set_random_seed(0)
    models = {
        "CNN": build(jit_compile=jit),
        "ST-CNN": build(keras_stn.SpatialTransformer(), jit),
        "ST-CNN, 28x28 out": build(keras_stn.SpatialTransformer(output_size=(28, 28)), jit),
        "CNN, input gradient": build(AddScalar(), jit),
        "ST-CNN, minimal localisation": build(
            keras_stn.SpatialTransformer(localisation=minimal_localisation()), jit
        ),
        "ST-CNN, localisation at half size": build(
            keras_stn.SpatialTransformer(localisation=half_size_localisation()), jit
        ),
    }
    steps = {}
    for name, model in models.items():
        steps[name] = lambda model=model: model.train_on_batch(images, labels)
        steps[name]()  # traced and compiled with the real sampler
    sampling = spatial_transformer.sampling
    plain = sampling.sample

    def traced_with(name, read):
        """An ST-CNN whose transformer reads through `read` while it is traced."""
        saved = sampling.sample, sampling.sample_compiled
        sampling.sample = sampling.sample_compiled = read
        try:
            model = build(keras_stn.SpatialTransformer(), jit)
            steps[name] = lambda: model.train_on_batch(images, labels)
            steps[name]()
        finally:
            sampling.sample, sampling.sample_compiled = saved

    traced_with("ST-CNN, no sampler", pass_through)
    if not jit:
        # Without XLA the layer trains through `sample_compiled`; op by op is what it
        # did before, and what inference graphs still run.
        traced_with("ST-CNN, sampler op by op", plain)

    def step(function):
        def call():
            function()
            timing.sync_tensorflow()

        return call

    seconds = timing.time_interleaved(
        {name: step(f) for name, f in steps.items()}, args.repeats, budget_s=60.0
    )
    print(f"{timing.load()}; median of {args.repeats} steps in interleaved blocks, batch {BATCH}, "
          f"{SIZE}x{SIZE}x1, jit_compile={jit}\n")
    rows = [
        [name, f"{1000 * value:.1f}", f"{value / seconds['CNN']:.2f}x"]
        for name, value in seconds.items()
    ]
    print(timing.markdown_table(["model", "train step ms", "ratio to CNN"], rows))


if __name__ == "__main__":
    main()
