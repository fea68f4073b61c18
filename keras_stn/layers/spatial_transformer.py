import math

import keras

from keras_stn import _checks
from keras_stn import initializers
from keras_stn import transforms
from keras_stn.ops import sampling


@keras.saving.register_keras_serializable(package="keras_stn")
class SpatialTransformer(keras.layers.Layer):
    """A spatial transformer: localise, generate a grid, sample.

    A localisation network looks at its input and regresses the parameters theta of
    a spatial transform; the transform family turns theta into a sampling grid; the
    sampler reads the input along that grid. The localisation network always ends in
    this layer's own regression head, a Dense layer with a zero kernel and a bias
    set to the family's identity, so a new layer is the exact identity (same-size
    output equals input) and training moves it from there. The head runs in float32
    under mixed precision: theta is a coordinate.

    Reference: Jaderberg, Simonyan, Zisserman, Kavukcuoglu, Spatial Transformer
    Networks, NIPS 2015 (arXiv:1506.02025).

    Args:
        transform: a family name (`"translation"`, `"attention"`, `"similarity"`,
            `"affine"`, `"projective"`, `"tps"`) or a `keras_stn.transforms.Transform`.
        output_size: `(out_height, out_width)`; `None` keeps the input's size.
        localisation: `None` for the default network (after the paper's ST-CNN:
            conv 20 5x5, max-pool 2, conv 20 5x5, dense 20, preceded by a max-pool
            on inputs larger than 64 px), or any Keras layer or model mapping the
            localised input to `(batch, features)`.
        interpolation: `"bilinear"` or `"nearest"`.
        padding_mode: `"zeros"`, `"border"` or `"reflection"`.
        align_corners: the frame convention of `keras_stn.ops.sample`.
        return_transform: if `True`, the layer returns `(output, theta)`.
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.

    Call arguments:
        inputs: one image tensor, localised and sampled; or a list
            `[to_sample, to_localise]`: theta is computed from `to_localise` (a
            downsampled copy, a feature map) and `to_sample` is sampled.

    Input shape:
        `(batch, height, width, channels)` (channels last), height and width known.

    Output shape:
        `(batch, out_height, out_width, channels)`; with `return_transform=True`,
        also theta `(batch, num_params)`, float32.

    Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((28, 28, 1)), SpatialTransformer()])
    >>> images = np.random.rand(2, 28, 28, 1).astype("float32")
    >>> bool(np.all(model(images) == images))
    True
    """

    def __init__(
        self,
        transform="affine",
        output_size=None,
        localisation=None,
        interpolation="bilinear",
        padding_mode="zeros",
        align_corners=False,
        return_transform=False,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.transform = transforms.get(transform)
        self.output_size = (
            None if output_size is None else _checks.check_output_size(output_size)
        )
        if isinstance(localisation, dict):
            localisation = keras.saving.deserialize_keras_object(localisation)
        if localisation is not None and not isinstance(localisation, keras.layers.Layer):
            raise ValueError(
                "`localisation` must be None or a Keras layer or model. "
                f"Received: localisation={localisation!r}"
            )
        self.localisation = localisation
        self._default_localisation = localisation is None
        self.interpolation = _checks.check_choice(
            "interpolation", interpolation, sampling.INTERPOLATIONS
        )
        self.padding_mode = _checks.check_choice(
            "padding_mode", padding_mode, sampling.PADDING_MODES
        )
        self.align_corners = bool(align_corners)
        self.return_transform = bool(return_transform)
        self.data_format = _checks.check_data_format(data_format)

    def build(self, input_shape):
        sample_shape, localise_shape = self._split(input_shape)
        height, width = self._spatial(sample_shape)
        if self.output_size is None and (height is None or width is None):
            raise ValueError(
                "`output_size` is needed when the input's height and width are not "
                f"known. Received: input shape {tuple(sample_shape)}"
            )
        self._sample_size = self.output_size or (height, width)
        if self.localisation is None:
            self.localisation = default_localisation(
                localise_shape, self.data_format, self.dtype_policy
            )
        if not self.localisation.built:
            self.localisation.build(localise_shape)
        features = self.localisation.compute_output_spec(
            keras.KerasTensor(localise_shape, dtype=self.compute_dtype)
        )
        shape = getattr(features, "shape", features)
        if (
            not isinstance(features, keras.KerasTensor)
            or len(shape) != 2
            or shape[1] is None
            or (None not in (shape[0], localise_shape[0]) and shape[0] != localise_shape[0])
        ):
            raise ValueError(
                "`localisation` must map the input to (batch, features), one row per "
                f"image. Received: localisation output shape {shape} for input shape "
                f"{tuple(localise_shape)}"
            )
        self.regressor = keras.layers.Dense(
            self.transform.num_params,
            kernel_initializer="zeros",
            bias_initializer=initializers.TransformIdentity(self.transform),
            dtype="float32",
            name="regressor",
        )
        self.regressor.build(features.shape)

    def call(self, inputs):
        output, _, theta = self.sample_with_grid(inputs)
        if self.return_transform:
            return output, theta
        return output

    def sample_with_grid(self, inputs):
        """The layer's output on `inputs`, with the grid and the theta behind it.

        What `call` computes, with its intermediate results: for drawing the sampling
        grid over the inputs (`keras_stn.visualize`) or inspecting theta. The layer
        must be built (called once).

        Returns:
            `(output, grid, theta)`: the output as `call` returns it, the
            `(batch, out_height, out_width, 2)` sampling grid and the
            `(batch, num_params)` theta (float32).

        Example:
        >>> import numpy as np
        >>> import keras_stn
        >>> layer = keras_stn.SpatialTransformer(output_size=(8, 8))
        >>> images = np.zeros((2, 16, 16, 1), "float32")
        >>> _ = layer(images)
        >>> output, grid, theta = layer.sample_with_grid(images)
        >>> tuple(output.shape), tuple(grid.shape), tuple(theta.shape)
        ((2, 8, 8, 1), (2, 8, 8, 2), (2, 6))
        """
        to_sample, to_localise = self._split(inputs)
        theta = self.regressor(self.localisation(to_localise))
        grid = self.transform.grid(theta, self._sample_size, self.align_corners)
        output = sampling.sample(
            to_sample,
            grid,
            interpolation=self.interpolation,
            padding_mode=self.padding_mode,
            align_corners=self.align_corners,
            data_format=self.data_format,
        )
        return output, grid, theta

    def compute_output_shape(self, input_shape):
        sample_shape, localise_shape = self._split(input_shape)
        out_height, out_width = self.output_size or self._spatial(sample_shape)
        if self.data_format == "channels_first":
            shape = (sample_shape[0], sample_shape[1], out_height, out_width)
        else:
            shape = (sample_shape[0], out_height, out_width, sample_shape[3])
        if self.return_transform:
            return shape, (localise_shape[0], self.transform.num_params)
        return shape

    def compute_output_spec(self, inputs):
        sample_spec, localise_spec = self._split(inputs)
        shapes = self.compute_output_shape(
            [sample_spec.shape, localise_spec.shape] if isinstance(inputs, (list, tuple))
            else sample_spec.shape
        )
        if self.return_transform:
            return (
                keras.KerasTensor(shapes[0], dtype=self.compute_dtype),
                keras.KerasTensor(shapes[1], dtype="float32"),
            )
        return keras.KerasTensor(shapes, dtype=self.compute_dtype)

    def get_config(self):
        localisation = None if self._default_localisation else self.localisation
        return {
            **super().get_config(),
            "transform": transforms.serialize(self.transform),
            "output_size": None if self.output_size is None else list(self.output_size),
            "localisation": (
                None
                if localisation is None
                else keras.saving.serialize_keras_object(localisation)
            ),
            "interpolation": self.interpolation,
            "padding_mode": self.padding_mode,
            "align_corners": self.align_corners,
            "return_transform": self.return_transform,
            "data_format": self.data_format,
        }

    def _spatial(self, shape):
        if self.data_format == "channels_first":
            return shape[2], shape[3]
        return shape[1], shape[2]

    def _split(self, inputs):
        """`inputs` or `[to_sample, to_localise]` (tensors or shapes) -> the pair."""
        pair = isinstance(inputs, (list, tuple)) and not _is_shape(inputs)
        if pair and len(inputs) != 2:
            raise ValueError(
                "`inputs` must be one image tensor or a list [to_sample, to_localise]. "
                f"Received: a list of {len(inputs)} tensors"
            )
        to_sample, to_localise = inputs if pair else (inputs, inputs)
        names = ("to_sample", "to_localise") if pair else ("inputs", "inputs")
        shapes = [tuple(v) if _is_shape(v) else tuple(v.shape) for v in (to_sample, to_localise)]
        for name, shape in zip(names, shapes):
            if len(shape) != 4:
                raise ValueError(
                    f"`{name}` must be a rank-4 batch of images. "
                    f"Received: {name} with shape {shape}"
                )
        batches = (shapes[0][0], shapes[1][0])
        if None not in batches and batches[0] != batches[1]:
            raise ValueError(
                "`to_sample` and `to_localise` must have the same batch size. "
                f"Received: to_sample with shape {shapes[0]}, to_localise with shape "
                f"{shapes[1]}"
            )
        return to_sample, to_localise


def _is_shape(value):
    return isinstance(value, (list, tuple)) and all(
        d is None or isinstance(d, int) for d in value
    )


def default_localisation(input_shape, data_format="channels_last", dtype=None):
    """The default localisation network for inputs of `input_shape`.

    After the paper's ST-CNN localisation network: conv 20 5x5, max-pool 2, conv 20
    5x5, dense 20 (ReLU), with `"same"` padding so any size fits, and a max-pool
    first that brings inputs larger than 64 px down to at most 64 px. It works
    channels last (a `channels_first` input is permuted first): TensorFlow's CPU
    convolution refuses float16 `channels_first` images.

    Example:
    >>> net = default_localisation((None, 28, 28, 1))
    >>> tuple(net.compute_output_shape((None, 28, 28, 1)))
    (None, 20)
    """
    layers = []
    if data_format == "channels_first":
        layers.append(keras.layers.Permute((2, 3, 1), name="channels_last", dtype=dtype))
        height, width = input_shape[2], input_shape[3]
    else:
        height, width = input_shape[1], input_shape[2]
    largest = max(height or 1, width or 1)
    first_pool = max(1, math.ceil(largest / 64))
    common = dict(data_format="channels_last", dtype=dtype)
    if first_pool > 1:
        layers.append(keras.layers.MaxPooling2D(first_pool, name="downsample", **common))
    layers += [
        keras.layers.Conv2D(20, 5, padding="same", activation="relu", name="conv1", **common),
        keras.layers.MaxPooling2D(2, padding="same", name="pool1", **common),
        keras.layers.Conv2D(20, 5, padding="same", activation="relu", name="conv2", **common),
        keras.layers.Flatten(name="flatten", **common),
        keras.layers.Dense(20, activation="relu", name="dense", dtype=dtype),
    ]
    return keras.Sequential(layers, name="localisation")
