"""tf.distribute strategies train models that hold a SpatialTransformer.

Each run is a fresh process: logical devices and TF_CONFIG must be set before
TensorFlow starts.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

MODEL = """
import numpy as np, keras, tensorflow as tf, keras_stn

def make_model(jit_compile):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        keras_stn.SpatialTransformer("affine"),
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


def run_python(code, env=None, timeout=240):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


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
reference = make_model(jit_compile=True)
initial = [w.numpy() for w in reference.weights]
reference.fit(images, targets, batch_size=16, epochs=2, shuffle=False, verbose=0)

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    # XLA cannot compile one step over variables on two logical devices (TF's
    # "tf.Variable on a different device" limitation): no jit under the strategy.
    mirrored = make_model(jit_compile=False)
for variable, value in zip(mirrored.weights, initial):
    variable.assign(value)
mirrored.fit(images, targets, batch_size=16, epochs=2, shuffle=False, verbose=0)
differences = [float(np.abs(a.numpy() - b.numpy()).max())
               for a, b in zip(reference.weights, mirrored.weights)]
moved = float(max(np.abs(w.numpy() - v).max() for w, v in zip(reference.weights, initial)))
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "difference": max(differences), "moved": moved}))
"""
    )
    report = json.loads(run_python(code).strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["moved"] > 1e-3  # training did something
    assert report["difference"] <= 1e-5


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_on_localhost():
    # A custom training loop: Keras 3.15's `fit` under MultiWorkerMirroredStrategy fails
    # for any model in TF 2.21 (its symbolic build reduces PerReplica batches eagerly).
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    code = (
        MODEL
        + """
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

initial = [v.numpy() for v in model.trainable_variables]
losses = [float(train_step(batch)) for _ in range(2) for batch in dataset]
moved = max(float(np.abs(v.numpy() - w).max())
            for v, w in zip(model.trainable_variables, initial))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": losses, "moved": moved,
                  "weights": [float(np.sum(v.numpy())) for v in model.trainable_variables]}))
"""
    )
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": json.dumps(config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    reports = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=240)
            assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for process in processes:
            process.kill()
    for report in reports:
        assert report["replicas"] == 2
        assert report["moved"] > 1e-3
        assert np.all(np.isfinite(report["loss"]))
    # The two workers hold one model: equal losses and weights.
    assert reports[0]["loss"] == pytest.approx(reports[1]["loss"], rel=1e-6)
    assert reports[0]["weights"] == pytest.approx(reports[1]["weights"], rel=1e-6)
