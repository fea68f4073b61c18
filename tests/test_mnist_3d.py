"""The 3-D MNIST example: its volumes against hand-placed digits, its flags, and a
smoke run end to end in a fresh interpreter."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "mnist_3d.py")


def run(*args, cwd):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # As a user runs it: the example quiets TF itself.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, EXAMPLE, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def example():
    return testing.load_script(EXAMPLE)


def upright(count=1):
    return np.tile(np.eye(3, 4), (count, 1, 1))


def a_digit():
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 4:24, 12:15] = 255  # a bar down the middle ...
    digit[0, 4:7, 15:22] = 128   # ... with a flag to its right at the top
    return digit


# ------------------------------------------------------------- the volumes, by hand


def test_upright_slab_fills_its_voxels_exactly(example):
    # 60^3 as in the paper: the digit's 28 pixels are voxels 16..43, and a slab 14
    # pixels thick is voxels 23..36 of the depth, each voxel one pixel of the slab.
    volume = example.render(a_digit(), upright(), 60, 14)[0, ..., 0]
    expected = np.zeros((60, 60, 60), np.float32)
    expected[23:37, 16:44, 16:44] = a_digit()[0] / 255.0
    np.testing.assert_allclose(volume, expected, atol=1e-6)


def test_projection_of_the_upright_slab_is_the_digit(example):
    # The mean along the depth, times projection_scale: the digit's own intensities.
    volume = example.render(a_digit(), upright(), 60, 14)
    seen = volume.mean(axis=1)[0, ..., 0] * example.projection_scale(14)
    np.testing.assert_allclose(seen[16:44, 16:44], a_digit()[0] / 255.0, atol=1e-5)
    assert np.all(seen[:16] == 0) and np.all(seen[44:] == 0)


def test_a_shift_moves_the_slab_by_whole_voxels(example):
    poses = upright()
    poses[0, :, 3] = [4 / 60, -6 / 60, 2 / 60]  # 2 voxels right, 3 up, 1 deeper
    volume = example.render(a_digit(), poses, 60, 14)[0, ..., 0]
    expected = np.zeros((60, 60, 60), np.float32)
    expected[24:38, 13:41, 18:46] = a_digit()[0] / 255.0
    np.testing.assert_allclose(volume, expected, atol=1e-5)


def test_a_quarter_turn_about_z_turns_the_digit_clockwise_as_shown(example):
    # y runs down the image: the right-handed quarter turn about z (x right, y down)
    # sends the digit's right side down, clockwise on the screen.
    poses = upright()
    poses[0, :, :3] = example.rotation(np.zeros(1), np.zeros(1), np.array([np.pi / 2]))[0]
    volume = example.render(a_digit(), poses, 60, 14)[0, ..., 0]
    np.testing.assert_allclose(volume[30, 16:44, 16:44], np.rot90(a_digit()[0], -1) / 255.0,
                               atol=1e-5)


def test_a_quarter_tilt_stands_the_slab_on_its_edge(example):
    # Turned by 90 degrees about x, the slab's thickness runs along y and its height
    # along the depth: the projection along the depth is a thin band.
    poses = upright()
    poses[0, :, :3] = example.rotation(np.array([np.pi / 2]), np.zeros(1), np.zeros(1))[0]
    volume = example.render(a_digit(), poses, 60, 14)[0, ..., 0]
    rows = np.flatnonzero(volume.max(axis=(0, 2)) > 0)
    assert rows.min() >= 23 and rows.max() <= 36  # 14 voxels thick, in y now
    depths = np.flatnonzero(volume.max(axis=(1, 2)) > 0)
    assert depths.min() >= 16 and depths.max() <= 43  # the digit's height, in depth


def test_rotations_are_rotations(example, rng):
    matrices = example.rotation(*rng.uniform(-np.pi, np.pi, (3, 5)))
    np.testing.assert_allclose(matrices @ np.swapaxes(matrices, 1, 2), np.tile(np.eye(3), (5, 1, 1)),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(matrices), 1.0, atol=1e-12)


def test_drawn_poses_stay_in_their_ranges(example, rng):
    poses = example.draw_poses(rng, 200, max_tilt=30, max_turn=45, scale=(0.8, 1.2),
                               max_shift=0.2)
    assert poses.shape == (200, 3, 4)
    scales = np.cbrt(np.linalg.det(poses[:, :, :3]))
    assert scales.min() >= 0.8 and scales.max() <= 1.2
    assert np.abs(poses[:, :, 3]).max() <= 0.2
    # The slab's normal (its z axis) leans at most by the two tilts together.
    normal = poses[:, :, 2] / scales[:, None]
    assert np.degrees(np.arccos(normal[:, 2])).max() <= np.degrees(
        np.arccos(np.cos(np.radians(30)) ** 2)) + 1e-9


def test_ray_tilt_of_a_fixed_view_is_the_slabs_lean(example):
    poses = upright(3)
    poses[1, :, :3] = example.rotation(np.radians([30.0]), np.zeros(1), np.zeros(1))[0]
    poses[2, :, :3] = 1.2 * example.rotation(np.zeros(1), np.radians([-20.0]),
                                             np.radians([40.0]))[0]  # a turn about z: no lean
    np.testing.assert_allclose(example.ray_tilts(poses), [0.0, 30.0, 20.0], atol=1e-9)


def test_ray_tilt_after_a_transformer_that_undoes_the_pose_is_zero(example, rng):
    poses = example.draw_poses(rng, 5, max_tilt=45, max_turn=45, scale=(0.8, 1.2),
                               max_shift=0.2)
    # theta = the pose itself: the output frame is the slab's own, rays along its normal.
    np.testing.assert_allclose(example.ray_tilts(poses, poses.reshape(5, 12)), 0.0, atol=1e-6)
    # The identity transformer leaves the fixed view's tilt.
    identity = np.tile(np.eye(3, 4).reshape(1, 12), (5, 1))
    np.testing.assert_allclose(example.ray_tilts(poses, identity), example.ray_tilts(poses))


def test_models_see_what_the_docs_say(example):
    cnn = example.build_model("cnn", 32, 14)
    st = example.build_model("st", 32, 14, out_size=(8, 28, 28))
    assert cnn.get_layer("projection_scale").output.shape == (None, 32, 32, 1)
    assert st.get_layer("projection_scale").output.shape == (None, 28, 28, 1)
    assert st.get_layer("st").transform.name == "affine3d"
    # The same CNN: the same layers and shapes behind the projection.
    kinds = [type(layer).__name__ for layer in cnn.layers if layer.name.startswith("classifier")]
    assert kinds == [type(layer).__name__ for layer in st.layers
                     if layer.name.startswith("classifier")]


# ------------------------------------------------------------------------ the flags


@pytest.mark.parametrize(
    "args",
    [("--models", "cnn,rnn"), ("--epochs", "0"), ("--size", "16"), ("--thickness", "0"),
     ("--scale", "1.2", "0.8"), ("--out-size", "8", "16", "16"), ("--validation-digits", "-1")],
)
def test_bad_flags_are_refused(example, args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        example.parse_args(list(args))
    assert exit_info.value.code == 2 and "error" in capsys.readouterr().err


def test_help_shows_the_defaults(example, capsys):
    with pytest.raises(SystemExit):
        example.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("cnn,st", "32", "14.0", "45.0", "(8, 28, 28)", "0.001"):
        assert f"(default: {default})" in text, default


# ------------------------------------------------------------------------ end to end


def test_smoke_run_trains_both_prints_the_table_and_saves_pictures(tmp_path):
    out = tmp_path / "out"
    result = run("--smoke", "--verbose", "0", "--out-dir", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stdout = result.stdout
    assert "bundled" in stdout or "tfds" in stdout
    for label in ("CNN", "3-D ST-CNN"):
        assert f"| {label} |" in stdout
    results = json.loads((out / "results_mnist_3d.json").read_text())
    assert set(results["errors"]) == {"cnn", "st"} and results["evaluated_on"] == "test"
    assert set(results["median_tilt_degrees"]) == {"cnn", "st"}
    assert 0 <= results["median_tilt_degrees"]["cnn"] <= 90
    assert all(0 <= e <= 100 for e in results["errors"].values())
    assert (out / "results_mnist_3d.md").read_text().startswith("3-D MNIST")
    assert (out / "mnist_3d_views.png").stat().st_size > 1000
    closing = stdout[stdout.rindex("In ") :]
    for name in ("results_mnist_3d.md", "results_mnist_3d.json", "mnist_3d_views.png"):
        assert name in closing, name
    for noise in ("cuInit", "cudart_stub", "cpu_feature_guard", "InitializeLog"):
        assert noise not in result.stderr, result.stderr[-3000:]


def test_smoke_validation_run_reports_held_out_digits(tmp_path):
    result = run("--smoke", "--models", "st", "--validation-digits", "16", "--verbose", "0",
                 "--out-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "results_mnist_3d.json").read_text())
    assert results["evaluated_on"] == "validation" and set(results["errors"]) == {"st"}
    assert results["evaluated_digits"] == 16
    assert "held-out training digits" in result.stdout
