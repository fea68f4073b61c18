"""keras_stn: Spatial Transformer Networks as Keras 3 layers.

Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer Networks",
NIPS 2015, arXiv:1506.02025.

`keras_stn.datasets` (tf.data pipelines) is imported on first use, so that
`import keras_stn` does not import TensorFlow on the JAX and PyTorch backends; for the
same reason it is not in `__all__` (`from keras_stn import *` leaves it out).
"""

import importlib

from keras_stn import initializers
from keras_stn import ops
from keras_stn import transforms
from keras_stn import visualize
from keras_stn.layers import DepthProjection
from keras_stn.layers import GridGenerator
from keras_stn.layers import Sampler
from keras_stn.layers import SpatialTransformer

__version__ = "0.2.0"

__all__ = [
    "DepthProjection",
    "GridGenerator",
    "Sampler",
    "SpatialTransformer",
    "initializers",
    "ops",
    "transforms",
    "visualize",
]


def __getattr__(name):
    if name == "datasets":
        return importlib.import_module("keras_stn.datasets")
    raise AttributeError(f"module 'keras_stn' has no attribute {name!r}")
