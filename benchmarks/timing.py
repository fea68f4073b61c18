"""Shared helpers of the benchmark scripts: interleaved timing and the machine."""

import functools
import os
import platform
import statistics
import sys
import time

import tensorflow as tf


def set_threads(threads):
    """Gives TensorFlow (and torch, when imported) `threads` threads; 0 keeps defaults."""
    if not threads:
        return
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def load():
    """The machine's load averages: other processes make every figure noisier."""
    if not hasattr(os, "getloadavg"):
        return "load average unknown"
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


@functools.cache
def gpus():
    return tuple(tf.config.list_physical_devices("GPU"))


def sync_tensorflow():
    """Waits for queued TensorFlow work (a no-op cost on a CPU-only machine)."""
    if gpus():
        tf.test.experimental.sync_devices()


def time_interleaved(callables, repeats, budget_s=20.0, block=4):
    """Median seconds of each callable, taken in turn in blocks, round after round.

    Every callable is called twice first (tracing, compilation, first-touch
    allocation); neither call is timed. Then, round after round, each callable is
    called `block` times in a row and all but the first of those calls are timed: the
    first wakes the library's worker threads, which the other library's calls have
    let fall asleep, as they would not in a loop of one library's calls. Rounds
    share out slow drifts in the machine's load among the callables. A callable whose
    warm call took longer than `budget_s / repeats` gets fewer timed calls (at least
    3), so a slow method does not hold up the whole run.
    """
    counts = {}
    for name, function in callables.items():
        function()
        start = time.perf_counter()
        function()
        warm = time.perf_counter() - start
        counts[name] = max(3, min(repeats, int(budget_s / max(warm, 1e-9))))
    times = {name: [] for name in callables}
    timed_per_round = max(1, block - 1)
    while any(len(times[name]) < counts[name] for name in callables):
        for name, function in callables.items():
            if len(times[name]) >= counts[name]:
                continue
            if block > 1:
                function()
            for _ in range(min(timed_per_round, counts[name] - len(times[name]))):
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def machine():
    """One line naming the machine, the accelerator and the library versions."""
    import keras

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    devices = gpus()
    if devices:
        details = tf.config.experimental.get_device_details(devices[0])
        accelerator = f"GPU {details.get('device_name', devices[0].name)}"
    else:
        accelerator = "no GPU"
    versions = f"tensorflow {tf.__version__}, keras {keras.__version__}"
    try:
        import torch

        versions += f", torch {torch.__version__}"
    except ImportError:
        pass
    return f"{cpu}, {cores} cores, {accelerator}; {versions}; Python {platform.python_version()}"


def markdown_table(header, rows):
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join(
        [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        + [line(row) for row in rows]
    )
