"""Argument checks shared by the ops and the layers.

Each check raises a `ValueError` that names the argument and says what it received.
"""

import numbers

import keras

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


def check_output_size(output_size, name="output_size"):
    """Returns `(height, width)` as Python ints, or raises."""
    ok = (
        isinstance(output_size, (tuple, list))
        and len(output_size) == 2
        and all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0
            for s in output_size
        )
    )
    if not ok:
        raise ValueError(
            f"`{name}` must be a tuple of two positive ints (height, width). "
            f"Received: {name}={output_size!r}"
        )
    height, width = int(output_size[0]), int(output_size[1])
    if height * width > MAX_OUTPUT_PIXELS:
        raise ValueError(
            f"`{name}` asks for {height * width} points per image, more than the "
            f"{MAX_OUTPUT_PIXELS} allowed. Received: {name}={output_size!r}"
        )
    return height, width


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
