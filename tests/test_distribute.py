"""tf.distribute strategies train models that hold a SpatialTransformer.

Each distributed run is a fresh process: logical devices and TF_CONFIG must be set
before TensorFlow starts.
"""

import functools
import json
import socket

import keras
import numpy as np
import pytest

from tests import testing

# The model and data of every run here, in the subprocesses and in this process.
MODEL = """
import numpy as np, keras, tensorflow as tf, keras_stn

def make_model(jit_compile):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        # Held still for its first step: the step counter under every strategy.
        keras_stn.SpatialTransformer("affine", warmup_steps=1),
        keras.layers.Conv2D(2, 3),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])
    model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
    return model

rng = np.random.default_rng(0)
images = rng.uniform(size=(32, 12, 12, 1)).astype("float32")
targets = rng.normal(size=(32, 3)).astype("float32")
"""


@functools.cache
def trained_on_one_device():
    """Weights after two epochs of batch 16 on this process's one device, and the
    initial weights. Computed once, while the distributed runs start."""
    namespace = {}
    exec(MODEL, namespace)
    model = namespace["make_model"](jit_compile=True)
    initial = [keras.ops.convert_to_numpy(w) for w in model.weights]
    model.fit(
        namespace["images"], namespace["targets"], batch_size=16, epochs=2, shuffle=False,
        verbose=0,
    )
    return [keras.ops.convert_to_numpy(w) for w in model.weights], initial


def assert_same_training(weights, reference, initial):
    moved = max(np.abs(w - i).max() for w, i in zip(reference, initial))
    assert moved > 1e-3  # training did something
    assert len(weights) == len(reference)
    for got, want in zip(weights, reference):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_mirrored_strategy_on_two_devices_equals_one_device():
    code = (
        """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""
        + MODEL
        + """
import json
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    # XLA cannot compile one step over variables on two logical devices (TF's
    # "tf.Variable on a different device" limitation): no jit under the strategy.
    model = make_model(jit_compile=False)
model.fit(images, targets, batch_size=16, epochs=2, shuffle=False, verbose=0)
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "weights": [w.numpy().tolist() for w in model.weights]}))
"""
    )
    process = testing.start_python(code)
    reference, initial = trained_on_one_device()
    report = testing.finish_python(process)
    assert report["replicas"] == 2
    assert_same_training([np.array(w) for w in report["weights"]], reference, initial)


WORKER = MODEL + """
import json
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = make_model(jit_compile=False)
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
dataset = strategy.experimental_distribute_dataset(
    tf.data.Dataset.from_tensor_slices((images, targets)).batch(16))

@tf.function
def train_step(batch):
    def replica_step(x, y):
        with tf.GradientTape() as tape:
            per_example = tf.reduce_mean(tf.square(model(x, training=True) - y), axis=1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=16)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss
    return strategy.reduce("SUM", strategy.run(replica_step, args=batch), axis=None)

losses = [float(train_step(batch)) for _ in range(2) for batch in dataset]
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": losses,
                  "weights": [w.numpy().tolist() for w in model.weights]}))
"""


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_on_localhost_equals_one_device():
    # A custom training loop: in Keras 3.15 with TF 2.21, `fit` under
    # MultiWorkerMirroredStrategy fails for any model (its symbolic build reduces a
    # tuple of PerReplica batches; keras-team/keras#20585).
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = [
        testing.start_python(
            WORKER,
            env={"TF_CONFIG": json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            )},
        )
        for index in range(2)
    ]
    try:
        reference, initial = trained_on_one_device()
        reports = [testing.finish_python(process, timeout=240) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for report in reports:
        assert report["replicas"] == 2
        assert np.all(np.isfinite(report["loss"]))
        # Each worker holds the model one device trains on the global batch.
        assert_same_training([np.array(w) for w in report["weights"]], reference, initial)
    assert reports[0]["loss"] == pytest.approx(reports[1]["loss"], rel=1e-6)
