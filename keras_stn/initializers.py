"""The identity initializer of the localisation network's regression head."""

import keras

from keras_stn import transforms


@keras.saving.register_keras_serializable(package="keras_stn")
class TransformIdentity(keras.initializers.Initializer):
    """Fills a `(num_params,)` bias with a transform family's identity vector.

    With a zero kernel, a Dense layer that uses it as bias initializer outputs the
    identity transform for every input: a new spatial transformer starts as the
    exact identity.

    Args:
        transform: a family name (`"affine"`, `"tps"`, ...) or a
            `keras_stn.transforms.Transform`.

    Example:
    >>> import keras
    >>> head = keras.layers.Dense(
    ...     6, kernel_initializer="zeros", bias_initializer=TransformIdentity("affine"))
    >>> head.build((None, 20))
    >>> keras.ops.convert_to_numpy(head.bias).tolist()
    [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    """

    def __init__(self, transform="affine"):
        self.transform = transforms.get(transform)

    def __call__(self, shape, dtype=None):
        expected = (self.transform.num_params,)
        if tuple(shape) != expected:
            raise ValueError(
                f"`shape` must be {expected} for the {self.transform.name!r} transform. "
                f"Received: shape={tuple(shape)}"
            )
        return keras.ops.convert_to_tensor(self.transform.identity(), dtype=dtype)

    def get_config(self):
        return {"transform": transforms.serialize(self.transform)}
