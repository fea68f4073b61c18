"""SpatialTransformer in models: the layer test, identity, pair inputs, parallel and
series transformers, a task it must learn, mixed precision, bad input."""

import keras
import numpy as np
import pytest

import keras_stn
from tests import testing
from tests.testing import arange_images

FAMILIES = sorted(n for n, f in keras_stn.transforms.FAMILIES.items() if f.rank == 2)
NUM_PARAMS = {name: keras_stn.transforms.get(name).num_params for name in FAMILIES}
# conv1, conv2, dense of the default localisation network and the regression head.
DEFAULT_TRAINABLE_WEIGHTS = 8


def blobs(count, size=16, seed=0):
    """Gaussian blobs at random positions, and the same blob centred: a task that
    only a transformer that learned to translate can solve."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]

    def blob(cx, cy):
        return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0)

    centres = rng.uniform(4, size - 5, size=(count, 2))
    inputs = np.stack([blob(cx, cy) for cx, cy in centres])[..., None]
    centred = np.tile(blob((size - 1) / 2, (size - 1) / 2)[None, ..., None], (count, 1, 1, 1))
    return inputs.astype("float32"), centred.astype("float32")


def theta_of(layer, images):
    return keras.ops.convert_to_numpy(layer.regressor(layer.localisation(images)))


# ---------------------------------------------------------------- the layer test


def test_layer_with_no_arguments():
    testing.run_layer_test(
        keras_stn.SpatialTransformer,
        {},
        testing.random_images((2, 16, 16, 1)),
        expected_output_shape=(2, 16, 16, 1),
        expected_num_trainable_weights=DEFAULT_TRAINABLE_WEIGHTS,
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_layer_every_family_resampling_and_returning_theta(name):
    testing.run_layer_test(
        keras_stn.SpatialTransformer,
        {"transform": name, "output_size": (8, 10), "return_transform": True},
        testing.random_images((2, 16, 12, 3)),
        expected_output_shape=((2, 8, 10, 3), (2, NUM_PARAMS[name])),
        expected_num_trainable_weights=DEFAULT_TRAINABLE_WEIGHTS,
        float32_outputs=(1,),  # theta is a coordinate
        jit_compile=name in ("affine", "tps"),
    )


def test_layer_pair_input_and_user_localisation():
    testing.run_layer_test(
        keras_stn.SpatialTransformer,
        {
            "transform": keras_stn.transforms.TPS(grid_shape=(3, 3)),
            "output_size": (6, 6),
            "localisation": keras.layers.GlobalAveragePooling2D(),
            "padding_mode": "border",
            "align_corners": True,
        },
        [testing.random_images((3, 12, 12, 2)), testing.random_images((3, 6, 6, 4), seed=1)],
        expected_output_shape=(3, 6, 6, 2),
        expected_num_trainable_weights=2,  # only the regression head
    )


def test_layer_channels_first():
    testing.run_layer_test(
        keras_stn.SpatialTransformer,
        {"transform": "similarity", "data_format": "channels_first"},
        testing.random_images((2, 3, 12, 10)),
        expected_output_shape=(2, 3, 12, 10),
        expected_num_trainable_weights=DEFAULT_TRAINABLE_WEIGHTS,
        jit_compile=False,
    )


# ---------------------------------------------------------------- a new layer is the identity


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("name", FAMILIES)
def test_new_layer_is_the_exact_identity(name, align_corners):
    layer = keras_stn.SpatialTransformer(name, align_corners=align_corners, return_transform=True)
    images = arange_images((2, 11, 13, 2))
    output, theta = layer(images)
    np.testing.assert_array_equal(output, images)
    identity = layer.transform.identity().astype("float32")
    np.testing.assert_array_equal(theta, np.tile(identity, (2, 1)))
    assert testing.dtype_of(theta) == "float32"


def test_sequential_with_no_arguments():
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras_stn.SpatialTransformer(),
            keras.layers.Conv2D(4, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    images = arange_images((3, 28, 28, 1))
    np.testing.assert_array_equal(model.layers[0](images), images)
    assert tuple(model(images).shape) == (3, 10)
    # The default localisation network is the paper's ST-CNN one.
    localisation = model.layers[0].localisation
    assert [type(layer).__name__ for layer in localisation.layers] == [
        "Conv2D", "MaxPooling2D", "Conv2D", "Flatten", "Dense",
    ]
    conv1, _, conv2, _, dense = localisation.layers
    assert (conv1.filters, conv1.kernel_size, conv2.filters, conv2.kernel_size) == (
        20, (5, 5), 20, (5, 5),
    )
    assert dense.units == 20


def test_user_localisation_layer_sequential_and_functional_start_as_identity():
    inputs = keras.Input((16, 16, 1))
    functional = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs)))
    images = testing.random_images((2, 16, 16, 1))
    for localisation in (
        keras.layers.Flatten(),
        keras.Sequential([keras.layers.Conv2D(3, 3), keras.layers.GlobalMaxPooling2D()]),
        functional,
    ):
        layer = keras_stn.SpatialTransformer("affine", localisation=localisation)
        np.testing.assert_array_equal(layer(images), images)
        assert layer.localisation is localisation
        assert layer.regressor.kernel.shape[0] == localisation.compute_output_shape(
            (None, 16, 16, 1)
        )[-1]


# ---------------------------------------------------------------- in models


def test_pair_input_localises_the_second_and_samples_the_first():
    big = keras.Input((32, 32, 3))
    small = keras.Input((16, 16, 3))
    layer = keras_stn.SpatialTransformer("attention", output_size=(16, 16), return_transform=True)
    out, theta = layer([big, small])
    model = keras.Model([big, small], [out, theta])
    images = testing.random_images((2, 32, 32, 3))
    out, theta = model([images, images[:, ::2, ::2]])
    assert layer.localisation.input_shape == (None, 16, 16, 3)
    # Identity attention, 32 -> 16: each output pixel averages a 2x2 block.
    expected = images.reshape(2, 16, 2, 16, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    # Theta depends on the second input only.
    layer.regressor.kernel.assign(np.full(layer.regressor.kernel.shape, 0.01, "float32"))
    other = testing.random_images((2, 32, 32, 3), seed=5)
    _, theta_a = model([images, images[:, ::2, ::2]])
    _, theta_b = model([other, images[:, ::2, ::2]])
    _, theta_c = model([images, other[:, ::2, ::2]])
    np.testing.assert_array_equal(theta_a, theta_b)
    assert np.abs(keras.ops.convert_to_numpy(theta_a - theta_c)).max() > 1e-4


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_sample_with_grid_returns_what_call_computes(data_format):
    rng = np.random.default_rng(0)
    shape = (3, 12, 10, 2) if data_format == "channels_last" else (3, 2, 12, 10)
    images = rng.uniform(size=shape).astype("float32")
    layer = keras_stn.SpatialTransformer(
        output_size=(6, 7), data_format=data_format, return_transform=True
    )
    layer(images)
    kernel = layer.regressor.kernel
    kernel.assign(rng.normal(0.0, 0.3, size=kernel.shape).astype("float32"))

    output, grid, theta = layer.sample_with_grid(images)
    called_output, called_theta = layer(images)
    np.testing.assert_array_equal(output, called_output)
    np.testing.assert_array_equal(theta, called_theta)
    expected_grid = keras_stn.ops.affine_grid(theta, (6, 7))
    np.testing.assert_array_equal(grid, expected_grid)
    assert tuple(grid.shape) == (3, 6, 7, 2)
    # Theta differs between the images: the grid is each image's own.
    assert np.abs(np.diff(keras.ops.convert_to_numpy(theta), axis=0)).max() > 1e-3


def test_parallel_and_series_transformers_all_train():
    # The paper's 4xST-CNN puts transformers side by side on the input; the
    # ST-CNN Multi puts them in series, one on a feature map.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    parallel = [
        keras_stn.SpatialTransformer(name, output_size=(8, 8), name=f"st_{name}")(inputs)
        for name in ("attention", "affine", "translation", "similarity")
    ]
    features = keras.layers.Conv2D(4, 3, padding="same")(keras.layers.Concatenate()(parallel))
    series = keras_stn.SpatialTransformer("tps", name="st_series")(features)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(series))
    model = keras.Model(inputs, outputs)
    transformers = [layer for layer in model.layers if layer.name.startswith("st_")]
    assert len(transformers) == 5
    heads = [[keras.ops.convert_to_numpy(w) for w in t.regressor.weights] for t in transformers]
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=False)
    images = testing.random_images((8, 16, 16, 1))
    history = model.fit(images, np.ones((8, 2)), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for transformer, head in zip(transformers, heads):
        after = [keras.ops.convert_to_numpy(w) for w in transformer.regressor.weights]
        assert any(np.any(a != b) for a, b in zip(after, head)), transformer.name


class Recentre(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.transformer = keras_stn.SpatialTransformer("translation")

    def call(self, inputs):
        return self.transformer(inputs)


def test_subclassed_model_fits():
    inputs, targets = blobs(32)
    keras.utils.set_random_seed(0)
    model = Recentre()
    model.compile(keras.optimizers.Adam(1e-2), "mse", jit_compile=False)
    model.fit(inputs, targets, batch_size=16, epochs=1, verbose=0)
    assert model.transformer.regressor.kernel.shape == (20, 2)
    assert np.abs(keras.ops.convert_to_numpy(model.transformer.regressor.kernel)).max() > 0


@pytest.mark.parametrize("jit_compile", [True, False])
def test_fit_learns_to_recentre_and_xla_agrees(jit_compile):
    inputs, targets = blobs(512)
    keras.utils.set_random_seed(1)
    layer = keras_stn.SpatialTransformer("translation")
    model = keras.Sequential([keras.Input((16, 16, 1)), layer])
    model.compile(keras.optimizers.Adam(1e-2), "mse", jit_compile=jit_compile)
    history = model.fit(inputs, targets, batch_size=64, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] / 10
    # Theta left the identity, and its shift follows each blob: x offset vs tx.
    theta = theta_of(layer, inputs)
    assert np.abs(theta).max() > 0.1
    columns = np.arange(16)
    offset = (inputs[..., 0].sum(axis=1) * columns).sum(axis=1) / inputs.sum(axis=(1, 2, 3))
    assert np.corrcoef(theta[:, 0], offset - 7.5)[0, 1] > 0.9
    # Compiled and not compiled give the same outputs.
    predicted = model.predict(inputs[:8], verbose=0)
    model.jit_compile = not jit_compile
    model.make_predict_function(force=True)
    np.testing.assert_allclose(model.predict(inputs[:8], verbose=0), predicted, atol=1e-5)


@pytest.mark.parametrize("policy", testing.MIXED_POLICIES)
def test_fit_under_mixed_precision_keeps_float32_variables(policy):
    inputs, _ = blobs(16)
    keras.utils.set_random_seed(0)
    with testing.global_dtype_policy(policy):
        layer = keras_stn.SpatialTransformer("affine")
        model = keras.Sequential(
            [keras.Input((16, 16, 1)), layer, keras.layers.Flatten(), keras.layers.Dense(1)]
        )
        model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=True)
        kernel = keras.ops.convert_to_numpy(layer.regressor.kernel)
        # Several steps: under mixed_float16 the loss scale may skip the first ones.
        history = model.fit(inputs, np.ones((16, 1)), batch_size=2, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        assert np.abs(keras.ops.convert_to_numpy(layer.regressor.kernel) - kernel).max() > 0
        assert all(testing.dtype_of(v) == "float32" for v in model.weights)
        assert layer.compute_dtype == policy.split("_")[1]
        assert layer.regressor.compute_dtype == "float32"
        assert testing.dtype_of(layer(inputs)) == layer.compute_dtype
    assert keras.config.dtype_policy().name == "float32"


# ---------------------------------------------------------------- config


def test_config_round_trip_keeps_a_custom_family_and_localisation():
    tps = keras_stn.transforms.TPS(control_points=[[-1, -1], [1, -1], [0, 1], [0.2, 0.1]])
    layer = keras_stn.SpatialTransformer(
        tps,
        output_size=(8, 9),
        localisation=keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(7)]),
        interpolation="nearest",
        padding_mode="reflection",
        align_corners=True,
        return_transform=True,
        data_format="channels_last",
        name="st",
    )
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert revived.get_config() == layer.get_config()
    assert revived.transform == tps and revived.output_size == (8, 9)
    assert isinstance(revived.localisation, keras.Sequential)
    assert revived.localisation is not layer.localisation
    assert (revived.interpolation, revived.padding_mode) == ("nearest", "reflection")
    assert revived.align_corners and revived.return_transform


def test_unknown_family_error_lists_the_names():
    with pytest.raises(ValueError, match="Received: transform='rotation'") as error:
        keras_stn.SpatialTransformer("rotation")
    for name in FAMILIES:
        assert repr(name) in str(error.value)


def test_default_localisation_is_not_stored_in_the_config():
    layer = keras_stn.SpatialTransformer()
    layer.build((None, 16, 16, 1))
    assert layer.get_config()["localisation"] is None


# ---------------------------------------------------------------- bad input


def zeros(*shape):
    return np.zeros(shape, "float32")


class BatchMean(keras.layers.Layer):
    """A broken localisation network: one row of features for the whole batch."""

    def call(self, inputs):
        flat = keras.ops.reshape(inputs, (keras.ops.shape(inputs)[0], -1))
        return keras.ops.mean(flat, axis=0, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (1, int(np.prod(input_shape[1:])))


image = zeros(2, 8, 8, 1)


@pytest.mark.parametrize(
    "kwargs, inputs, argument",
    [
        # (constructor arguments, what the layer is called on or None, the argument named)
        ({}, zeros(2, 8, 8), "inputs"),
        ({}, keras.Input((8, 8, 1, 1)), "inputs"),
        ({}, [image, image, image], "inputs"),
        ({}, [image, zeros(2, 8, 8)], "to_localise"),
        ({}, [zeros(2, 8, 8), image], "to_sample"),
        ({}, [image, zeros(3, 8, 8, 1)], "to_sample"),
        ({}, [zeros(3, 8, 8, 1), zeros(1, 8, 8, 1)], "to_sample"),  # never broadcast
        ({}, [keras.Input((8, 8, 1), batch_size=2), keras.Input((8, 8, 1), batch_size=4)],
         "to_sample"),
        ({}, keras.Input((None, None, 1)), "output_size"),
        ({"output_size": (8, 0)}, None, "output_size"),
        ({"output_size": (-8, 8)}, None, "output_size"),
        ({"output_size": 8}, None, "output_size"),
        ({"output_size": (8, 8, 8)}, None, "output_size"),
        ({"output_size": (8.0, 8)}, None, "output_size"),
        ({"output_size": (True, 8)}, None, "output_size"),
        ({"transform": "rotation"}, None, "transform"),
        ({"localisation": "conv"}, None, "localisation"),
        ({"localisation": keras.layers.Dense(4)}, image, "localisation"),
        ({"localisation": keras.layers.Conv2D(2, 3), "output_size": (4, 4)},
         keras.Input((8, 8, 1)), "localisation"),
        ({"localisation": BatchMean()}, zeros(3, 8, 8, 1), "localisation"),
        ({"interpolation": "cubic"}, None, "interpolation"),
        ({"padding_mode": "wrap"}, None, "padding_mode"),
        ({"data_format": "NHWC"}, None, "data_format"),
    ],
)
def test_exception_names_the_argument(kwargs, inputs, argument):
    with pytest.raises(ValueError, match=rf"(?s)`{argument}`.*Received: "):
        layer = keras_stn.SpatialTransformer(**kwargs)
        layer(inputs)
