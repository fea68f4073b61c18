"""`SpatialTransformer`'s training aids and options, each with a test that shows its
effect: the learning-rate multiplier (exact, with SGD and Adam), the identity penalty,
constant padding, anti-aliasing, the validity mask, several transformers, inputs of
unknown size and volumes."""

import keras
import numpy as np
import pytest

import keras_stn
from keras_stn import ops
from tests import testing
from tests.testing import assert_value_error_names
from tests.testing import random_images


def build_pair(multiplier, seed=0):
    """A model with a transformer (multiplier m) and one with multiplier 1, holding the
    same effective weights: the head's kernel is made non-zero so that the whole
    localisation network gets a gradient on the first step."""
    models = []
    for m in (1.0, multiplier):
        keras.utils.set_random_seed(seed)
        st = keras_stn.SpatialTransformer("affine", learning_rate_multiplier=m, name="st")
        model = keras.Sequential([keras.Input((12, 12, 1)), st, keras.layers.Flatten(),
                                  keras.layers.Dense(3, name="head")])
        models.append(model)
    plain, scaled = models
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.05, plain.get_layer("st").regressor.kernel.shape)
    plain.get_layer("st").regressor.kernel.assign(kernel)
    for a, b in zip(plain.get_layer("st").localisation.weights,
                    scaled.get_layer("st").localisation.weights):
        b.assign(keras.ops.convert_to_numpy(a) / multiplier)
    scaled.get_layer("st").regressor.kernel.assign(kernel / multiplier)
    scaled.get_layer("head").set_weights(plain.get_layer("head").get_weights())
    return plain, scaled


def effective(model, multiplier):
    """The localisation network's and head's weights as the transformer reads them."""
    st = model.get_layer("st")
    weights = [keras.ops.convert_to_numpy(w) * multiplier
               for w in st.localisation.trainable_weights + [st.regressor.kernel]]
    bias = keras.ops.convert_to_numpy(st.regressor.bias)
    identity = st.transform.identity()
    return weights + [identity + multiplier * (bias - identity)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_learning_rate_multiplier_scales_each_step_of_any_optimizer(optimizer):
    multiplier = 0.1
    plain, scaled = build_pair(multiplier)
    images = random_images((8, 12, 12, 1))
    targets = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    np.testing.assert_allclose(scaled(images), plain(images), atol=1e-5)
    before = [effective(plain, 1.0), effective(scaled, multiplier)]
    for model in (plain, scaled):
        model.compile(keras.optimizers.get({"class_name": optimizer,
                                            "config": {"learning_rate": 0.01}}), "mse")
        model.train_on_batch(images, targets)
    after = [effective(plain, 1.0), effective(scaled, multiplier)]
    moved = 0
    for b0, b1, a0, a1 in zip(*before, *after):
        step, scaled_step = a0 - b0, a1 - b1
        moved += np.abs(step).max() > 1e-6
        # Up to rounding (the scaled model's forward pass reads m * v): where Adam's
        # denominator is near its epsilon, that rounding shows a little more.
        np.testing.assert_allclose(scaled_step, multiplier * step, rtol=2e-3,
                                   atol=2e-3 * np.abs(multiplier * step).max())
    assert moved == len(after[0])  # every variable of the localisation network moved
    # The rest of the model sees the same gradients and takes the same step.
    np.testing.assert_allclose(scaled.get_layer("head").get_weights()[0],
                               plain.get_layer("head").get_weights()[0], atol=1e-6)


def test_learning_rate_multiplier_keeps_the_exact_identity():
    images = random_images((2, 10, 10, 3))
    for multiplier in (0.1, 1e-4, 3.0):
        st = keras_stn.SpatialTransformer("tps", learning_rate_multiplier=multiplier)
        np.testing.assert_array_equal(st(images), images)


def test_identity_penalty_adds_its_loss_and_holds_theta_back():
    images = random_images((4, 12, 12, 1))
    st = keras_stn.SpatialTransformer("attention", identity_penalty=0.5)
    st(images)
    st.regressor.bias.assign([0.8, 0.1, -0.2])  # theta - identity = (-0.2, 0.1, -0.2)
    st.losses.clear() if hasattr(st.losses, "clear") else None
    model = keras.Sequential([keras.Input((12, 12, 1)), st])
    model(images)
    assert len(model.losses) == 1
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.losses[0]),
                               0.5 * (0.04 + 0.01 + 0.04), rtol=1e-6)

    # Trained to shift its output, the penalised transformer moves less far.
    target = np.asarray(ops.sample(images, ops.affine_grid(
        np.tile([[1, 0, 0.5, 0, 1, 0]], (4, 1)).astype("float32"), (12, 12))))
    shifts = {}
    for penalty in (0.0, 1.0):
        keras.utils.set_random_seed(0)
        st = keras_stn.SpatialTransformer("translation", identity_penalty=penalty)
        model = keras.Sequential([keras.Input((12, 12, 1)), st])
        model.compile(keras.optimizers.Adam(0.01), "mse")
        model.fit(images, target, epochs=30, batch_size=4, verbose=0)
        shifts[penalty] = float(keras.ops.convert_to_numpy(st.localise(images))[:, 0].mean())
    assert shifts[0.0] > 0.2 and shifts[1.0] < 0.5 * shifts[0.0], shifts


def warmup_model(warmup_steps):
    """A transformer with `warmup_steps` and a Dense head after it."""
    keras.utils.set_random_seed(0)
    st = keras_stn.SpatialTransformer("affine", warmup_steps=warmup_steps, name="st")
    model = keras.Sequential([keras.Input((12, 12, 1)), st, keras.layers.Flatten(),
                              keras.layers.Dense(3, name="head")])
    # A non-zero head kernel: the whole localisation network gets a gradient.
    kernel = np.random.default_rng(0).normal(0, 0.05, st.regressor.kernel.shape)
    st.regressor.kernel.assign(kernel)
    return model


def localiser_weights(model):
    st = model.get_layer("st")
    return [keras.ops.convert_to_numpy(w) for w in st.localisation.trainable_weights
            + st.regressor.trainable_weights]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_warmup_holds_the_localiser_still_then_lets_it_learn(optimizer):
    images = random_images((8, 12, 12, 1))
    targets = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    held, free = warmup_model(2), warmup_model(0)
    for model in (held, free):
        model.compile(keras.optimizers.get({"class_name": optimizer,
                                            "config": {"learning_rate": 0.01}}), "mse")
    start = localiser_weights(held)
    np.testing.assert_array_equal(held(images), free(images))
    for step in (1, 2):
        held.train_on_batch(images, targets)
        free.train_on_batch(images, targets)
        if step == 1:
            # Same forward pass, same step for the layers after the transformer.
            np.testing.assert_allclose(held.get_layer("head").get_weights()[0],
                                       free.get_layer("head").get_weights()[0], atol=1e-6)
        # The localisation network and head stay bit for bit where they started,
        # where without the warm-up they move.
        for before, now in zip(start, localiser_weights(held)):
            np.testing.assert_array_equal(now, before)
        assert max(np.abs(a - b).max() for a, b in zip(start, localiser_weights(free))) > 1e-4
        assert int(keras.ops.convert_to_numpy(held.get_layer("st").training_calls)) == step
    # Predicting and evaluating are not training calls.
    held.predict(images, verbose=0)
    held.evaluate(images, targets, verbose=0)
    assert int(keras.ops.convert_to_numpy(held.get_layer("st").training_calls)) == 2
    held.train_on_batch(images, targets)
    moved = [np.abs(now - before).max() > 1e-6
             for before, now in zip(start, localiser_weights(held))]
    assert all(moved), moved


def test_warmup_count_is_saved_and_a_reloaded_model_resumes_it(tmp_path):
    images = random_images((8, 12, 12, 1))
    targets = np.zeros((8, 3), "float32")
    model = warmup_model(5)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(images, targets, batch_size=4, epochs=1, verbose=0)  # two steps
    path = str(tmp_path / "warm.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("st").warmup_steps == 5
    assert int(keras.ops.convert_to_numpy(loaded.get_layer("st").training_calls)) == 2


def test_warmup_is_the_same_forward_pass_and_adds_no_weight_when_off():
    images = random_images((2, 12, 12, 1))
    assert "training_calls" not in [w.name for w in warmup_model(0).weights]
    held = warmup_model(3)
    held(images)
    assert held.get_layer("st").training_calls.trainable is False
    np.testing.assert_array_equal(held(images, training=True),
                                  warmup_model(0)(images, training=True))


def test_constant_padding_and_antialias_reach_the_sampler():
    images = random_images((2, 24, 24, 2))
    st = keras_stn.SpatialTransformer("attention", output_size=(6, 6), padding_mode="constant",
                                      fill_value=[0.5, -1.0], antialias=True)
    st(images)
    st.regressor.bias.assign([3.0, 0.0, 0.0])  # zoom out: the corners read the fill
    out, grid, _ = st.sample_with_grid(images)
    expected = ops.sample(images, grid, padding_mode="constant", fill_value=[0.5, -1.0],
                          antialias=True)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(np.asarray(out)[:, 0, 0], [[0.5, -1.0]] * 2, atol=1e-6)


def test_mask_is_the_validity_of_the_grid():
    images = random_images((2, 10, 12, 1))
    st = keras_stn.SpatialTransformer("attention", return_mask=True, return_transform=True)
    st((images))
    st.regressor.bias.assign([1.0, 0.5, 0.0])
    output, theta, mask = st(images)
    _, grid, _ = st.sample_with_grid(images)
    assert tuple(mask.shape) == (2, 10, 12, 1) and tuple(theta.shape) == (2, 3)
    np.testing.assert_array_equal(mask, ops.validity_mask(grid, (10, 12)))
    assert np.asarray(mask)[0, 0, -1, 0] == 0.0 and np.asarray(mask)[0, 0, 0, 0] == 1.0


def test_several_transformers_concatenate_their_outputs():
    images = random_images((3, 16, 16, 2))
    st = keras_stn.SpatialTransformer("affine", output_size=(8, 8), num_transformers=4,
                                      initial_transform="tiles", return_transform=True,
                                      return_mask=True)
    output, theta, mask = st(images)
    assert tuple(output.shape) == (3, 8, 8, 8)
    assert tuple(theta.shape) == (3, 4, 6) and tuple(mask.shape) == (3, 8, 8, 4)
    tiles = keras_stn.transforms.tile_parameters("affine", 4)
    for k in range(4):
        grid = ops.affine_grid(tiles[k:k + 1].astype("float32").repeat(3, 0), (8, 8))
        np.testing.assert_array_equal(output[..., 2 * k:2 * k + 2], ops.sample(images, grid))
    # Tile 0 is the top left quarter, pixel for pixel.
    np.testing.assert_allclose(np.asarray(output)[..., :2], images[:, :8, :8], atol=1e-6)


def test_unknown_input_size_fits_and_saves(tmp_path):
    inputs = keras.Input((None, None, 1))
    x = keras_stn.SpatialTransformer(output_size=(12, 12))(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse", jit_compile=True)
    for size in ((20, 30), (12, 12)):
        model.fit(random_images((4, *size, 1)), np.zeros((4, 2)), verbose=0)
    testing.run_saving_test({"unknown": model}, random_images((2, 17, 23, 1)), tmp_path)


def test_volumes_fit_compile_and_save(tmp_path):
    volumes = random_images((4, 8, 10, 12, 1))
    model = keras.Sequential([
        keras.Input((8, 10, 12, 1)),
        keras_stn.SpatialTransformer("affine3d", output_size=(6, 6, 6), warmup_steps=1),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
    ])
    identity = keras_stn.SpatialTransformer("attention3d")
    np.testing.assert_array_equal(identity(volumes), volumes)
    model.compile("adam", "mse", jit_compile=True)
    history = model.fit(volumes, np.ones((4, 2)), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    # One step each epoch, counted under XLA too.
    assert int(keras.ops.convert_to_numpy(model.layers[0].training_calls)) == 2
    testing.run_saving_test({"volume": model}, volumes[:2], tmp_path)


@pytest.mark.parametrize(
    "argument, kwargs",
    [
        ("learning_rate_multiplier", dict(learning_rate_multiplier=0)),
        ("learning_rate_multiplier", dict(learning_rate_multiplier="fast")),
        ("identity_penalty", dict(identity_penalty=-1.0)),
        ("warmup_steps", dict(warmup_steps=-1)),
        ("warmup_steps", dict(warmup_steps=2.5)),
        ("warmup_steps", dict(warmup_steps=True)),
        ("num_transformers", dict(num_transformers=0)),
        ("initial_transform", dict(initial_transform="random")),
        ("antialias", dict(antialias="yes")),
        ("antialias", dict(antialias=True, interpolation="nearest")),
        ("padding_mode", dict(padding_mode="wrap")),
        ("fill_value", dict(fill_value=0.5)),
        ("fill_value", dict(padding_mode="constant", fill_value="grey")),
        ("return_mask", dict(return_mask="no")),
        ("output_size", dict(transform="affine3d", output_size=(4, 4))),
    ],
)
def test_exception_bad_option_is_named(argument, kwargs):
    assert_value_error_names(lambda: keras_stn.SpatialTransformer(**kwargs), argument)


@pytest.mark.parametrize(
    "argument, layer, shape",
    [
        ("fill_value", dict(padding_mode="constant", fill_value=[1.0, 2.0]), (2, 8, 8, 3)),
        ("inputs", dict(transform="affine3d"), (2, 8, 8, 3)),
        ("inputs", dict(transform="affine"), (2, 4, 8, 8, 3)),
    ],
    ids=["fill_per_channel", "volume_family_on_images", "image_family_on_volumes"],
)
def test_exception_input_that_does_not_fit_is_named(argument, layer, shape):
    st = keras_stn.SpatialTransformer(**layer)
    assert_value_error_names(lambda: st(np.zeros(shape, "float32")), argument)
