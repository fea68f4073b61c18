""".keras round trips of models that hold SpatialTransformers, loaded in a fresh
process that imports keras_stn, under the default safe_mode=True."""

import os

import keras
import numpy as np
import pytest

import keras_stn
from tests import testing

FAMILIES = sorted(n for n, f in keras_stn.transforms.FAMILIES.items() if f.rank == 2)


def classifier(transformer):
    return keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            transformer,
            keras.layers.Conv2D(3, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )


def localisation_networks():
    inputs = keras.Input((16, 16, 1))
    functional = keras.Model(
        inputs, keras.layers.Dense(6, activation="tanh")(keras.layers.Flatten()(inputs))
    )
    return {
        "layer": keras.layers.Flatten(),
        "sequential": keras.Sequential(
            [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D()]
        ),
        "functional": functional,
    }


def pair_input_model():
    """Localises a half-size copy, samples the full image, returns theta too."""
    inputs = keras.Input((16, 16, 1))
    small = keras.layers.AveragePooling2D(2)(inputs)
    out, theta = keras_stn.SpatialTransformer(
        "attention", output_size=(8, 8), return_transform=True
    )([inputs, small])
    return keras.Model(inputs, [keras.layers.Dense(4)(keras.layers.Flatten()(out)), theta])


def mask_model():
    """Returns the output, theta and the validity mask of a transformer."""
    inputs = keras.Input((16, 16, 1))
    out, theta, mask = keras_stn.SpatialTransformer(
        "projective", return_transform=True, return_mask=True
    )(inputs)
    return keras.Model(inputs, [out, theta, mask])


def perturb(model, seed):
    """Moves every weight off its initial value, so that a weight lost on load shows
    and the regression heads no longer output the identity."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(variable + rng.normal(0, 0.02, variable.shape).astype("float32"))


def test_keras_round_trip_in_a_fresh_process(tmp_path):
    models = {f"family_{name}": classifier(keras_stn.SpatialTransformer(name)) for name in FAMILIES}
    models["tps_own_control_points"] = classifier(
        keras_stn.SpatialTransformer(
            keras_stn.transforms.TPS(control_points=[[-1, -1], [1, -1], [0, 1], [0.1, 0.2]]),
            output_size=(12, 10),
            padding_mode="border",
        )
    )
    for name, localisation in localisation_networks().items():
        models[f"localisation_{name}"] = classifier(
            keras_stn.SpatialTransformer("affine", localisation=localisation)
        )
    models["pair_input_and_theta"] = pair_input_model()
    models["nearest_reflection_align_corners"] = classifier(
        keras_stn.SpatialTransformer(
            "projective", interpolation="nearest", padding_mode="reflection", align_corners=True
        )
    )
    models["mixed_bfloat16"] = classifier(keras_stn.SpatialTransformer(dtype="mixed_bfloat16"))
    models["training_aids"] = classifier(
        keras_stn.SpatialTransformer(
            "affine", learning_rate_multiplier=0.1, identity_penalty=0.01, antialias=True,
            padding_mode="constant", fill_value=[0.25], output_size=(8, 8), warmup_steps=5,
        )
    )
    models["two_tiles"] = classifier(
        keras_stn.SpatialTransformer("attention", num_transformers=2, initial_transform="tiles")
    )
    models["outputs_and_mask"] = mask_model()
    for seed, model in enumerate(models.values()):
        perturb(model, seed)
    images = testing.random_images((3, 16, 16, 1))
    testing.run_saving_test(models, images, tmp_path, fresh_process=True, atol=1e-6)


def test_channels_first_round_trip(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((2, 12, 10)),
            keras_stn.SpatialTransformer("similarity", data_format="channels_first"),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )
    perturb(model, 0)
    images = testing.random_images((2, 2, 12, 10))
    testing.run_saving_test({"channels_first": model}, images, tmp_path)


def test_a_projective_model_saved_by_0_1_0_loads_with_its_matrix_form():
    # Made by keras_stn 0.1.0, when theta was the homography's matrix and a saved config
    # named the family "projective": a SpatialTransformer whose head's bias is a
    # homography with perspective, and a GridGenerator. Loaded today, both must read
    # theta as the matrix still, not as the keystone form "projective" now means.
    data = os.path.join(os.path.dirname(__file__), "data")
    model = keras.saving.load_model(os.path.join(data, "projective_0.1.0.keras"))
    saved = np.load(os.path.join(data, "projective_0.1.0.npz"))
    assert model.get_layer("st").transform == keras_stn.transforms.Projective("matrix")
    assert model.get_layer("grid").transform == keras_stn.transforms.Projective("matrix")
    output, grid = model.predict([saved["images"], saved["thetas"]], verbose=0)
    np.testing.assert_allclose(output, saved["output"], atol=1e-6)
    np.testing.assert_allclose(grid, saved["grid"], atol=1e-6)


@pytest.mark.parametrize("form", ["keystone", "corners", "matrix"])
def test_projective_layers_keep_their_form_through_a_config(form):
    family = keras_stn.transforms.Projective(form)
    for layer in (keras_stn.SpatialTransformer(family), keras_stn.GridGenerator(family, (3, 3))):
        again = type(layer).from_config(layer.get_config())
        assert again.transform == family
