"""Keras layers over the ops: thin shells that hold configuration and weights."""

from keras_stn.layers.grid_generator import GridGenerator
from keras_stn.layers.projection import DepthProjection
from keras_stn.layers.sampler import Sampler
from keras_stn.layers.spatial_transformer import SpatialTransformer
from keras_stn.layers.spatial_transformer import default_localisation

__all__ = [
    "DepthProjection",
    "GridGenerator",
    "Sampler",
    "SpatialTransformer",
    "default_localisation",
]
