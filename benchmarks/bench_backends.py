"""Times keras_stn's sampler on each Keras backend against torch's native grid_sample.

The same work as `bench_sampler.py` (affine grid + bilinear read, zeros padding,
`align_corners=False`, float32; `fwd`, `fwd+bwd`, `fwd+bwd, grid only`) on the same
shapes, once per backend, each in its own interpreter (Keras picks its backend once):

- TensorFlow: `stn graph` (`tf.function`: what a SavedModel serves), `stn fit graph`
  (`tf.function` around `sample_compiled`: what the layers run while training
  without XLA, Keras' CPU default) and `stn XLA` (`jit_compile=True`).
- JAX: `stn jax` (`jax.jit`, as Keras runs every JAX step).
- PyTorch: `stn torch` (eager, as Keras' torch backend runs by default).

Each interpreter also times torch's `affine_grid` + `grid_sample` on the same arrays,
taking turns with keras_stn (`timing.time_interleaved`), so each ratio compares two
figures measured side by side in one process.

    python benchmarks/bench_backends.py [--repeats 15] [--shapes 0 2] [--modes fwd]
        [--backends jax torch] [--threads 2]
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("tensorflow", "jax", "torch")


def worker(args):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, HERE)
    import bench_sampler
    import keras
    import timing

    timing.set_threads(args.threads)
    backend = keras.backend.backend()
    for index in args.shapes:
        shape = bench_sampler.SHAPES[index]
        bench_sampler.check_agreement(shape) if backend == "tensorflow" else None
        arrays = bench_sampler.inputs(shape)
        out_size = shape[4:]
        _check_against_torch(arrays, out_size)
        for mode in args.modes:
            calls = {"torch": bench_sampler.torch_call(arrays, out_size, mode)}
            if backend == "tensorflow":
                sample = bench_sampler.stn_sample
                calls["stn graph"] = bench_sampler.tensorflow_call(
                    sample, arrays, out_size, mode, False)
                calls["stn fit graph"] = bench_sampler.tensorflow_call(
                    bench_sampler.stn_sample_compiled, arrays, out_size, mode, False)
                calls["stn XLA"] = bench_sampler.tensorflow_call(
                    sample, arrays, out_size, mode, True)
            elif backend == "jax":
                calls["stn jax"] = jax_call(arrays, out_size, mode)
            else:
                calls["stn torch"] = torch_stn_call(arrays, out_size, mode)
            seconds = timing.time_interleaved(calls, args.repeats)
            print(json.dumps({"shape": index, "mode": mode, "seconds": seconds,
                              "load": timing.load()}), flush=True)


def _check_against_torch(arrays, out_size):
    """keras_stn on this backend computes what torch computes (to 1e-4)."""
    import bench_sampler
    import keras
    import numpy as np
    import torch

    images, theta, _ = arrays
    ours = keras.ops.convert_to_numpy(bench_sampler.stn_sample(images, theta, *out_size))
    functional = torch.nn.functional
    size = (images.shape[0], images.shape[3]) + tuple(out_size)
    grid = functional.affine_grid(torch.from_numpy(theta.reshape(-1, 2, 3)), size,
                                  align_corners=False)
    theirs = functional.grid_sample(
        torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), grid,
        align_corners=False,
    ).numpy().transpose(0, 2, 3, 1)
    error = float(np.max(np.abs(np.asarray(ours) - theirs)))
    if error > 1e-4:
        raise AssertionError(f"keras_stn differs from torch by {error}")


def jax_call(arrays, out_size, mode):
    import bench_sampler
    import jax

    images, theta, upstream = (jax.numpy.asarray(a) for a in arrays)

    def forward(images, theta):
        return bench_sampler.stn_sample(images, theta, *out_size)

    if mode == "fwd":
        step = jax.jit(forward)

        def call():
            step(images, theta).block_until_ready()
    else:
        argnums = (0, 1) if mode == "fwd+bwd" else (1,)

        def forward_backward(images, theta, upstream):
            out, pullback = jax.vjp(lambda *a: forward(*a), images, theta)
            grads = pullback(upstream)
            return out, [grads[i] for i in argnums]

        step = jax.jit(forward_backward)

        def call():
            jax.block_until_ready(step(images, theta, upstream))

    return call


def torch_stn_call(arrays, out_size, mode):
    import bench_sampler
    import torch

    images, theta, upstream = (torch.from_numpy(a) for a in arrays)
    sources = {"fwd": [], "fwd+bwd": [images, theta], "fwd+bwd, grid only": [theta]}[mode]

    def call():
        if mode == "fwd":
            with torch.no_grad():
                bench_sampler.stn_sample(images, theta, *out_size)
            return
        for source in sources:
            source.requires_grad_(True)
        out = bench_sampler.stn_sample(images, theta, *out_size)
        torch.autograd.grad(out, sources, upstream)
        for source in sources:
            source.requires_grad_(False)

    return call


def main():
    sys.path.insert(0, HERE)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--shapes", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--modes", nargs="*", default=["fwd", "fwd+bwd", "fwd+bwd, grid only"])
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    rows = {}
    for backend in args.backends:
        command = [sys.executable, os.path.abspath(__file__), "--worker",
                   "--repeats", str(args.repeats), "--threads", str(args.threads),
                   "--shapes", *map(str, args.shapes), "--modes", *args.modes]
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode:
            raise SystemExit(f"{backend} worker failed:\n{result.stderr[-3000:]}")
        for line in result.stdout.splitlines():
            if line.startswith("{"):
                found = json.loads(line)
                row = rows.setdefault((found["shape"], found["mode"]), {})
                torch_s = found["seconds"].pop("torch")
                row.setdefault("torch", []).append(torch_s)
                for name, value in found["seconds"].items():
                    row[name] = (value, value / torch_s)
        print(f"{backend}: done ({found['load']})", flush=True)

    import bench_sampler
    import timing

    names = [n for n in ("stn graph", "stn fit graph", "stn XLA", "stn jax", "stn torch")
             if any(n in row for row in rows.values())]
    header = ["shape (B, H, W, C -> out)", "mode", "torch (median of runs)"] + names
    table = []
    for (index, mode), row in rows.items():
        b, h, w, c, oh, ow = bench_sampler.SHAPES[index]
        torch_ms = sorted(row["torch"])[len(row["torch"]) // 2] * 1000
        line = [f"{b}, {h}x{w}x{c} -> {oh}x{ow}", mode, f"{torch_ms:.2f}"]
        for name in names:
            value, ratio = row.get(name, (float("nan"), float("nan")))
            line.append(f"{1000 * value:.2f} ({ratio:.2f}x)")
        table.append(line)
    print("ms per call (ratio to torch's grid_sample timed in the same process)\n")
    print(timing.markdown_table(header, table))


if __name__ == "__main__":
    main()
