"""Stateless spatial-transformer math on `keras.ops`: grids, the sampler, and the
projection of volumes to images."""

from keras_stn.ops.grids import affine_grid
from keras_stn.ops.grids import projective_grid
from keras_stn.ops.grids import target_coordinates
from keras_stn.ops.grids import tps_grid
from keras_stn.ops.projection import project_depth
from keras_stn.ops.sampling import sample
from keras_stn.ops.sampling import sample_compiled
from keras_stn.ops.sampling import validity_mask

__all__ = [
    "affine_grid",
    "project_depth",
    "projective_grid",
    "sample",
    "sample_compiled",
    "target_coordinates",
    "tps_grid",
    "validity_mask",
]
