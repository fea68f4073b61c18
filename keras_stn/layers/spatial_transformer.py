import inspect
import math
import numbers

import keras

from keras_stn import _checks
from keras_stn import initializers
from keras_stn import transforms
from keras_stn.ops import sampling

INITIAL_TRANSFORMS = ("identity", "tiles")
# Inputs of unknown height or width are resized to this size for the default
# localisation network.
LOCALISATION_SIZE = 64


@keras.saving.register_keras_serializable(package="keras_stn")
class SpatialTransformer(keras.layers.Layer):
    """A spatial transformer: localise, generate a grid, sample.

    A localisation network looks at its input and regresses the parameters theta of
    a spatial transform; the transform family turns theta into a sampling grid; the
    sampler reads the input along that grid. The localisation network always ends in
    this layer's own regression head, a Dense layer with a zero kernel and a bias
    set to the family's identity, so a new layer is the exact identity (same-size
    output equals input) and training moves it from there. The head runs in float32
    under mixed precision: theta is a coordinate. Works on images (rank 4) with the
    2-D families and on volumes (rank 5) with the 3-D ones (`"affine3d"`, ...).

    Reference: Jaderberg, Simonyan, Zisserman, Kavukcuoglu, Spatial Transformer
    Networks, NIPS 2015 (arXiv:1506.02025).

    Args:
        transform: a family name (`"translation"`, `"attention"`, `"similarity"`,
            `"affine"`, `"projective"`, `"tps"`; for volumes `"translation3d"`,
            `"attention3d"`, `"affine3d"`) or a `keras_stn.transforms.Transform`.
        output_size: `(out_height, out_width)` (`(out_depth, out_height,
            out_width)` for volumes); `None` keeps the input's size.
        localisation: `None` for the default network (after the paper's ST-CNN:
            conv 20 5x5, max-pool 2, conv 20 5x5, dense 20, preceded by a max-pool
            on inputs larger than 64 px, or by a resize to 64x64 when the input's
            size is unknown; 3-D convolutions on volumes), or any Keras layer or
            model mapping the localised input to `(batch, features)`.
        interpolation: `"bilinear"` or `"nearest"`.
        padding_mode: `"zeros"`, `"constant"`, `"border"` or `"reflection"`.
        align_corners: the frame convention of `keras_stn.ops.sample`.
        fill_value: what `padding_mode="constant"` reads outside the input: a
            number, or one per channel (inputs normalised to mean 0 read their mean
            instead of a visible frame of zeros).
        antialias: average over each output pixel's footprint where the grid
            shrinks the input (`keras_stn.ops.sample`); plain bilinear elsewhere.
        num_transformers: N transformers from one localisation network and head:
            the outputs are concatenated along the channel axis (block k is
            transformer k).
        initial_transform: `"identity"` (every transformer starts as the
            identity) or `"tiles"` (transformer k starts on tile k of the input,
            `keras_stn.initializers.TransformTiles`; on volumes the tiles cut x and
            y and keep the depth).
        learning_rate_multiplier: the localisation network and head learn this
            many times as fast as the rest of the model, with any optimizer (the
            paper uses 0.1 on SVHN): each weight `w` is stored as
            `a + (w - a) / multiplier` (`a` is the head bias's initial value, 0
            elsewhere) and read back times the multiplier, with the gradient of
            `w`, so an optimizer's step on the stored weight moves `w` that many
            times as far. Weight decay and regularisers see the stored weights.
        identity_penalty: adds `identity_penalty * mean over the batch of
            sum((theta - theta_0) ** 2)` to the model's losses, `theta_0` being the
            initial transform: it pulls theta back towards where it started.
        warmup_steps: for its first `warmup_steps` training calls the transformer
            holds still: the localisation network and head get no gradient, so the
            layers after it learn on the view it starts with before it moves (a
            localiser that moves while they are still random can walk off what
            matters and never come back). The calls are counted in a non-trainable
            variable, `training_calls`, saved with the model.
        return_transform: if `True`, the layer also returns theta.
        return_mask: if `True`, the layer also returns how much of each output
            pixel was read from inside the input (`keras_stn.ops.validity_mask`),
            one channel per transformer.
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.

    Call arguments:
        inputs: one image tensor, localised and sampled; or a list
            `[to_sample, to_localise]`: theta is computed from `to_localise` (a
            downsampled copy, a feature map) and `to_sample` is sampled.
        training: passed to the localisation network; while training, on
            TensorFlow, the sampler runs compiled with XLA
            (`keras_stn.ops.sample_compiled`), also when the model is not.

    Input shape:
        `(batch, height, width, channels)` (channels last) or `(batch, depth,
        height, width, channels)`; height and width may be unknown (`None`) when
        `output_size` is given.

    Output shape:
        `(batch, out_height, out_width, num_transformers * channels)`; with
        `return_transform=True`, then theta `(batch, num_params)` (`(batch,
        num_transformers, num_params)` for several), float32; with
        `return_mask=True`, then the mask `(batch, out_height, out_width,
        num_transformers)`.

    Example:
    >>> import keras, numpy as np
    >>> from keras_stn import SpatialTransformer
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
        fill_value=0.0,
        antialias=False,
        num_transformers=1,
        initial_transform="identity",
        learning_rate_multiplier=1.0,
        identity_penalty=0.0,
        warmup_steps=0,
        return_transform=False,
        return_mask=False,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.transform = transforms.get(transform)
        self.output_size = (
            None
            if output_size is None
            else _checks.check_output_size(output_size, ranks=(self.transform.rank,))
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
        self.align_corners = _checks.check_bool("align_corners", align_corners)
        # Checked against the channels in build.
        self.fill_value = sampling.fill_value_config(fill_value, self.padding_mode)
        self.antialias = sampling.check_antialias(antialias, self.interpolation)
        self.num_transformers = _checks.check_positive_int("num_transformers", num_transformers)
        self.initial_transform = _checks.check_choice(
            "initial_transform", initial_transform, INITIAL_TRANSFORMS
        )
        self.learning_rate_multiplier = _checks.check_positive_float(
            "learning_rate_multiplier", learning_rate_multiplier
        )
        self.identity_penalty = _checks.check_non_negative_float(
            "identity_penalty", identity_penalty
        )
        self.warmup_steps = _checks.check_non_negative_int("warmup_steps", warmup_steps)
        self.return_transform = _checks.check_bool("return_transform", return_transform)
        self.return_mask = _checks.check_bool("return_mask", return_mask)
        self.data_format = _checks.check_data_format(data_format)

    @property
    def rank(self):
        """2 for images, 3 for volumes: the transform family's spatial rank."""
        return self.transform.rank

    def build(self, input_shape):
        sample_shape, localise_shape = self._split(input_shape)
        sizes = self._spatial(sample_shape)
        if self.output_size is None and None in sizes:
            raise ValueError(
                "`output_size` is needed when the input's spatial sizes are not "
                f"known. Received: input shape {tuple(sample_shape)}"
            )
        self._sample_size = self.output_size or tuple(sizes)
        channels = sample_shape[1] if self.data_format == "channels_first" else sample_shape[-1]
        self._fill = sampling._check_fill_value(self.fill_value, self.padding_mode, channels)
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
        count = self.num_transformers
        if self.initial_transform == "tiles":
            bias = initializers.TransformTiles(self.transform, count)
        else:
            bias = initializers.TransformIdentity(self.transform, count)
        self.regressor = keras.layers.Dense(
            count * self.transform.num_params,
            kernel_initializer="zeros",
            bias_initializer=bias,
            dtype="float32",
            name="regressor",
        )
        self.regressor.build(features.shape)
        self._initial_theta = bias.parameters().reshape(-1).astype("float32")
        self._store_scaled_weights()
        if self.warmup_steps:
            self.training_calls = self.add_weight(
                shape=(),
                dtype="int32",
                initializer="zeros",
                trainable=False,
                aggregation="only_first_replica",
                name="training_calls",
            )

    def call(self, inputs, training=None):
        output, grid, theta = self.sample_with_grid(inputs, training=training)
        if self.identity_penalty:
            initial = keras.ops.reshape(self._initial_theta, keras.ops.shape(theta)[1:])
            distance = keras.ops.sum(
                keras.ops.reshape((theta - initial) ** 2, (keras.ops.shape(theta)[0], -1)),
                axis=-1,
            )
            self.add_loss(self.identity_penalty * keras.ops.mean(distance))
        outputs = [output]
        if self.return_transform:
            outputs.append(theta)
        if self.return_mask:
            outputs.append(self._mask(inputs, grid))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def localise(self, inputs, training=None):
        """Theta for `inputs` (an image batch, or `[to_sample, to_localise]`).

        Returns:
            `(batch, num_params)` float32, or `(batch, num_transformers,
            num_params)` when `num_transformers > 1`.

        Example:
        >>> import numpy as np
        >>> import keras_stn
        >>> layer = keras_stn.SpatialTransformer("attention")
        >>> images = np.zeros((2, 16, 16, 1), "float32")
        >>> _ = layer(images)
        >>> keras.ops.convert_to_numpy(layer.localise(images)).tolist()
        [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
        """
        _, to_localise = self._split(inputs)
        multiplier = self.learning_rate_multiplier
        if multiplier == 1.0:
            theta = self.regressor(self._features(to_localise, training))
        else:
            features, updates = self.localisation.stateless_call(
                [_read_scaled(v, multiplier) for v in self.localisation.trainable_variables],
                [v.value for v in self.localisation.non_trainable_variables],
                keras.ops.cast(to_localise, self.localisation.compute_dtype),
                **self._training_kwargs(training),
            )
            for variable, value in zip(self.localisation.non_trainable_variables, updates):
                if value is not None:
                    variable.assign(value)
            kernel = _read_scaled(self.regressor.kernel, multiplier)
            bias = _read_scaled(self.regressor.bias, multiplier, self._initial_theta)
            features = keras.ops.cast(features, "float32")
            theta = keras.ops.matmul(features, kernel) + bias
        if self.warmup_steps and training:
            # The same theta; no gradient to the localiser while warming up.
            warming = keras.ops.less(self.training_calls.value, self.warmup_steps)
            theta = keras.ops.where(warming, keras.ops.stop_gradient(theta), theta)
            self.training_calls.assign_add(1)
        if self.num_transformers > 1:
            theta = keras.ops.reshape(theta, (-1, self.num_transformers, self.transform.num_params))
        return theta

    def sample_with_grid(self, inputs, training=None):
        """The layer's output on `inputs`, with the grid and the theta behind it.

        What `call` computes, with its intermediate results: for drawing the sampling
        grid over the inputs (`keras_stn.visualize`) or inspecting theta. The layer
        must be built (called once).

        Returns:
            `(output, grid, theta)`: the output as `call` returns it, the
            `(batch, out_height, out_width, 2)` sampling grid (with several
            transformers, `(batch, num_transformers, out_height, out_width, 2)`)
            and theta (see `localise`).

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
        to_sample, _ = self._split(inputs)
        theta = self.localise(inputs, training=training)
        thetas = [theta] if self.num_transformers == 1 else keras.ops.unstack(theta, axis=1)
        # While training, compiled with XLA on TensorFlow (see `sample_compiled`).
        read = sampling.sample_compiled if training else sampling.sample
        grids, outputs = [], []
        for single in thetas:
            grid = self.transform.grid(single, self._sample_size, self.align_corners)
            grids.append(grid)
            outputs.append(
                read(
                    to_sample,
                    grid,
                    interpolation=self.interpolation,
                    padding_mode=self.padding_mode,
                    align_corners=self.align_corners,
                    data_format=self.data_format,
                    fill_value=self._fill if self._fill is not None else 0.0,
                    antialias=self.antialias,
                )
            )
        if len(outputs) == 1:
            return outputs[0], grids[0], theta
        channel_axis = 1 if self.data_format == "channels_first" else -1
        output = keras.ops.concatenate(outputs, axis=channel_axis)
        return output, keras.ops.stack(grids, axis=1), theta

    def _mask(self, inputs, grid):
        to_sample, _ = self._split(inputs)
        sizes = self._spatial(tuple(to_sample.shape))
        if None in sizes:
            shape = keras.ops.shape(to_sample)
            first = 2 if self.data_format == "channels_first" else 1
            sizes = tuple(shape[first : first + self.rank])
        grids = [grid] if self.num_transformers == 1 else keras.ops.unstack(grid, axis=1)
        masks = [
            sampling.validity_mask(g, sizes, self.interpolation, self.align_corners)
            for g in grids
        ]
        mask = keras.ops.concatenate(masks, axis=-1) if len(masks) > 1 else masks[0]
        if self.data_format == "channels_first":
            mask = keras.ops.moveaxis(mask, -1, 1)
        return keras.ops.cast(mask, self.compute_dtype)

    def _features(self, to_localise, training):
        return self.localisation(to_localise, **self._training_kwargs(training))

    def _training_kwargs(self, training):
        if training is None:
            return {}
        parameters = inspect.signature(self.localisation.call).parameters
        accepts = "training" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )
        return {"training": training} if accepts else {}

    def _store_scaled_weights(self):
        """With a learning-rate multiplier m, stores each weight w as a + (w - a) / m."""
        multiplier = self.learning_rate_multiplier
        if multiplier == 1.0:
            return
        for variable in self.localisation.trainable_variables + [self.regressor.kernel]:
            variable.assign(variable / multiplier)
        # The bias keeps its initial value exactly: (b - a) / m = 0.

    def compute_output_shape(self, input_shape):
        sample_shape, localise_shape = self._split(input_shape)
        out_sizes = self.output_size or tuple(self._spatial(sample_shape))
        count = self.num_transformers
        if self.data_format == "channels_first":
            channels = sample_shape[1]
            channels = None if channels is None else count * channels
            shape = (sample_shape[0], channels, *out_sizes)
            mask_shape = (sample_shape[0], count, *out_sizes)
        else:
            channels = sample_shape[-1]
            channels = None if channels is None else count * channels
            shape = (sample_shape[0], *out_sizes, channels)
            mask_shape = (sample_shape[0], *out_sizes, count)
        shapes = [shape]
        if self.return_transform:
            per = (self.transform.num_params,) if count == 1 else (count, self.transform.num_params)
            shapes.append((localise_shape[0], *per))
        if self.return_mask:
            shapes.append(mask_shape)
        return shapes[0] if len(shapes) == 1 else tuple(shapes)

    def compute_output_spec(self, inputs, training=None):
        sample_spec, localise_spec = self._split(inputs)
        shapes = self.compute_output_shape(
            [sample_spec.shape, localise_spec.shape] if isinstance(inputs, (list, tuple))
            else sample_spec.shape
        )
        if not (self.return_transform or self.return_mask):
            return keras.KerasTensor(shapes, dtype=self.compute_dtype)
        dtypes = [self.compute_dtype]
        if self.return_transform:
            dtypes.append("float32")
        if self.return_mask:
            dtypes.append(self.compute_dtype)
        return tuple(keras.KerasTensor(s, dtype=d) for s, d in zip(shapes, dtypes))

    @classmethod
    def from_config(cls, config):
        # A saved family goes through `from_saved`: "projective" saved by 0.1.0 was
        # the matrix form.
        config = dict(config, transform=transforms.from_saved(config["transform"]))
        return super().from_config(config)

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
            "fill_value": self.fill_value,
            "antialias": self.antialias,
            "num_transformers": self.num_transformers,
            "initial_transform": self.initial_transform,
            "learning_rate_multiplier": self.learning_rate_multiplier,
            "identity_penalty": self.identity_penalty,
            "warmup_steps": self.warmup_steps,
            "return_transform": self.return_transform,
            "return_mask": self.return_mask,
            "data_format": self.data_format,
        }

    def _spatial(self, shape):
        if self.data_format == "channels_first":
            return tuple(shape[2:])
        return tuple(shape[1:-1])

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
        rank = self.rank + 2
        kind = "images" if self.rank == 2 else "volumes"
        for name, shape in zip(names, shapes):
            if len(shape) != rank:
                raise ValueError(
                    f"`{name}` must be a rank-{rank} batch of {kind} for the "
                    f"{self.transform.name!r} transform. Received: {name} with shape {shape}"
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
        d is None or isinstance(d, numbers.Integral) for d in value
    )


def _read_scaled(variable, multiplier, anchor=0.0):
    """`anchor + multiplier * (v - anchor)`, whose gradient with respect to `v` is that
    of the result (not `multiplier` times it): an optimizer's step on `v` then moves
    the result `multiplier` times as far, whatever the optimizer."""
    value = keras.ops.convert_to_tensor(variable)
    # A tensor, not a NumPy array: `array + torch tensor` fails on the torch backend.
    anchor = keras.ops.convert_to_tensor(anchor, dtype=value.dtype)
    offset = value - anchor
    return anchor + offset + keras.ops.stop_gradient((multiplier - 1.0) * offset)


def default_localisation(input_shape, data_format="channels_last", dtype=None):
    """The default localisation network for inputs of `input_shape`.

    After the paper's ST-CNN localisation network: conv 20 5x5, max-pool 2, conv 20
    5x5, dense 20 (ReLU), with `"same"` padding so any size fits, and a max-pool
    first that brings inputs larger than 64 px down to at most 64 px. Inputs of
    unknown height or width are first resized to 64x64 (bilinear).
    Volumes `(batch, depth, height, width, channels)` get the same network in 3-D,
    brought down to at most 32 voxels a side. It works channels last (a
    `channels_first` input is permuted first): TensorFlow's CPU convolution refuses
    float16 `channels_first` images.

    Example:
    >>> net = default_localisation((None, 28, 28, 1))
    >>> tuple(net.compute_output_shape((None, 28, 28, 1)))
    (None, 20)
    """
    rank = len(input_shape) - 2
    layers = []
    common = dict(data_format="channels_last", dtype=dtype)
    if data_format == "channels_first":
        layers.append(
            keras.layers.Permute(tuple(range(2, rank + 2)) + (1,), name="channels_last",
                                 dtype=dtype)
        )
        sizes = tuple(input_shape[2:])
    else:
        sizes = tuple(input_shape[1:-1])
    if rank == 2:
        conv, pool, largest = keras.layers.Conv2D, keras.layers.MaxPooling2D, 64
    else:
        conv, pool, largest = keras.layers.Conv3D, keras.layers.MaxPooling3D, 32
    if None in sizes:
        if rank != 2:
            raise ValueError(
                "The default localisation network needs the volumes' sizes; pass a "
                f"`localisation` network of your own. Received: input shape "
                f"{tuple(input_shape)}"
            )
        layers.append(
            # Plain bilinear: XLA cannot compile the anti-aliased resize of an image
            # whose size is unknown when the graph is traced.
            keras.layers.Resizing(LOCALISATION_SIZE, LOCALISATION_SIZE, name="resize",
                                  **common)
        )
        sizes = (LOCALISATION_SIZE,) * 2
    first_pool = max(1, math.ceil(max(sizes) / largest))
    if first_pool > 1:
        layers.append(pool(first_pool, name="downsample", **common))
    layers += [
        conv(20, 5, padding="same", activation="relu", name="conv1", **common),
        pool(2, padding="same", name="pool1", **common),
        conv(20, 5, padding="same", activation="relu", name="conv2", **common),
        keras.layers.Flatten(name="flatten", **common),
        keras.layers.Dense(20, activation="relu", name="dense", dtype=dtype),
    ]
    return keras.Sequential(layers, name="localisation")
