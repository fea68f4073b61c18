"""The sampler as one XLA function while training on TensorFlow (`sample_compiled`).

Keras trains without XLA on a CPU by default; the layers then read through
`sample_compiled`, which must compute what `sample` computes (values and gradients),
keep the identity exact, refuse bad input as `sample` does, and stay out of graphs
traced for inference and of exported SavedModels (TF Serving runs no XLA on a CPU by
default).
"""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import keras
import keras_stn
from keras_stn import ops

OPTIONS = [
    {},
    {"padding_mode": "border", "align_corners": True},
    {"padding_mode": "reflection"},
    {"padding_mode": "constant", "fill_value": [1.0, -2.0, 0.5]},
    {"interpolation": "nearest"},
    {"antialias": True},
]


def _read_with_gradients(read, images, theta, upstream, **options):
    @tf.function  # graph mode, no XLA around it: Keras' default on a CPU
    def step(images, theta):
        with tf.GradientTape() as tape:
            tape.watch([images, theta])
            output = read(images, ops.affine_grid(theta, upstream.shape[1:3]), **options)
        return [output] + tape.gradient(
            output, [images, theta], output_gradients=upstream,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )

    return [np.asarray(x) for x in step(images, theta)]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(map(str, o.values())) or "default")
def test_compiled_sampler_computes_what_sample_computes(options, rng):
    images = rng.random((3, 12, 10, 3), dtype=np.float32)
    theta = (np.eye(2, 3).reshape(-1) + 0.3 * rng.standard_normal((3, 6))).astype("float32")
    upstream = rng.standard_normal((3, 7, 9, 3)).astype("float32")
    plain = _read_with_gradients(ops.sample, images, theta, upstream, **options)
    compiled = _read_with_gradients(ops.sample_compiled, images, theta, upstream, **options)
    for name, a, b in zip(("output", "image gradient", "theta gradient"), plain, compiled):
        # XLA fuses multiplies and adds: rounding differs, nothing else.
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=2e-5, err_msg=name)
    assert np.abs(plain[1]).max() > 0.1  # gradients that are not trivially zero
    if options.get("interpolation") != "nearest":  # nearest passes the grid none
        assert np.abs(plain[2]).max() > 0.1


def test_compiled_identity_is_exact(rng):
    images = rng.random((2, 28, 28, 1), dtype=np.float32)
    grid = ops.affine_grid(np.tile([[1.0, 0, 0, 0, 1, 0]], (2, 1)).astype("float32"), (28, 28))
    output = tf.function(lambda i, g: ops.sample_compiled(i, g))(images, grid)
    np.testing.assert_array_equal(np.asarray(output), images)


def test_compiled_sampler_refuses_bad_input_as_sample_does():
    images = np.zeros((1, 4, 4, 1), "float32")
    grid = np.zeros((1, 2, 2, 2), "float32")
    with pytest.raises(ValueError, match="padding_mode"):
        ops.sample_compiled(images, grid, padding_mode="wrap")
    with pytest.raises(ValueError, match="fill_value"):
        ops.sample_compiled(images, grid, padding_mode="constant", fill_value=[1.0, 2.0])
    with pytest.raises(ValueError, match="antialias"):
        ops.sample_compiled(images, grid, antialias="yes")


def _xla_marks(graph_def):
    """Every node or function of a GraphDef marked for XLA compilation."""
    marked = [node.op for node in graph_def.node if node.attr["_XlaMustCompile"].b]
    for function in graph_def.library.function:
        if function.attr["_XlaMustCompile"].b:
            marked.append(function.signature.name)
        marked += [node.op for node in function.node_def if node.attr["_XlaMustCompile"].b]
    return marked


def _model(layer):
    return keras.Sequential(
        [keras.Input((16, 16, 1)), layer, keras.layers.Flatten(), keras.layers.Dense(3)]
    )


@pytest.mark.parametrize("antialias", [False, True])
def test_only_training_graphs_compile_the_sampler(antialias):
    model = _model(keras_stn.SpatialTransformer(output_size=(8, 8), antialias=antialias))
    spec = tf.TensorSpec((None, 16, 16, 1))
    for training in (True, False):
        graph = tf.function(lambda x: model(x, training=training)).get_concrete_function(spec)
        assert bool(_xla_marks(graph.graph.as_graph_def())) == training


def test_no_xla_function_nests_in_a_compiled_step():
    # Nested in an XLA-compiled step, an XLA function made TensorFlow recompile the
    # step for every batch (minutes per step): inside XLA the plain ops are used.
    model = _model(keras_stn.SpatialTransformer(output_size=(8, 8)))
    step = tf.function(lambda x: model(x, training=True), jit_compile=True)
    graph = step.get_concrete_function(tf.TensorSpec((None, 16, 16, 1))).graph
    assert _xla_marks(graph.as_graph_def()) == []


def test_sampler_layer_compiles_while_training():
    images, grid = keras.Input((16, 16, 1)), keras.Input((8, 8, 2))
    model = keras.Model([images, grid], keras_stn.Sampler()([images, grid]))
    specs = [tf.TensorSpec((None, 16, 16, 1)), tf.TensorSpec((None, 8, 8, 2))]
    for training in (True, False):
        graph = tf.function(lambda i, g: model([i, g], training=training)).get_concrete_function(
            *specs
        )
        assert bool(_xla_marks(graph.graph.as_graph_def())) == training


def test_exported_savedmodel_needs_no_xla(tmp_path):
    model = _model(keras_stn.SpatialTransformer(output_size=(8, 8)))
    model.compile(optimizer="adam", loss="mse", jit_compile=False)
    x = np.random.default_rng(0).random((8, 16, 16, 1), dtype=np.float32)
    model.fit(x, np.zeros((8, 3), "float32"), epochs=1, verbose=0)  # traces training=True
    model.export(str(tmp_path / "model"), verbose=False)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((tmp_path / "model" / "saved_model.pb").read_bytes())
    assert [_xla_marks(meta.graph_def) for meta in saved.meta_graphs] == [[]]
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    served = loaded.serve(x)
    np.testing.assert_allclose(np.asarray(served), model.predict(x, verbose=0), atol=1e-6)


def test_compiled_sampler_differentiates_twice(rng):
    # A gradient penalty through a transformer differentiates the sampler's gradient:
    # the three compiled functions must compose as `sample`'s one does (checked there
    # against finite differences).
    images = tf.constant(rng.uniform(size=(1, 4, 5, 2)).astype("float32"))
    grid = tf.constant(rng.uniform(-0.9, 0.9, size=(1, 3, 3, 2)).astype("float32"))
    weights = tf.constant(rng.uniform(-1.0, 1.0, size=(1, 3, 3, 2)).astype("float32"))

    def penalty(read):
        @tf.function
        def second(images, grid):
            with tf.GradientTape() as outer:
                outer.watch([images, grid])
                with tf.GradientTape() as inner:
                    inner.watch([images, grid])
                    loss = tf.reduce_sum(read(images, grid) * weights)
                image_grad, grid_grad = inner.gradient(loss, [images, grid])
                norm = tf.reduce_sum(image_grad**2) + tf.reduce_sum(grid_grad**2)
            return outer.gradient(norm, [images, grid])

        return [np.asarray(g) for g in second(images, grid)]

    plain, compiled = penalty(ops.sample), penalty(ops.sample_compiled)
    for a, b in zip(plain, compiled):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    assert np.abs(plain[1]).max() > 0.01
