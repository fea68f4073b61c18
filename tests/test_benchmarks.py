"""The benchmark scripts time what they say they time (no timing here)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests import testing

BENCH = testing.load_script(os.path.join(testing.ROOT, "benchmarks", "bench_sampler.py"))


@pytest.mark.parametrize("shape", [(3, 9, 11, 2, 7, 8), (2, 5, 6, 7, 3, 4, 5, 6)],
                         ids=["images", "volumes"])
def test_the_reads_floor_reads_what_the_sampler_reads(shape):
    # `reads graph` claims to be the part of keras_stn's op-by-op forward pass that
    # no gather-based sampler can skip: the same taps, blended the same way.
    images, theta, _ = BENCH.inputs(shape)
    out_size = BENCH.split(shape)[3]
    expected = np.asarray(BENCH.stn_sample(tf.constant(images), tf.constant(theta), *out_size))
    assert np.abs(expected).max() > 0.1 and (expected == 0).any()  # inside and outside
    reads = BENCH.gather_reads(*BENCH.tap_reads((images, theta, None), out_size))
    np.testing.assert_allclose(np.asarray(reads), expected, atol=1e-5)
