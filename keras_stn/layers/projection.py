import keras

from keras_stn import _checks
from keras_stn.ops import projection


@keras.saving.register_keras_serializable(package="keras_stn")
class DepthProjection(keras.layers.Layer):
    """Flattens volumes to images along their depth (the paper's 3-D to 2-D step).

    A thin layer over `keras_stn.ops.project_depth`. Put it after a volumetric
    `SpatialTransformer` (`"affine3d"`, ...) to hand a 2-D network the volume as seen
    from the viewpoint the transformer learned: the transformer turns the volume,
    the projection sums it along the depth, the 2-D network reads the result. No
    weights; the depth may be unknown.

    Reference: Jaderberg et al., Spatial Transformer Networks, NIPS 2015,
    appendix A.3 (3-D transformers, projected to 2-D).

    Args:
        reduction: `"sum"` (the paper's), `"mean"` or `"max"`.
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.

    Call arguments:
        inputs: a batch of volumes.

    Input shape:
        `(batch, depth, height, width, channels)` (channels last) or `(batch,
        channels, depth, height, width)`.

    Output shape:
        `(batch, height, width, channels)` (channels last) or `(batch, channels,
        height, width)`.

    Example:
    >>> import keras, numpy as np
    >>> import keras_stn
    >>> model = keras.Sequential([
    ...     keras.Input((16, 16, 16, 1)),
    ...     keras_stn.SpatialTransformer("affine3d", output_size=(8, 12, 12)),
    ...     keras_stn.DepthProjection("sum"),
    ... ])
    >>> model.output_shape
    (None, 12, 12, 1)
    """

    def __init__(self, reduction="sum", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.reduction = _checks.check_choice("reduction", reduction, projection.REDUCTIONS)
        self.data_format = _checks.check_data_format(data_format)

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(
                "`inputs` must be a rank-5 batch of volumes (batch, depth, height, width, "
                "channels) (channels last) or (batch, channels, depth, height, width). "
                f"Received: inputs with shape {tuple(input_shape)}"
            )

    def call(self, inputs):
        return projection.project_depth(inputs, self.reduction, self.data_format)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if self.data_format == "channels_first":
            return shape[:2] + shape[3:]
        return shape[:1] + shape[2:]

    def get_config(self):
        return {
            **super().get_config(),
            "reduction": self.reduction,
            "data_format": self.data_format,
        }
