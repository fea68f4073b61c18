"""Projection of volumes to images: a reduction along the depth axis."""

from keras import ops

from keras_stn import _checks

REDUCTIONS = ("sum", "mean", "max")


def project_depth(volumes, reduction="sum", data_format=None):
    """Flattens volumes to images along their depth, as in the paper's appendix A.3.

    A 3-D spatial transformer followed by this projection shows a 2-D network the
    volume from whatever viewpoint the transformer chose: the paper sums its
    transformed volumes over the depth to classify 3-D digits with a 2-D CNN.

    Args:
        volumes: `(batch, depth, height, width, channels)`, or `(batch, channels,
            depth, height, width)` with `data_format="channels_first"`. Integer
            volumes are read as float32.
        reduction: `"sum"` (the paper's: what a ray through the volume collects),
            `"mean"` (the sum divided by the depth) or `"max"` (the brightest voxel
            along each ray; its gradient goes to that voxel only).
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.

    Returns:
        `(batch, height, width, channels)` (`(batch, channels, height, width)`
        channels first), in the volumes' dtype; half-precision sums and means are
        accumulated in float32.

    Example:
    >>> import numpy as np
    >>> volumes = np.arange(12, dtype="float32").reshape(1, 2, 2, 3, 1)
    >>> np.asarray(project_depth(volumes))[0, :, :, 0].tolist()
    [[6.0, 8.0, 10.0], [12.0, 14.0, 16.0]]
    """
    _checks.check_choice("reduction", reduction, REDUCTIONS)
    data_format = _checks.check_data_format(data_format)
    volumes = ops.convert_to_tensor(volumes)
    _checks.check_rank(
        "volumes", volumes, 5,
        "(batch, depth, height, width, channels) (channels last) or (batch, channels, "
        "depth, height, width) (channels first)",
    )
    if not _checks.is_float(volumes.dtype):
        volumes = ops.cast(volumes, "float32")
    axis = 2 if data_format == "channels_first" else 1
    if reduction == "max":
        return ops.max(volumes, axis=axis)
    dtype = volumes.dtype
    total = ops.sum(ops.cast(volumes, _checks.working_dtype(volumes)), axis=axis)
    if reduction == "mean":
        total = total / ops.cast(ops.shape(volumes)[axis], total.dtype)
    return ops.cast(total, dtype)
