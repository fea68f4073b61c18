"""Initializers of the localisation network's regression head.

A head for `count` transformers is a Dense layer of `count * num_params` units with a
zero kernel: its bias is what every transformer starts from, whatever the input.
`TransformIdentity` starts them all on the identity; `TransformTiles` starts each on its
own tile of the image (`keras_stn.transforms.tile_parameters`).
"""

import keras
import numpy as np

from keras_stn import transforms


class _HeadBias(keras.initializers.Initializer):
    """A `(count * num_params,)` bias from `count` parameter vectors of a family."""

    def __init__(self, transform="affine", count=1):
        self.transform = transforms.get(transform)
        self.count = transforms._check_count(count)

    def parameters(self):
        """NumPy `(count, num_params)`: row k starts transformer k."""
        raise NotImplementedError

    def __call__(self, shape, dtype=None):
        expected = (self.count * self.transform.num_params,)
        if tuple(shape) != expected:
            raise ValueError(
                f"`shape` must be {expected}: {self.count} x {self.transform.num_params} "
                f"parameters of the {self.transform.name!r} transform. "
                f"Received: shape={tuple(shape)}"
            )
        return keras.ops.convert_to_tensor(self.parameters().reshape(-1), dtype=dtype)

    def get_config(self):
        return {"transform": transforms.serialize(self.transform), "count": self.count}


@keras.saving.register_keras_serializable(package="keras_stn")
class TransformIdentity(_HeadBias):
    """Fills a `(count * num_params,)` bias with `count` copies of a family's identity.

    With a zero kernel, a Dense layer that uses it as bias initializer outputs the
    identity transform for every input: a new spatial transformer starts as the
    exact identity. With `count` > 1 the head serves `count` transformers, all
    starting as the identity.

    Args:
        transform: a family name (`"affine"`, `"tps"`, ...) or a
            `keras_stn.transforms.Transform`.
        count: the number of transformers the head serves, a positive int.

    Example:
    >>> import keras
    >>> head = keras.layers.Dense(
    ...     6, kernel_initializer="zeros", bias_initializer=TransformIdentity("affine"))
    >>> head.build((None, 20))
    >>> keras.ops.convert_to_numpy(head.bias).tolist()
    [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    >>> keras.ops.convert_to_numpy(TransformIdentity("attention", count=2)((6,))).tolist()
    [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    """

    def parameters(self):
        return np.tile(self.transform.identity(), (self.count, 1))


@keras.saving.register_keras_serializable(package="keras_stn")
class TransformTiles(_HeadBias):
    """Fills a `(count * num_params,)` bias so that transformer k reads tile k.

    The image is cut into `keras_stn.transforms.tile_layout(count)` equal tiles, row
    by row from the top left, and transformer k starts on tile k, as closely as the
    family can express it (`keras_stn.transforms.tile_parameters`: exactly for affine,
    projective and TPS; the largest square inside the tile for attention and
    similarity; the tile's centre for translation). Transformers that start on
    different regions can learn different things, as the paper's CUB transformers do.
    With `count=1` it is the identity.

    Args:
        transform: a family name or a `keras_stn.transforms.Transform`.
        count: the number of transformers, a positive int.

    Example:
    >>> import keras
    >>> bias = TransformTiles("affine", count=2)((12,))   # left half, right half
    >>> keras.ops.convert_to_numpy(bias).reshape(2, 6).tolist()
    [[0.5, 0.0, -0.5, 0.0, 1.0, 0.0], [0.5, 0.0, 0.5, 0.0, 1.0, 0.0]]
    """

    def __init__(self, transform, count):
        super().__init__(transform, count)

    def parameters(self):
        return transforms.tile_parameters(self.transform, self.count)
