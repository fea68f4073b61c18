"""Write tests/data/projective_0.1.0.keras and .npz with keras_stn 0.1.0 (test_saving reads them).

0.1.0's theta for "projective" was the homography's matrix; a model saved then must load
in that form today. Run it against a 0.1.0 checkout, not this one:

    git worktree add /tmp/keras_stn-0.1.0 91e37b4
    PYTHONPATH=/tmp/keras_stn-0.1.0 python scripts/make_projective_fixture_0_1_0.py
"""

import os

import keras
import numpy as np

import keras_stn

if keras_stn.__version__ != "0.1.0":
    raise SystemExit(f"needs keras_stn 0.1.0 on PYTHONPATH; found {keras_stn.__version__}")

images = keras.Input((8, 8, 1), name="images")
thetas = keras.Input((8,), name="thetas")
output = keras_stn.SpatialTransformer("projective", name="st")(images)
grid = keras_stn.GridGenerator("projective", (3, 3), name="grid")(thetas)
model = keras.Model([images, thetas], [output, grid])

# The head's bias: a homography with perspective (h31, h32 nonzero), so reading it in
# any other form would sample elsewhere.
head = model.get_layer("st").regressor
head.bias.assign(np.array([0.9, 0.1, 0.05, -0.1, 1.1, -0.05, 0.15, -0.1], "float32"))

rng = np.random.default_rng(0)
inputs = {
    "images": rng.uniform(size=(2, 8, 8, 1)).astype("float32"),
    "thetas": np.array(
        [[1.0, 0.2, 0.1, -0.1, 0.8, 0.0, 0.2, 0.1], [0.7, 0.0, -0.2, 0.1, 1.2, 0.1, -0.1, 0.3]],
        "float32",
    ),
}
predicted_output, predicted_grid = model.predict([inputs["images"], inputs["thetas"]], verbose=0)

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "data")
model.save(os.path.join(here, "projective_0.1.0.keras"))
np.savez(
    os.path.join(here, "projective_0.1.0.npz"),
    images=inputs["images"],
    thetas=inputs["thetas"],
    output=predicted_output,
    grid=predicted_grid,
)
print("wrote projective_0.1.0.keras and .npz with keras_stn", keras_stn.__version__)
