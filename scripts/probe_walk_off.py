"""Does an ST-CNN's transformer walk off the image in its first training steps?

Replays the start of one run of `examples/distorted_mnist_table.py` (the example's
seeded data, model, recipe and optimizer, through the example's own training) and,
every few steps, prints the training loss so far, how much of the transformer's
output reads inside the image on 64 test images (`keras_stn.ops.validity_mask`: 1 at
the identity, 0 once the output has left the image) and where the output's centre
reads from (its distance from the image's centre, in half-widths).
docs/reproduction.md has its figures.

    python scripts/probe_walk_off.py --variant TC --seed 2 --model affine --warmup-steps 0   # walks off
    python scripts/probe_walk_off.py --variant TC --seed 2 --model affine --warmup-steps 0 --localisation-learning-rate 0.3
    python scripts/probe_walk_off.py --variant TC --seed 2 --model affine --steps 200 --every 10  # the recipe: held 16 steps

Any other flag is the example's (`--warmup-steps`, `--localisation-learning-rate`,
`--antialias`, ...).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import distorted_mnist as example  # noqa: E402  (sets up quiet TensorFlow logging)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_stn  # noqa: E402


class WalkProbe(keras.callbacks.Callback):
    """Prints, every `every` steps, what the transformer `"st"` does to `images`."""

    def __init__(self, images, steps, every):
        super().__init__()
        self.images, self.steps, self.every = images, steps, every
        self.step = 0  # counted across epochs: Keras numbers batches within each one

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        step = self.step
        if step % self.every == 0 or step == self.steps:
            inside, centre = read_inside(self.model.get_layer("st"), self.images)
            print(f"step {step:3d}  loss {logs['loss']:.4f}  inside {inside:.3f}  "
                  f"centre {centre:.2f}", flush=True)
        if step >= self.steps:
            self.model.stop_training = True


def read_inside(transformer, images):
    """`(inside, centre)`: the mean fraction of the output read inside `images` and the
    mean distance of the output centre's reading point from the image's centre."""
    side = images.shape[1]
    theta = transformer.localise(images)
    grid = keras.ops.convert_to_numpy(transformer.transform.grid(theta, (side, side)))
    inside = keras.ops.convert_to_numpy(keras_stn.ops.validity_mask(grid, (side, side)))
    centre = grid[:, side // 2, side // 2]  # the point at (or next to) the output's centre
    return float(np.mean(inside)), float(np.mean(np.linalg.norm(centre, axis=-1)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="affine", choices=[k for k in example.MODELS if k != "cnn"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=5, help="print every this many steps")
    own, rest = parser.parse_known_args(argv)
    if own.steps < 1 or own.every < 1:
        parser.error(f"--steps and --every must be positive; got {own.steps}, {own.every}")
    args = example.parse_args(rest + ["--models", own.model, "--verbose", "0"])
    _, test, steps, _, _ = example.load_data(args)
    images = np.asarray(next(iter(test))[0][:64])
    print(f"{args.variant}, seed {args.seed}, {example.MODELS[own.model][0]}, recipe "
          f"{dict(args.recipe._asdict())}", flush=True)
    example.train_and_evaluate(own.model, args.variant, test, steps, args,
                               callbacks=[WalkProbe(images, own.steps, own.every)])


if __name__ == "__main__":
    main()
