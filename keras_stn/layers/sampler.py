import keras

from keras_stn import _checks
from keras_stn.ops import sampling


@keras.saving.register_keras_serializable(package="keras_stn")
class Sampler(keras.layers.Layer):
    """Reads images at the points of a sampling grid (the paper's sampler).

    A thin layer over `keras_stn.ops.sample`: bilinear (the paper's kernel) or
    nearest interpolation, zeros / border / reflection padding, differentiable with
    respect to the images and the grid; on volumes too (trilinear). The grid is
    kept in float32 under a mixed precision policy; the output is in the layer's
    compute dtype.

    Reference: Jaderberg et al., Spatial Transformer Networks, NIPS 2015, sec. 3.3.

    Args:
        interpolation: `"bilinear"` or `"nearest"`.
        padding_mode: `"zeros"`, `"constant"`, `"border"` or `"reflection"`.
        align_corners: whether -1 and +1 are the centres of the corner pixels
            (default `False`: their outer edges).
        fill_value: what `padding_mode="constant"` reads outside the image: a
            number, or one per channel.
        antialias: average over each output pixel's footprint where the grid
            shrinks the image (bilinear only; see `keras_stn.ops.sample`).
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.

    Call arguments:
        inputs: a list `[images, grid]`.
        training: while training, on TensorFlow, the sampler runs compiled with
            XLA (`keras_stn.ops.sample_compiled`), also when the model is not.

    Input shape:
        images `(batch, height, width, channels)` (channels last), grid
        `(batch, out_height, out_width, 2)`; or volumes `(batch, depth, height,
        width, channels)`, grid `(batch, out_depth, out_height, out_width, 3)`.

    Output shape:
        `(batch, out_height, out_width, channels)` (channels last), or
        `(batch, out_depth, out_height, out_width, channels)`.

    Example:
    >>> import numpy as np
    >>> from keras_stn import ops
    >>> images = np.random.rand(2, 8, 8, 3).astype("float32")
    >>> grid = ops.affine_grid(np.tile([[1, 0, 0, 0, 1, 0]], (2, 1)).astype("float32"), (4, 4))
    >>> tuple(Sampler()([images, grid]).shape)
    (2, 4, 4, 3)
    """

    def __init__(
        self,
        interpolation="bilinear",
        padding_mode="zeros",
        align_corners=False,
        data_format=None,
        fill_value=0.0,
        antialias=False,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.interpolation = _checks.check_choice(
            "interpolation", interpolation, sampling.INTERPOLATIONS
        )
        self.padding_mode = _checks.check_choice(
            "padding_mode", padding_mode, sampling.PADDING_MODES
        )
        self.align_corners = bool(align_corners)
        self.data_format = _checks.check_data_format(data_format)
        # Checked against the channels when called.
        self.fill_value = sampling.fill_value_config(fill_value, self.padding_mode)
        self.antialias = sampling.check_antialias(antialias, self.interpolation)

    def call(self, inputs, training=None):
        images, grid = _unpack_pair(inputs)
        if _checks.is_float(images.dtype):
            images = keras.ops.cast(images, self.compute_dtype)
        # While training, compiled with XLA on TensorFlow (see `sample_compiled`).
        read = sampling.sample_compiled if training else sampling.sample
        return read(
            images,
            grid,
            interpolation=self.interpolation,
            padding_mode=self.padding_mode,
            align_corners=self.align_corners,
            data_format=self.data_format,
            fill_value=self.fill_value,
            antialias=self.antialias,
        )

    def compute_output_shape(self, input_shape):
        images_shape, grid_shape = _unpack_pair(input_shape)
        batch, out_sizes = grid_shape[0], tuple(grid_shape[1:-1])
        if self.data_format == "channels_first":
            return (batch, images_shape[1], *out_sizes)
        return (batch, *out_sizes, images_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "interpolation": self.interpolation,
            "padding_mode": self.padding_mode,
            "align_corners": self.align_corners,
            "data_format": self.data_format,
            "fill_value": self.fill_value,
            "antialias": self.antialias,
        }


def _unpack_pair(inputs):
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise ValueError(
            "`inputs` must be a list of two tensors, [images, grid]. "
            f"Received: inputs={inputs!r}"
        )
    return inputs
