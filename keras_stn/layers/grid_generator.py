import keras

from keras_stn import _checks
from keras_stn import transforms


@keras.saving.register_keras_serializable(package="keras_stn")
class GridGenerator(keras.layers.Layer):
    """Turns transform parameters theta into a sampling grid (the paper's T_theta(G)).

    The family decides what theta means: `"affine"` (6 parameters), `"tps"` (32 for
    the default 4x4 control points), ... see `keras_stn.transforms`. The grid is
    computed and returned in float32 (float64 for float64 theta), also under a mixed
    precision policy: coordinates need the precision.

    Reference: Jaderberg et al., Spatial Transformer Networks, NIPS 2015, sec. 3.2.

    Args:
        transform: a family name or a `keras_stn.transforms.Transform`.
        output_size: `(out_height, out_width)`, Python ints; `(out_depth,
            out_height, out_width)` for a volume family (`"affine3d"`, ...).
        align_corners: the frame convention of `keras_stn.ops.sample`.

    Call arguments:
        theta: `(batch, num_params)`.

    Input shape:
        `(batch, num_params)`.

    Output shape:
        `(batch, out_height, out_width, 2)`, last axis `(x, y)`; for a volume
        family `(batch, out_depth, out_height, out_width, 3)`, last axis `(x, y, z)`.

    Example:
    >>> import numpy as np
    >>> layer = GridGenerator("attention", output_size=(3, 5))
    >>> tuple(layer(np.array([[0.5, 0.0, 0.0]], "float32")).shape)
    (1, 3, 5, 2)
    """

    def __init__(self, transform="affine", output_size=None, align_corners=False, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.transform = transforms.get(transform)
        self.output_size = _checks.check_output_size(output_size, ranks=(self.transform.rank,))
        self.align_corners = bool(align_corners)

    def call(self, theta):
        return self.transform.grid(theta, self.output_size, self.align_corners)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, self.transform.rank)

    def compute_output_spec(self, theta):
        float64 = keras.backend.standardize_dtype(theta.dtype) == "float64"
        dtype = "float64" if float64 else "float32"
        return keras.KerasTensor(self.compute_output_shape(theta.shape), dtype=dtype)

    @classmethod
    def from_config(cls, config):
        # A saved family goes through `from_saved`: "projective" saved by 0.1.0 was
        # the matrix form.
        config = dict(config, transform=transforms.from_saved(config["transform"]))
        return super().from_config(config)

    def get_config(self):
        return {
            **super().get_config(),
            "transform": transforms.serialize(self.transform),
            "output_size": list(self.output_size),
            "align_corners": self.align_corners,
        }
