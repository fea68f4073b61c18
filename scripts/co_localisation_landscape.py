"""Why co-localisation fails here: the objective, or the way down to its minimum?

Uses `examples/co_localisation.py`'s encoder, images and loss (held-out digits, as its
`--holdout`), and prints for a few digit classes:

- the triplet loss with every crop a digit-sized box whose centre lies `d` pixels
  from its digit's centre (a random direction, kept inside the canvas), for `d` from
  0 (every crop on its digit) to 42 (most crops blank), beside the loss at the
  example's starting box (the canvas's centre);
- the success rate (IoU > 0.5) of the example's transformer trained for as many steps
  to regress the digits' true centres, supervised: can its localisation network learn
  where the digits are at all?

docs/multiple-transformers.md has its figures.

    python scripts/co_localisation_landscape.py
    python scripts/co_localisation_landscape.py --digits 1,8 --settings TC --seed 1
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import co_localisation as example  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

OFFSETS = (0, 4, 8, 14, 21, 28, 42)
PAIRS = 200  # triplets per loss estimate


def boxes_at(boxes, offset, rng):
    """Digit-sized attention theta `(N, 3)` centred `offset` px from each digit's
    centre, in a random direction, the box kept inside the canvas."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    angle = rng.uniform(0, 2 * np.pi, len(centres))
    centres = centres + offset * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    half = example.DIGIT / 2
    centres = np.clip(centres, half, example.CANVAS - half)
    scale = np.full((len(centres), 1), example.DIGIT / example.CANVAS)
    return np.concatenate([scale, centres / (example.CANVAS / 2) - 1], axis=1).astype("float32")


def loss_at(images, theta, encoder, margin, rng):
    """The example's triplet loss with the crops at `theta`, over `PAIRS` random pairs."""
    n = rng.integers(0, len(images), PAIRS)
    m = (n + rng.integers(1, len(images), PAIRS)) % len(images)
    shifts = rng.uniform(-1, 1, (PAIRS, 2)).astype("float32")
    anchor = encoder(example.crops_at(images[n], theta[n]))
    positive = encoder(example.crops_at(images[m], theta[m]))
    negative = encoder(example.random_crops(images[n], theta[n, :1], shifts))
    return float(example.triplet_loss(anchor, positive, negative, margin))


def supervised_success(images, boxes, steps, batch_size, rng):
    """The example's transformer trained to put its box on the true centres (mean
    squared error on `tx, ty`); the percentage of images then localised."""
    transformer = example.build_transformer(example.DIGIT / example.CANVAS, 0.2)
    centres = ((boxes[:, :2] + boxes[:, 2:]) / example.CANVAS - 1).astype("float32")
    optimizer = keras.optimizers.Adam(1e-3)
    weights = transformer.trainable_variables

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            _, theta = transformer(x)
            loss = tf.reduce_mean(tf.square(theta[:, 1:] - y))
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))

    for _ in range(steps):
        n = rng.integers(0, len(images), batch_size)
        step(images[n], centres[n])
    _, theta = transformer(images)
    theta = np.array(theta)
    theta[:, 0] = example.DIGIT / example.CANVAS  # the box's size is not the question
    return 100.0 * float(np.mean(example.iou(example.attention_boxes(theta), boxes) > 0.5))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", default="0,3,6", help="comma-separated classes")
    parser.add_argument("--settings", default="T,TC", help="comma-separated, from: T, TC")
    parser.add_argument("--steps", type=int, default=400, help="supervised steps")
    parser.add_argument("--seed", type=int, default=0)
    own = parser.parse_args(argv)
    args = example.parse_args(["--holdout", "--seed", str(own.seed)])
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    (encoder_images, encoder_labels), pool, split, _ = example.split_digits(holdout=True)
    classifier, encoder = example.build_encoder()
    example.train_encoder(classifier, encoder_images, encoder_labels, args.encoder_epochs, rng)
    encoder.trainable = False

    print(f"Triplet loss (margin {args.margin}) with every crop d px from its digit, "
          f"{PAIRS} pairs, {split}; 'start' is the example's first box (the centre); "
          f"'supervised': % localised after {own.steps} supervised steps")
    print("| setting | digit | " + " | ".join(f"d={d}" for d in OFFSETS)
          + " | start | supervised |")
    print("|---|---:|" + "---:|" * (len(OFFSETS) + 2))
    for setting in own.settings.split(","):
        for digit in (int(d) for d in own.digits.split(",")):
            members = np.flatnonzero(pool[1] == digit)[: example.PER_CLASS]
            images, boxes = example.make_images(pool[0][members], encoder_images,
                                                setting == "TC", rng)
            losses = [loss_at(images, boxes_at(boxes, d, rng), encoder, args.margin, rng)
                      for d in OFFSETS]
            start = np.tile(np.float32([[args.initial_scale, 0, 0]]), (len(images), 1))
            losses.append(loss_at(images, start, encoder, args.margin, rng))
            success = supervised_success(images, boxes, own.steps, args.batch_size, rng)
            print(f"| {setting} | {digit} | " + " | ".join(f"{v:.2f}" for v in losses)
                  + f" | {success:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
