"""The layers in models: SpatialTransformer, Sampler, GridGenerator."""

import numpy as np
import keras
import pytest

import keras_stn

FAMILIES = sorted(keras_stn.transforms.FAMILIES)


def random_images(shape, seed=0):
    return np.random.default_rng(seed).uniform(size=shape).astype("float32")


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


# ---------------------------------------------------------------- where it works


def test_sequential_with_no_arguments_starts_as_exact_identity():
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras_stn.SpatialTransformer(),
            keras.layers.Conv2D(4, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    images = np.arange(3 * 28 * 28, dtype="float32").reshape(3, 28, 28, 1)
    np.testing.assert_array_equal(model.layers[0](images), images)
    assert tuple(model(images).shape) == (3, 10)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_symbolic_and_eager_with_resampling(name):
    layer = keras_stn.SpatialTransformer(name, output_size=(10, 14), return_transform=True)
    inputs = keras.Input((20, 24, 3))
    outputs, theta = layer(inputs)
    assert tuple(outputs.shape) == (None, 10, 14, 3)
    assert tuple(theta.shape) == (None, keras_stn.transforms.get(name).num_params)
    images = random_images((2, 20, 24, 3))
    out, theta = layer(images)
    assert tuple(out.shape) == (2, 10, 14, 3)
    np.testing.assert_allclose(theta, np.tile(layer.transform.identity(), (2, 1)), atol=0)


def test_functional_pair_input_localises_on_the_second_and_samples_the_first():
    big = keras.Input((32, 32, 3))
    small = keras.Input((16, 16, 3))
    layer = keras_stn.SpatialTransformer("attention", output_size=(16, 16), return_transform=True)
    out, theta = layer([big, small])
    model = keras.Model([big, small], [out, theta])
    images = random_images((2, 32, 32, 3))
    out, theta = model([images, images[:, ::2, ::2]])
    assert tuple(out.shape) == (2, 16, 16, 3)
    # The localisation network was built for the small input.
    assert layer.localisation.input_shape == (None, 16, 16, 3)
    # Identity attention, 32 -> 16: each output pixel averages a 2x2 block.
    expected = images.reshape(2, 16, 2, 16, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_parallel_and_series_transformers():
    inputs = keras.Input((24, 24, 1))
    left = keras_stn.SpatialTransformer("attention", output_size=(12, 12), name="st_a")(inputs)
    right = keras_stn.SpatialTransformer("affine", output_size=(12, 12), name="st_b")(inputs)
    merged = keras.layers.Concatenate()([left, right])
    series = keras_stn.SpatialTransformer("tps", name="st_c")(merged)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(series)))
    model.compile("adam", "mse", jit_compile=True)
    history = model.fit(random_images((8, 24, 24, 1)), np.ones((8, 2)), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


class Recentre(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.transformer = keras_stn.SpatialTransformer("translation")

    def call(self, inputs):
        return self.transformer(inputs)


def test_subclassed_model_fits():
    inputs, targets = blobs(32)
    model = Recentre()
    model.compile("adam", "mse")
    model.fit(inputs, targets, epochs=1, verbose=0)
    assert model.transformer.regressor.kernel.shape == (20, 2)


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
    assert np.abs(keras.ops.convert_to_numpy(layer.regressor.kernel)).max() > 1e-3
    # The learned shift follows each blob: x offset of the blob vs theta's tx.
    theta = keras.ops.convert_to_numpy(layer.regressor(layer.localisation(inputs)))
    columns = np.arange(16)
    offset = (inputs[..., 0].sum(axis=1) * columns).sum(axis=1) / inputs.sum(axis=(1, 2, 3))
    assert np.corrcoef(theta[:, 0], offset - 7.5)[0, 1] > 0.9
    compiled = model.predict(inputs[:8], verbose=0)
    model.jit_compile = not jit_compile
    model.make_predict_function(force=True)
    np.testing.assert_allclose(model.predict(inputs[:8], verbose=0), compiled, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_fit_keeps_float32_variables(policy):
    keras.config.set_dtype_policy(policy)
    try:
        layer = keras_stn.SpatialTransformer("affine")
        model = keras.Sequential(
            [keras.Input((16, 16, 1)), layer, keras.layers.Flatten(), keras.layers.Dense(1)]
        )
        model.compile("adam", "mse", jit_compile=True)
        inputs, _ = blobs(16)
        history = model.fit(inputs, np.ones((16, 1)), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        assert all(v.dtype == "float32" for v in model.weights)
        out = layer(inputs)
        assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
        assert layer.regressor.compute_dtype == "float32"
    finally:
        keras.config.set_dtype_policy("float32")


def test_channels_first():
    layer = keras_stn.SpatialTransformer(data_format="channels_first")
    images = np.arange(2 * 3 * 12 * 10, dtype="float32").reshape(2, 3, 12, 10)
    np.testing.assert_array_equal(layer(images), images)


def test_user_localisation_layer_model_and_functional():
    functional_inputs = keras.Input((16, 16, 1))
    functional = keras.Model(
        functional_inputs, keras.layers.Dense(5)(keras.layers.Flatten()(functional_inputs))
    )
    for localisation in (
        keras.layers.Flatten(),
        keras.Sequential([keras.layers.Conv2D(3, 3), keras.layers.GlobalMaxPooling2D()]),
        functional,
    ):
        layer = keras_stn.SpatialTransformer("affine", localisation=localisation)
        images = random_images((2, 16, 16, 1))
        np.testing.assert_array_equal(layer(images), images)


def test_config_round_trip():
    tps = keras_stn.transforms.TPS(grid_shape=(3, 3))
    layer = keras_stn.SpatialTransformer(
        tps,
        output_size=(8, 9),
        localisation=keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(7)]),
        interpolation="nearest",
        padding_mode="border",
        align_corners=True,
        return_transform=True,
        name="st",
    )
    config = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(config)
    assert revived.get_config() == layer.get_config()
    assert revived.transform == tps and revived.output_size == (8, 9)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, call, argument",
    [
        (lambda: keras_stn.SpatialTransformer(), lambda l: l(np.zeros((2, 8, 8), "float32")), "to_sample"),
        (lambda: keras_stn.SpatialTransformer(output_size=(8, 0)), None, "output_size"),
        (lambda: keras_stn.SpatialTransformer(output_size=8), None, "output_size"),
        (lambda: keras_stn.SpatialTransformer("rotation"), None, "transform"),
        (lambda: keras_stn.SpatialTransformer(localisation="conv"), None, "localisation"),
        (
            lambda: keras_stn.SpatialTransformer(localisation=keras.layers.Dense(4)),
            lambda l: l(np.zeros((2, 8, 8, 1), "float32")),
            "localisation",
        ),
        (
            lambda: keras_stn.SpatialTransformer(),
            lambda l: l([np.zeros((2, 8, 8, 1), "float32"), np.zeros((3, 8, 8, 1), "float32")]),
            "to_sample",
        ),
        (lambda: keras_stn.SpatialTransformer(padding_mode="wrap"), None, "padding_mode"),
    ],
)
def test_exception_names_the_argument(make, call, argument):
    with pytest.raises(ValueError, match=rf"(?s){argument}.*Received"):
        layer = make()
        call(layer)


# ---------------------------------------------------------------- Sampler and GridGenerator


def test_sampler_and_grid_generator_layers_in_a_model_and_config():
    images = keras.Input((12, 10, 3))
    theta = keras.Input((6,))
    grid = keras_stn.GridGenerator("affine", output_size=(6, 5), name="grid")(theta)
    out = keras_stn.Sampler(padding_mode="reflection", name="sampler")([images, grid])
    assert tuple(grid.shape) == (None, 6, 5, 2) and tuple(out.shape) == (None, 6, 5, 3)
    model = keras.Model([images, theta], out)
    x = random_images((2, 12, 10, 3))
    t = np.tile(np.array([[0.9, 0.2, 0.1, -0.1, 1.2, 0.0]], "float32"), (2, 1))
    expected = keras_stn.ops.sample(
        x, keras_stn.ops.affine_grid(t, (6, 5)), padding_mode="reflection"
    )
    np.testing.assert_allclose(model([x, t]), expected, atol=0)
    for layer in (model.get_layer("grid"), model.get_layer("sampler")):
        revived = layer.__class__.from_config(layer.get_config())
        assert revived.get_config() == layer.get_config()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_grid_stays_float32_under_mixed_precision(policy):
    generator = keras_stn.GridGenerator("affine", output_size=(4, 4), dtype=policy)
    sampler = keras_stn.Sampler(dtype=policy)
    grid = generator(np.array([[1, 0, 0, 0, 1, 0]], "float32"))
    assert keras.backend.standardize_dtype(grid.dtype) == "float32"
    out = sampler([random_images((1, 4, 4, 2)), grid])
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
