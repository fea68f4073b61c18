"""Argument checks shared by the ops and the layers.

Each check raises a `ValueError` that names the argument and says what it received.
"""

import math
import numbers

import keras
import numpy as np

# A grid of more points than this per image is refused before anything is allocated:
# 8192 x 8192 points already need 512 MiB per image for the float32 grid alone.
MAX_OUTPUT_PIXELS = 8192 * 8192


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {sorted(choices)}. Received: {name}={value!r}"
        )
    return value


def check_data_format(data_format):
    if data_format is None:
        return keras.config.image_data_format()
    return check_choice("data_format", data_format, ("channels_last", "channels_first"))


def check_output_size(output_size, name="output_size", ranks=(2,)):
    """Returns `(height, width)` (or `(depth, height, width)` when 3 is in `ranks`)
    as Python ints, or raises."""
    ok = (
        isinstance(output_size, (tuple, list))
        and len(output_size) in ranks
        and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
            for s in output_size
        )
    )
    if not ok:
        expected = " or ".join(_SIZE_NAMES[rank] for rank in ranks)
        raise ValueError(
            f"`{name}` must be a tuple of positive ints {expected}. "
            f"Received: {name}={output_size!r}"
        )
    sizes = tuple(int(s) for s in output_size)
    if math.prod(sizes) > MAX_OUTPUT_PIXELS:
        raise ValueError(
            f"`{name}` asks for {math.prod(sizes)} points per image, more than the "
            f"{MAX_OUTPUT_PIXELS} allowed. Received: {name}={output_size!r}"
        )
    return sizes


_SIZE_NAMES = {2: "(height, width)", 3: "(depth, height, width)"}


def check_sizes(name, sizes):
    """An image's spatial sizes: 2 or 3 positive Python ints."""
    return check_output_size(sizes, name, ranks=(2, 3))


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_rank(name, tensor, rank, meaning):
    shape = tuple(tensor.shape)
    if len(shape) != rank:
        raise ValueError(
            f"`{name}` must be a rank-{rank} tensor {meaning}. "
            f"Received: {name} with shape {shape}"
        )
    return shape


def is_float(dtype):
    return "float" in keras.backend.standardize_dtype(dtype)


def check_float(name, tensor):
    if not is_float(tensor.dtype):
        raise ValueError(
            f"`{name}` must be a floating-point tensor. "
            f"Received: {name} with dtype {keras.backend.standardize_dtype(tensor.dtype)}"
        )


def working_dtype(*tensors):
    """float64 if any tensor is float64, else float32: coordinates never go below it."""
    dtypes = [keras.backend.standardize_dtype(t.dtype) for t in tensors]
    return "float64" if "float64" in dtypes else "float32"


def check_positive_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


def check_non_negative_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0. Received: {name}={value!r}")
    return int(value)


def check_positive_float(name, value):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")
    return float(value)


def check_non_negative_float(name, value):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a number >= 0. Received: {name}={value!r}")
    return float(value)
