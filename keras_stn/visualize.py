"""Pictures of spatial transformers: what goes in, what comes out, where it samples.

Figures are `matplotlib.figure.Figure` objects made without `pyplot` (no window, no
global state; matplotlib is imported only when a figure is made, it is an optional
dependency: `pip install matplotlib`). `TransformerSnapshots` is a Keras callback
that records a transformer's outputs on a fixed batch every epoch, to TensorBoard and,
optionally, as PNG frames; it writes them with TensorFlow (imported when it is made,
on any backend). The array helpers (`tile`, `grid_to_pixels`, `transformer_outputs`)
and the figures work on every backend without TensorFlow.

Images are `(batch, height, width, channels)` (a `SpatialTransformer` with
`data_format="channels_first"` is handled by the functions that take the layer);
values are shown on the range of the inputs. Grids follow `keras_stn.ops.sample`:
`(batch, out_height, out_width, 2)`, last axis `(x, y)` in [-1, 1].

Example:
>>> import numpy as np
>>> mosaic = tile(np.zeros((6, 4, 5, 1)), columns=3, pad=1)
>>> mosaic.shape
(11, 19, 1)
"""

import importlib.util
import numbers
import os
import textwrap

import numpy as np
import keras

from keras_stn import _checks


# ----------------------------------------------------------------------- arrays


def tile(images, columns=8, pad=1, pad_value=1.0):
    """Lays a batch of images out as one `(rows * (h + pad) + pad, ...)` mosaic.

    Args:
        images: `(batch, height, width, channels)`.
        columns: images per row.
        pad: pixels between images and around them.
        pad_value: the value of those pixels.

    Returns:
        NumPy `(mosaic_height, mosaic_width, channels)`, the images' dtype.
    """
    images = _as_images("images", images)
    _check_positive("columns", columns)
    if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
        raise ValueError(f"`pad` must be an int >= 0. Received: pad={pad!r}")
    count, height, width, channels = images.shape
    columns = min(columns, max(count, 1))
    rows = -(-count // columns)
    mosaic = np.full(
        (rows * (height + pad) + pad, columns * (width + pad) + pad, channels),
        pad_value,
        dtype=images.dtype,
    )
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = pad + row * (height + pad), pad + column * (width + pad)
        mosaic[top : top + height, left : left + width] = images[index]
    return mosaic


def transformer_outputs(layer, images):
    """Runs a `SpatialTransformer` on `images` and returns its parts.

    Args:
        layer: a built or unbuilt `keras_stn.SpatialTransformer`.
        images: what the layer is called on: an image batch, or
            `[to_sample, to_localise]`.

    Returns:
        `(outputs, grid, theta)` as NumPy arrays: outputs channels last,
        `(batch, out_height, out_width, 2)` grid, `(batch, num_params)` theta.
    """
    _check_transformer(layer)
    if isinstance(images, (list, tuple)):
        images = [keras.ops.convert_to_tensor(part) for part in images]
    else:
        images = keras.ops.convert_to_tensor(images)
    if not layer.built:
        layer(images)
    outputs, grid, theta = layer.sample_with_grid(images)
    outputs = keras.ops.convert_to_numpy(outputs)
    if layer.data_format == "channels_first":
        outputs = np.transpose(outputs, (0, 2, 3, 1))
    return outputs, keras.ops.convert_to_numpy(grid), keras.ops.convert_to_numpy(theta)


def grid_to_pixels(grid, image_size, align_corners=False):
    """Normalised grid coordinates -> pixel coordinates, pixel `k`'s centre at `k`.

    Args:
        grid: `(..., 2)` `(x, y)` in [-1, 1].
        image_size: `(height, width)` of the sampled image.
        align_corners: the frame convention of `keras_stn.ops.sample`.

    Returns:
        NumPy `(..., 2)` `(column, row)` coordinates.

    Example:
    >>> grid_to_pixels(np.array([-1.0, 1.0]), (4, 4)).tolist()
    [-0.5, 3.5]
    """
    height, width = _checks.check_output_size(tuple(image_size), "image_size")
    grid = np.asarray(grid, dtype=np.float64)
    size = np.array([width, height], dtype=np.float64)
    if align_corners:
        return (grid + 1.0) * 0.5 * (size - 1.0)
    return ((grid + 1.0) * size - 1.0) * 0.5


# ----------------------------------------------------------------------- figures


def plot_images(images, columns=8, titles=None, title=None, path=None, scale=1.0):
    """A figure of images in a grid, one panel each.

    Args:
        images: `(batch, height, width, channels)`, 1 or 3 channels.
        columns: panels per row.
        titles: one short title per image, or `None`.
        title: the figure's title.
        path: if given, the figure is also saved there (PNG by its extension).
        scale: size of a panel, in inches.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    images = _as_images("images", images)
    _check_positive("columns", columns)
    _check_titles(titles, len(images))
    count = len(images)
    columns = min(columns, max(count, 1))
    rows = -(-count // columns)
    figure = _figure((columns * scale, rows * scale + (0.3 if title else 0.0)))
    low, high = _range(images)
    for index in range(count):
        axes = figure.add_subplot(rows, columns, index + 1)
        _show(axes, images[index], low, high)
        if titles is not None:
            axes.set_title(str(titles[index]), fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return _finish(figure, path)


def plot_transformed(
    inputs, outputs, columns=4, path=None, scale=1.2, titles=("input", "output"), title=None
):
    """A figure of each input beside its transformed output.

    Args:
        inputs: `(batch, height, width, channels)`.
        outputs: `(batch, out_height, out_width, channels)`, the same batch.
        columns: input/output pairs per row.
        path: if given, the figure is also saved there.
        scale: size of a panel, in inches.
        titles: the titles over the first row's pairs.
        title: the figure's title, or `None`.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    inputs = _as_images("inputs", inputs)
    outputs = _as_images("outputs", outputs)
    if len(inputs) != len(outputs):
        raise ValueError(
            "`inputs` and `outputs` must hold the same number of images. "
            f"Received: inputs with shape {inputs.shape}, outputs with shape {outputs.shape}"
        )
    _check_positive("columns", columns)
    count = len(inputs)
    columns = min(columns, max(count, 1))
    rows = -(-count // columns)
    figure = _figure((2 * columns * scale, rows * scale + 0.3))
    low, high = _range(inputs)
    for index in range(count):
        row, column = divmod(index, columns)
        for side, image in enumerate((inputs[index], outputs[index])):
            axes = figure.add_subplot(rows, 2 * columns, row * 2 * columns + 2 * column + side + 1)
            _show(axes, image, low, high)
            if row == 0 and titles:
                axes.set_title(titles[side], fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return _finish(figure, path)


def plot_sampling_grid(
    images,
    grid,
    columns=4,
    step=None,
    align_corners=False,
    path=None,
    scale=1.6,
    color="tab:orange",
    titles=None,
    title=None,
    margin=0.25,
    explain=True,
):
    """A figure of the sampling grid drawn over each input.

    Every `step`-th row and column of grid points is drawn as a line, and the grid's
    outline always: the region of the input the transformer reads from. Where the
    grid leaves the input, every panel shows the input on a grey ground, up to
    `margin` of the input's size beyond its edges; grid points out there read the
    sampler's padding. Where grid lines cross, the grid folds over itself (a
    thin-plate spline can): the output shows that part of the input twice, once
    mirrored. With `explain`, a caption under the figure says which of these it shows.

    Args:
        images: `(batch, height, width, channels)`, the sampled inputs.
        grid: `(batch, out_height, out_width, 2)`, as from `transformer_outputs`.
        columns: panels per row.
        step: draw every `step`-th grid line; `None` draws about 8 per side.
        align_corners: the convention the grid was made with.
        path: if given, the figure is also saved there.
        scale: size of a panel, in inches.
        color: a matplotlib colour for the grid.
        titles: one short title per panel, or `None`.
        title: the figure's title, or `None`.
        margin: how far beyond the input the panels reach at most, as a fraction of
            its height and width; grid lines further out are cut at the panel's edge.
        explain: add the caption that says what the lines, the grey ground and
            crossing lines mean.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    images = _as_images("images", images)
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 4 or grid.shape[-1] != 2 or len(grid) != len(images):
        raise ValueError(
            "`grid` must have shape (batch, out_height, out_width, 2) with the images' "
            f"batch. Received: grid with shape {grid.shape}, images with shape {images.shape}"
        )
    _check_positive("columns", columns)
    if step is not None:
        _check_positive("step", step)
    _check_titles(titles, len(images))
    if not isinstance(margin, numbers.Real) or isinstance(margin, bool) or not margin >= 0:
        raise ValueError(f"`margin` must be a number >= 0. Received: margin={margin!r}")
    count, height, width = images.shape[:3]
    points = grid_to_pixels(grid, (height, width), align_corners)
    view = _view(points, (height, width), margin)
    rows_step = step or max(1, grid.shape[1] // 8)
    cols_step = step or max(1, grid.shape[2] // 8)
    columns = min(columns, max(count, 1))
    rows = -(-count // columns)
    figure = _figure((columns * scale, rows * scale))
    low, high = _range(images)
    for index in range(count):
        axes = figure.add_subplot(rows, columns, index + 1)
        _show(axes, images[index], low, high)
        _draw_grid(axes, points[index], rows_step, cols_step, view, color, 0.6)
        if titles is not None:
            axes.set_title(str(titles[index]), fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    if explain:
        _explain(figure, points, (height, width), rows_step == cols_step == 1)
    return _finish(figure, path)


def plot_transformer(layer, images, path=None, columns=8, scale=1.2):
    """One figure of what a `SpatialTransformer` does to a batch: the inputs with
    the sampling grid over them (top row of each pair) and the outputs (below).

    The grid is drawn as by `plot_sampling_grid`, with its caption.

    Args:
        layer: a `keras_stn.SpatialTransformer`.
        images: an image batch, or `[to_sample, to_localise]`.
        path: if given, the figure is also saved there.
        columns: images per row.
        scale: size of a panel, in inches.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    outputs, grid, _ = transformer_outputs(layer, images)
    inputs = images[0] if isinstance(images, (list, tuple)) else images
    inputs = keras.ops.convert_to_numpy(inputs)
    if layer.data_format == "channels_first":
        inputs = np.transpose(inputs, (0, 2, 3, 1))
    inputs = _as_images("images", inputs)
    _check_positive("columns", columns)
    count, height, width = inputs.shape[:3]
    columns = min(columns, max(count, 1))
    blocks = -(-count // columns)
    points = grid_to_pixels(grid, (height, width), layer.align_corners)
    view = _view(points, (height, width), 0.25)
    row_step = max(1, grid.shape[1] // 8)
    column_step = max(1, grid.shape[2] // 8)
    figure = _figure((columns * scale, 2 * blocks * scale))
    low, high = _range(inputs)
    for index in range(count):
        block, column = divmod(index, columns)
        top = figure.add_subplot(2 * blocks, columns, 2 * block * columns + column + 1)
        _show(top, inputs[index], low, high)
        _draw_grid(top, points[index], row_step, column_step, view, "tab:orange", 0.5)
        bottom = figure.add_subplot(2 * blocks, columns, (2 * block + 1) * columns + column + 1)
        _show(bottom, outputs[index], low, high)
    _explain(figure, points, (height, width), row_step == column_step == 1)
    return _finish(figure, path)


# ----------------------------------------------------------------------- callback


class TransformerSnapshots(keras.callbacks.Callback):
    """Records a spatial transformer's outputs on a fixed batch, every epoch.

    Each snapshot is one picture: the inputs in the top row, the transformer's
    outputs below, values on the inputs' range. It is written to TensorBoard as an
    image (`tf.summary.image`, tag `"<layer name>/outputs"`, step 0 before training,
    step `epoch + 1` after each epoch) and, if `png_dir` is given, as a PNG frame
    `<layer name>_<step:04d>.png`. Needs TensorFlow (on any Keras backend), and
    `tensorboard` for `log_dir`.

    Args:
        images: the fixed batch the model is called on, `(batch, height, width,
            channels)`; a handful (8 to 16) is plenty.
        layer: the `SpatialTransformer` in the model, or its name; `None` finds
            the first one.
        log_dir: the TensorBoard log directory; `None` writes no summaries.
        png_dir: a directory for PNG frames; `None` writes none.
        every: record every `every` epochs.
        columns: images per row of the picture; `None` puts them all in one row.

    Example:
    >>> import keras, numpy as np, tempfile, os, keras_stn
    >>> model = keras.Sequential([keras.Input((8, 8, 1)),
    ...     keras_stn.SpatialTransformer(name="st"), keras.layers.Flatten(),
    ...     keras.layers.Dense(2)])
    >>> model.compile("sgd", "mse")
    >>> x, y = np.zeros((4, 8, 8, 1), "float32"), np.zeros((4, 2), "float32")
    >>> frames = tempfile.mkdtemp()
    >>> snapshots = TransformerSnapshots(x[:2], png_dir=frames)
    >>> _ = model.fit(x, y, epochs=1, verbose=0, callbacks=[snapshots])
    >>> sorted(os.listdir(frames))
    ['st_0000.png', 'st_0001.png']
    """

    def __init__(self, images, layer=None, log_dir=None, png_dir=None, every=1, columns=None):
        super().__init__()
        images = np.asarray(keras.ops.convert_to_numpy(images))
        if images.ndim != 4:
            raise ValueError(
                "`images` must be a batch (batch, height, width, channels). "
                f"Received: images with shape {images.shape}"
            )
        if layer is not None and not isinstance(layer, (str, keras.layers.Layer)):
            raise ValueError(
                "`layer` must be None, a layer name or a SpatialTransformer. "
                f"Received: layer={layer!r}"
            )
        if log_dir is None and png_dir is None:
            raise ValueError(
                "`TransformerSnapshots` needs somewhere to write: pass `log_dir`, "
                "`png_dir` or both. Received: log_dir=None, png_dir=None"
            )
        if log_dir is not None and importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "TransformerSnapshots(log_dir=...) writes TensorBoard images, which needs "
                "the `tensorboard` package: `pip install tensorboard`, or pass only "
                "`png_dir`."
            )
        _check_positive("every", every)
        if columns is not None:
            _check_positive("columns", columns)
        _import_tensorflow()  # Without TensorFlow, fail here rather than in `fit`.
        self.images = images
        self.layer = layer
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.png_dir = None if png_dir is None else os.fspath(png_dir)
        self.every = every
        self.columns = columns
        self._writer = None
        self._extract = None
        self._transformer = None

    def on_train_begin(self, logs=None):
        self._transformer = self._find_transformer()
        self._extract = self._layer_inputs()
        if self.log_dir is not None and self._writer is None:
            self._writer = _import_tensorflow().summary.create_file_writer(self.log_dir)
        if self.png_dir is not None:
            os.makedirs(self.png_dir, exist_ok=True)
        self.record(0)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            self.record(epoch + 1)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def snapshot(self):
        """The current picture: NumPy uint8 `(height, width, 1 or 3)`."""
        if self._transformer is None:
            self._transformer = self._find_transformer()
            self._extract = self._layer_inputs()
        inputs = self._extract(self.images)
        outputs, _, _ = transformer_outputs(self._transformer, inputs)
        inputs = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        inputs = np.asarray(keras.ops.convert_to_numpy(inputs))
        if self._transformer.data_format == "channels_first":
            inputs = np.transpose(inputs, (0, 2, 3, 1))
        inputs, outputs = _displayable(inputs), _displayable(outputs)
        low, high = _range(inputs)
        spread = high - low if high > low else 1.0
        columns = self.columns or len(inputs)
        top = tile(np.clip((inputs - low) / spread, 0, 1), columns)
        bottom = tile(np.clip((outputs - low) / spread, 0, 1), columns)
        width = max(top.shape[1], bottom.shape[1])
        picture = np.concatenate([_pad_width(top, width), _pad_width(bottom, width)], axis=0)
        return np.round(255 * picture).astype(np.uint8)

    def record(self, step):
        """Writes the current picture at `step`."""
        tf = _import_tensorflow()
        picture = self.snapshot()
        name = self._transformer.name
        if self._writer is not None:
            with self._writer.as_default():
                tf.summary.image(f"{name}/outputs", picture[None], step=step)
            self._writer.flush()
        if self.png_dir is not None:
            path = os.path.join(self.png_dir, f"{name}_{step:04d}.png")
            tf.io.write_file(path, tf.io.encode_png(picture))

    def _find_transformer(self):
        from keras_stn.layers import SpatialTransformer

        if isinstance(self.layer, keras.layers.Layer):
            return _check_transformer(self.layer)
        for layer in _walk(self.model):
            if isinstance(layer, SpatialTransformer) and (
                self.layer is None or layer.name == self.layer
            ):
                return layer
        raise ValueError(
            f"`layer` must name a SpatialTransformer in the model. Received: layer={self.layer!r}"
        )

    def _layer_inputs(self):
        """A function from the model's inputs to the transformer's inputs."""
        layer = self._transformer
        try:
            model_inputs = self.model.inputs
            layer_inputs = layer.input
        except (AttributeError, ValueError):
            return lambda images: images  # Subclassed models: the batch is the input.
        if (
            not model_inputs
            or layer_inputs is model_inputs[0]
            or (
                isinstance(layer_inputs, (list, tuple))
                and len(model_inputs) == 1
                and all(t is model_inputs[0] for t in layer_inputs)
            )
        ):
            return lambda images: images
        if len(model_inputs) == 1:
            model_inputs = model_inputs[0]
        extractor = keras.Model(model_inputs, layer_inputs)
        return lambda images: extractor(images, training=False)


# ----------------------------------------------------------------------- helpers


def _walk(layer):
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from _walk(child)


def _check_transformer(layer):
    from keras_stn.layers import SpatialTransformer

    if not isinstance(layer, SpatialTransformer):
        raise ValueError(
            f"`layer` must be a keras_stn.SpatialTransformer. Received: layer={layer!r}"
        )
    return layer


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")


def _as_images(name, images):
    images = np.asarray(keras.ops.convert_to_numpy(images))
    if images.ndim != 4:
        raise ValueError(
            f"`{name}` must have shape (batch, height, width, channels). "
            f"Received: {name} with shape {images.shape}"
        )
    return images


def _displayable(images):
    images = np.asarray(images, dtype=np.float32)
    return images if images.shape[-1] in (1, 3) else images[..., :1]


def _range(images):
    images = np.asarray(images, dtype=np.float64)
    finite = images[np.isfinite(images)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if 0.0 <= low and high <= 1.0:
        return 0.0, 1.0
    return low, high


def _pad_width(picture, width):
    extra = width - picture.shape[1]
    return np.pad(picture, ((0, 0), (0, extra), (0, 0)), constant_values=1.0)


def _check_titles(titles, count):
    if titles is not None and len(titles) != count:
        raise ValueError(
            f"`titles` must hold one title per image ({count}). Received: titles={list(titles)!r}"
        )


def _view(points, size, margin):
    """`((left, right), (top, bottom))` axis limits, in pixels, that show the image
    and the grid's finite points, at most `margin` of the image's size beyond it."""
    height, width = size
    low, high = np.array([-0.5, -0.5]), np.array([width - 0.5, height - 0.5])
    finite = points[np.isfinite(points).all(-1)]
    if finite.size:
        reach = margin * np.array([width, height], dtype=np.float64)
        low = np.maximum(np.minimum(low, finite.min(0)), low - reach)
        high = np.minimum(np.maximum(high, finite.max(0)), high + reach)
    return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))


def _draw_grid(axes, points, row_step, column_step, view, color, linewidth):
    points = np.where(np.isfinite(points), points, np.nan)  # Points at infinity: gaps.
    for row in _steps(points.shape[0], row_step):
        axes.plot(points[row, :, 0], points[row, :, 1], color=color, linewidth=linewidth)
    for column in _steps(points.shape[1], column_step):
        axes.plot(points[:, column, 0], points[:, column, 1], color=color, linewidth=linewidth)
    (left, right), (top, bottom) = view
    axes.set_xlim(left, right)
    axes.set_ylim(bottom, top)  # Row 0 at the top.
    axes.set_facecolor("0.8")  # Grey where the panel reaches beyond the image.


def _folds(points):
    """Whether a `(rows, columns, 2)` grid folds over itself: its cells turn both ways."""
    points = np.where(np.isfinite(points), points, np.nan)
    right = points[:-1, 1:] - points[:-1, :-1]
    down = points[1:, :-1] - points[:-1, :-1]
    turn = right[..., 0] * down[..., 1] - right[..., 1] * down[..., 0]
    turn = turn[np.isfinite(turn)]
    if turn.size == 0:
        return False
    tolerance = 1e-6 * np.abs(turn).max()
    return bool(np.any(turn > tolerance) and np.any(turn < -tolerance))


def _explain(figure, points, size, every_line):
    """A caption under the figure: what the lines are, and what the grey ground and
    crossing lines mean when the figure has them."""
    height, width = size
    x, y = points[..., 0], points[..., 1]
    finite = np.isfinite(x) & np.isfinite(y)
    outside = ~finite | (x < -0.5) | (x > width - 0.5) | (y < -0.5) | (y > height - 0.5)
    drawn = "the sampling grid" if every_line else "some rows and columns of the sampling grid"
    lines = [
        f"Lines: {drawn}, and its outline; each output pixel reads the input where its "
        "grid point lies."
    ]
    if outside.any():
        lines.append(
            "Grey: outside the input; grid points there read the sampler's padding "
            "(zeros by default)."
        )
    if any(_folds(grid) for grid in points):
        lines.append(
            "Where lines cross, the grid folds over itself: the output shows that part "
            "of the input twice, once mirrored."
        )
    text = textwrap.fill(" ".join(lines), max(20, int(figure.get_figwidth() * 17)))
    figure.supxlabel(text, fontsize=7, ha="left", x=0.01)


def _steps(size, step):
    indices = list(range(0, size, step))
    if indices[-1] != size - 1:
        indices.append(size - 1)
    return indices


def _import_tensorflow():
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "TransformerSnapshots writes TensorBoard images and PNG frames with "
            "TensorFlow (on any Keras backend): `pip install tensorflow`."
        ) from error
    return tf


def _figure(size):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "keras_stn.visualize draws its figures with matplotlib: `pip install "
            "matplotlib` (or `pip install keras_stn[examples]`)."
        ) from error

    return Figure(figsize=size, dpi=100, layout="constrained")


def _show(axes, image, low, high):
    image = _displayable(image)
    if image.shape[-1] == 1:
        axes.imshow(image[..., 0], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    else:
        spread = high - low if high > low else 1.0
        axes.imshow(np.clip((image - low) / spread, 0, 1), interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])


def _finish(figure, path):
    if path is not None:
        figure.savefig(os.fspath(path))
    return figure
