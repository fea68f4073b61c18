"""pytest configuration shared by the test suite.

The package targets Keras 3 on TensorFlow; pin the backend before anything imports
Keras, and keep TensorFlow's start-up chatter out of the test log.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    """A fresh, seeded NumPy generator: every test draws the same numbers every run."""
    return np.random.default_rng(20150605)
