"""How far a projective ST-CNN's transform walks in its first training steps.

Trains `examples/distorted_mnist.py`'s projective ST-CNN (same model, data, seed and
optimizer) for a few steps and, after each, prints the largest change of an output
corner's x or y over 64 test images, and the smallest homogeneous `w` at a corner
(below 0: the output has crossed the horizon). docs/reproduction.md has its figures.

    python scripts/probe_localiser.py --form matrix      # the paper's form: walks off on TC
    python scripts/probe_localiser.py --form keystone    # the default
    python scripts/probe_localiser.py --form corners --variant RTS --steps 50
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import distorted_mnist as example  # noqa: E402  (sets up quiet TensorFlow logging)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_stn import datasets  # noqa: E402
from keras_stn import transforms  # noqa: E402

CORNERS = np.array([[-1, -1, 1], [1, -1, 1], [-1, 1, 1], [1, 1, 1]], "float64")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--form", default="keystone", choices=transforms.Projective.PARAMETERISATIONS)
    parser.add_argument("--variant", default="TC", choices=datasets.VARIANTS)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="bundled", choices=datasets.SOURCES)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be positive; got {args.steps}")

    family = transforms.Projective(args.form)
    example.MODELS["projective"] = ("ST-CNN Proj", family)
    keras.utils.set_random_seed(args.seed)
    model = example.build_model("projective", datasets.IMAGE_SIZES[args.variant])
    # The example's optimizer: Adam, 1e-3 decaying along a cosine over 20 epochs of 63 steps.
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, 20 * 63)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
    options = dict(batch_size=64, source=args.source)
    train = datasets.distorted_mnist(args.variant, "train", seed=args.seed, **options)
    images = next(iter(datasets.distorted_mnist(args.variant, "test", **options)))[0]
    transformer = model.get_layer("st")
    for step, (x, y) in enumerate(train.take(args.steps), 1):
        loss = model.train_on_batch(x, y)
        homography = np.asarray(family.homography(transformer.localise(images)), "float64")
        points = CORNERS @ homography.transpose(0, 2, 1)
        w = points[..., 2]
        moved = np.abs(points[..., :2] / w[..., None] - CORNERS[None, :, :2]).max()
        print(f"step {step:3d}  loss {float(loss):.3f}  largest corner move {moved:9.3f}  "
              f"smallest w {w.min():+.3f}", flush=True)


if __name__ == "__main__":
    main()
