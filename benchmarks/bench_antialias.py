"""Times anti-aliased sampling (`antialias=True`) against plain bilinear sampling.

Both read the same images along the same affine grid (bench_sampler.py's inputs: theta
near the identity); the only difference is the `antialias` flag. Each row is one shape
and mode; the figures are milliseconds, and the ratio is anti-aliased over plain,
measured side by side in one process (bench_sampler.py's interleaved timing):

- `28x28 -> 28x28`: no shrink, where anti-aliasing reads plain bilinear bit for bit
  and only pays for finding that out;
- `42x42 -> 28x28` and `60x60 -> 28x28`: the RTS and TC transformers of
  examples/distorted_mnist.py (1.5x and 2.1x shrink at the identity);
- `224x224x3 -> 56x56`: a 4x shrink of a photograph-sized image.

    python benchmarks/bench_antialias.py [--repeats 15] [--no-graph]
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_sampler  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)
import timing  # noqa: E402

import keras_stn  # noqa: E402

# (batch, height, width, channels, out_height, out_width)
SHAPES = [
    (64, 28, 28, 1, 28, 28),
    (64, 42, 42, 1, 28, 28),
    (64, 60, 60, 1, 28, 28),
    (8, 224, 224, 3, 56, 56),
]


def sampler(antialias):
    def sample(images, theta, *out_size):
        grid = keras_stn.ops.affine_grid(theta, out_size)
        return keras_stn.ops.sample(images, grid, antialias=antialias)

    return sample


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-graph", action="store_true",
                        help="XLA only (leave out tf.function without jit_compile)")
    args = parser.parse_args()
    print(timing.machine())
    print(f"{timing.load()}; median of {args.repeats} calls, in interleaved blocks; ms "
          "(anti-aliased / plain)\n")
    compilers = [("XLA", True)] + ([] if args.no_graph else [("graph", False)])
    header = ["shape (B, H, W, C -> out)", "mode", "compiled", "plain", "antialias"]
    rows = []
    for shape in SHAPES:
        arrays = bench_sampler.inputs(shape)
        out_size = shape[4:]
        for mode in bench_sampler.MODES:
            for compiler, jit_compile in compilers:
                calls = {
                    name: bench_sampler.tensorflow_call(
                        sampler(flag), arrays, out_size, mode, jit_compile
                    )
                    for name, flag in (("plain", False), ("antialias", True))
                }
                seconds = timing.time_interleaved(calls, args.repeats)
                plain, smooth = seconds["plain"], seconds["antialias"]
                rows.append([
                    bench_sampler.label(shape), mode, compiler, f"{1000 * plain:.2f}",
                    f"{1000 * smooth:.2f} ({smooth / plain:.2f}x)",
                ])
                print(timing.markdown_table(header, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(timing.markdown_table(header, rows))


if __name__ == "__main__":
    main()
