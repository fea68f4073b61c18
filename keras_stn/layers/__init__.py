"""Keras layers over the ops: thin shells that hold configuration and weights."""

from keras_stn.layers.grid_generator import GridGenerator
from keras_stn.layers.sampler import Sampler

__all__ = ["GridGenerator", "Sampler"]
