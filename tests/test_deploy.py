"""Deployment: an exported spatial transformer converted to LiteRT and to ONNX computes
what Keras computes, points at infinity included (they read 0, never NaN).

tf2onnx and onnxruntime come with the `test` extra; the LiteRT converter and
interpreter come with TensorFlow.
"""

import warnings

import keras
import numpy as np
import pytest

import keras_stn
from tests import testing

SIZE, OUT = 12, 8
# A homography whose w' = 1 + 8 x is 0 on the output column x = -0.125 (column 3 of 8,
# align_corners=False): that column is at infinity, its neighbours are far outside.
AT_INFINITY = np.array([1.0, 0.1, 0.0, -0.1, 1.0, 0.05, 8.0, 0.0], "float32")
COLUMN = 3
MATRIX = keras_stn.transforms.Projective("matrix")  # theta is the homography itself
AFFINE = np.array([1.1, 0.2, 0.1, -0.1, 0.9, 0.05], "float32")


def transformer_model():
    """Transformers whose theta is fixed by their head's bias (a zero kernel): the
    projective ones put a column at infinity."""
    inputs = keras.Input((SIZE, SIZE, 2))
    outputs = []
    settings = [
        (MATRIX, AT_INFINITY, {"interpolation": "bilinear"}),
        (MATRIX, AT_INFINITY, {"interpolation": "nearest"}),
        (MATRIX, AT_INFINITY, {"padding_mode": "border"}),
        (MATRIX, AT_INFINITY, {"padding_mode": "reflection", "interpolation": "nearest"}),
        (MATRIX, AT_INFINITY, {"padding_mode": "constant", "fill_value": 0.5}),
        (MATRIX, AT_INFINITY, {"antialias": True, "return_mask": True}),
        ("affine", AFFINE, {"align_corners": True}),
        ("tps", None, {"padding_mode": "reflection"}),
    ]
    layers = []
    for family, bias, options in settings:
        # A small localisation network: the converters' time goes to the sampler.
        localisation = keras.Sequential([keras.layers.AveragePooling2D(4),
                                         keras.layers.Flatten()])
        layer = keras_stn.SpatialTransformer(family, output_size=(OUT, OUT),
                                             localisation=localisation, **options)
        result = layer(inputs)
        outputs.extend(result if isinstance(result, (list, tuple)) else [result])
        layers.append((layer, bias))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(3)
    for layer, bias in layers:
        if bias is None:  # TPS: control points moved a little
            bias = np.asarray(layer.regressor.bias) + rng.normal(0, 0.1, layer.regressor.bias.shape)
        layer.regressor.bias.assign(np.asarray(bias, "float32"))
    return model


@pytest.fixture(scope="module")
def model_and_data():
    model = transformer_model()
    images = testing.random_images((3, SIZE, SIZE, 2), seed=5) + 0.5
    expected = testing.flat_outputs(model, images)
    # The projective column at infinity reads 0 (the fill value with "constant").
    for index in (0, 1, 2, 3):
        np.testing.assert_array_equal(expected[index][:, :, COLUMN], 0.0)
    np.testing.assert_array_equal(expected[4][:, :, COLUMN], 0.5)
    assert all(np.isfinite(e).all() for e in expected)
    return model, images, expected


def assert_matches(outputs, expected, atol):
    assert len(outputs) == len(expected)
    for index, (got, want) in enumerate(zip(outputs, expected)):
        assert got.shape == want.shape, index
        assert np.isfinite(got).all(), f"output {index} has non-finite values"
        np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=f"output {index}")


@pytest.mark.slow
def test_litert_conversion_computes_what_keras_computes(model_and_data, tmp_path):
    import tensorflow as tf

    model, images, expected = model_and_data
    path = str(tmp_path / "model.tflite")
    model.export(path, format="litert", verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter is deprecated for ai-edge-litert
        interpreter = tf.lite.Interpreter(model_path=path)
    signature = interpreter.get_signature_runner()
    (input_name,) = signature.get_input_details()
    outputs = []
    for batch in range(len(images)):  # the LiteRT model has a batch of one
        result = signature(**{input_name: images[batch : batch + 1]})
        outputs.append([result[k] for k in sorted(result, key=_output_index)])
    got = [np.concatenate(parts) for parts in zip(*outputs)]
    assert_matches(got, expected, atol=1e-5)


@pytest.mark.slow
def test_onnx_conversion_computes_what_keras_computes(model_and_data, tmp_path):
    import onnxruntime

    model, images, expected = model_and_data
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (feed,) = session.get_inputs()
    for batch in (1, 3):  # any batch size
        got = session.run(None, {feed.name: images[:batch]})
        assert_matches(got, [e[:batch] for e in expected], atol=1e-5)


def _output_index(name):
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else 0
