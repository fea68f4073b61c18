"""Peak memory of the sampler's forward+backward under XLA, from XLA's buffer assignment.

For each shape of `bench_sampler.py` (images and volumes), compiles affine grid +
sample, forward and backward (gradients to the images and theta, or to theta only),
with `jit_compile=True`, and reads XLA's own accounting of the compiled program
(`--xla_dump_to`): every byte it allocates, parameters, outputs and temporaries
together. That is the program's peak: XLA allocates it all up front. It is compared
with the arrays the computation cannot do without (`essential_bytes`): images, theta,
grid, output, upstream gradient and the gradients. Also prints the largest single temporary, to
show that nothing of size B x Ho x Wo x H x W (a dense sampling matrix; for volumes
B x Do x Ho x Wo x D x H x W) is ever made. The gather baseline is 2-D only.

    python benchmarks/bench_memory.py [--shapes 0 3] [--batch 1]
    python benchmarks/bench_memory.py --shapes 5 6     # the volumes

XLA_FLAGS is set by this script (a dump directory in a temporary folder); the figures
are the CPU compiler's. Deterministic: no timing involved.
"""

import argparse
import glob
import math
import os
import re
import shutil
import sys
import tempfile

DUMP = tempfile.mkdtemp(prefix="keras_stn_xla_dump_")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={DUMP} --xla_dump_hlo_as_text"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_sampler
import timing

MODES = ("fwd+bwd", "fwd+bwd, grid only")
SAMPLERS = {"stn": bench_sampler.stn_sample, "gather": bench_sampler.gather_sample}


def compiled_bytes(sampler, shape, mode):
    """(total bytes, largest temporary bytes) of the program XLA compiled for it."""
    before = set(glob.glob(os.path.join(DUMP, "*memory-usage-report.txt")))
    call = bench_sampler.tensorflow_call(
        sampler, bench_sampler.inputs(shape), bench_sampler.split(shape)[3], mode,
        jit_compile=True,
    )
    call()
    reports = sorted(set(glob.glob(os.path.join(DUMP, "*memory-usage-report.txt"))) - before)
    if len(reports) != 1:
        raise RuntimeError(f"expected one new XLA memory report, found {len(reports)}")
    with open(reports[0]) as f:
        text = f.read()
    total = int(re.search(r"Total bytes used: (\d+)", text).group(1))
    assignment = reports[0].replace("memory-usage-report", "buffer-assignment")
    largest = 0
    with open(assignment) as f:
        for line in f:
            match = re.match(r"\s*value: <\d+ .*> \(size=(\d+),offset=\d+\)", line)
            if match:
                largest = max(largest, int(match.group(1)))
    return total, largest


def essential_bytes(shape, mode):
    """The computation's inputs, outputs and gradients, which any sampler holds.

    Images, theta and the grid made from it (the sampler's own input), the output and
    its upstream gradient, the gradients to theta and the grid, and to the images when
    they are asked for. torch's affine_grid + grid_sample holds exactly these.
    """
    batch, sizes, channels, out_sizes = bench_sampler.split(shape)
    r = len(sizes)
    image = batch * math.prod(sizes) * channels * 4
    output = batch * math.prod(out_sizes) * channels * 4
    theta = batch * r * (r + 1) * 4
    grid = batch * math.prod(out_sizes) * r * 4
    gradients = theta + grid + (image if mode == "fwd+bwd" else 0)
    return image + theta + grid + output + output + gradients


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, nargs="*",
                        default=list(range(len(bench_sampler.SHAPES))))
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--keep-dump", action="store_true",
                        help="keep XLA's dump folder (deleted otherwise)")
    parser.add_argument("--batch", type=int, default=0,
                        help="every shape's batch size (0: the shape's own)")
    args = parser.parse_args()
    print(timing.machine())
    print("XLA's total allocation for affine grid + sample, forward and backward, and "
          "its ratio to the essential arrays: images, theta, grid, output, upstream "
          "gradient and gradients (MiB)")
    tables = {}  # one per rank: the gather baseline is 2-D only
    for index in args.shapes:
        shape = bench_sampler.with_batch(bench_sampler.SHAPES[index], args.batch)
        rank = bench_sampler.rank(shape)
        samplers = SAMPLERS if rank == 2 else {"stn": SAMPLERS["stn"]}
        what, dense_name = (
            ("B, H, W, C", "B*Ho*Wo*H*W") if rank == 2 else ("B, D, H, W, C", "B*Do*Ho*Wo*D*H*W")
        )
        header = [f"shape ({what} -> out)", "mode", "essential"]
        header += [f"{name} peak (ratio)" for name in samplers]
        header += ["stn largest temp / output", f"{dense_name} floats / output"]
        header, rows = tables.setdefault(rank, (header, []))
        batch, sizes, channels, out_sizes = bench_sampler.split(shape)
        output = batch * math.prod(out_sizes) * channels * 4
        for mode in args.modes:
            essential = essential_bytes(shape, mode)
            row = [bench_sampler.label(shape), mode, f"{essential / 2**20:.1f}"]
            largest_stn = None
            for name, sampler in samplers.items():
                total, largest = compiled_bytes(sampler, shape, mode)
                row.append(f"{total / 2**20:.1f} ({total / essential:.2f}x)")
                if name == "stn":
                    largest_stn = largest
            dense = batch * math.prod(out_sizes) * math.prod(sizes) * 4
            row += [f"{largest_stn / output:.2f}", f"{dense / output:.0f}"]
            rows.append(row)
            print(timing.markdown_table(header, rows[-1:]).splitlines()[-1], flush=True)
    for header, rows in tables.values():
        print()
        print(timing.markdown_table(header, rows))
    if args.keep_dump:
        print(f"\n(XLA dump kept in {DUMP})")
    else:
        shutil.rmtree(DUMP, ignore_errors=True)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
