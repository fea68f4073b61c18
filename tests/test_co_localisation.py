"""The co-localisation example (paper appendix A.2) in its smoke mode, and its parts:
the canvases and their boxes, the transformer's box, intersection over union."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "co_localisation.py")


def load_example():
    return testing.load_script(EXAMPLE)


@pytest.mark.slow
def test_smoke_run_reports_every_digit_and_setting_and_draws_the_crops(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, EXAMPLE, "--smoke", "--digits", "3,8", "--out-dir", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["success_rates"]) == {"T", "TC"}
    for setting in ("T", "TC"):
        assert set(results["success_rates"][setting]) == {"3", "8"}
        assert all(0 <= r <= 100 for r in results["success_rates"][setting].values())
        assert (out / f"co_localisation_{setting}.png").stat().st_size > 2000
    assert results["images_from"] == "test digits"
    assert "| 3 | " in result.stdout and "| 100 |" in result.stdout  # the paper's T column
    assert "co_localisation_T.png, co_localisation_TC.png" in result.stdout


def test_digits_are_placed_inside_their_boxes():
    example = load_example()
    digits = np.full((20, 28, 28), 255, "uint8")  # solid squares: the ink is the box
    images, boxes = example.make_images(digits, digits, False, np.random.default_rng(0))
    assert images.shape == (20, 84, 84, 1) and boxes.shape == (20, 4)
    for image, (x0, y0, x1, y1) in zip(images[..., 0], boxes):
        assert (x1 - x0, y1 - y0) == (28, 28)
        rows, columns = np.nonzero(image > 0.5)
        assert (columns.min(), columns.max() + 1, rows.min(), rows.max() + 1) == (x0, x1, y0, y1)


def test_clutter_adds_ink_outside_the_digit():
    example = load_example()
    blank = np.zeros((10, 28, 28), "uint8")
    ink = np.full((5, 28, 28), 255, "uint8")
    images, _ = example.make_images(blank, ink, True, np.random.default_rng(0))
    # 16 patches of 6x6 per image, overlapping at most: between 36 and 16 * 36 pixels.
    counts = (images > 0.5).sum(axis=(1, 2, 3))
    assert np.all(counts >= 36) and np.all(counts <= 16 * 36)
    plain, _ = example.make_images(blank, ink, False, np.random.default_rng(0))
    assert plain.max() == 0


def test_attention_box_by_hand():
    example = load_example()
    # Identity: the whole canvas; s = 1/3 at the centre: the middle 28x28.
    boxes = example.attention_boxes([[1, 0, 0], [1 / 3, 0, 0], [1 / 3, -2 / 3, 2 / 3]])
    np.testing.assert_allclose(
        boxes, [[0, 0, 84, 84], [28, 28, 56, 56], [0, 56, 28, 84]], atol=1e-9
    )


def test_iou_by_hand():
    example = load_example()
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 84, 84]])
    b = np.array([[1, 0, 3, 2], [0, 0, 2, 2], [5, 5, 6, 6], [0, 0, 28, 28]])
    np.testing.assert_allclose(example.iou(a, b), [1 / 3, 1, 0, 1 / 9])


@pytest.mark.parametrize(
    "args", [("--settings", "T,X"), ("--settings", ","), ("--digits", "1,10"),
             ("--digits", "a"), ("--steps", "0"), ("--margin", "-1"), ("--min-scale", "1"),
             ("--initial-scale", "0.1")]
)
def test_bad_flags_are_refused(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example().parse_args(list(args))
    assert exit_info.value.code == 2 and "error" in capsys.readouterr().err


def test_defaults_are_the_documented_run():
    args = load_example().parse_args([])
    assert args.settings == ["T", "TC"] and args.digits == list(range(10))
    assert args.margin == 1.0 and args.images == 100


def test_the_box_stays_inside_the_canvas_and_starts_where_asked():
    example = load_example()
    layer = example.BoxInsideCanvas(0.2)
    raw = np.array([[-50.0, 50.0, -50.0], [50.0, 3.0, 0.0], [0.0, 0.0, 0.0]], "float32")
    theta = keras.ops.convert_to_numpy(layer(raw))
    s, t = theta[:, 0], theta[:, 1:]
    np.testing.assert_allclose(s, [0.2, 1.0, 0.6], atol=1e-6)  # min, max, the middle
    assert np.all(np.abs(t) <= 1 - s[:, None] + 1e-6)  # |t| + s <= 1: inside
    np.testing.assert_allclose(t[0], [0.8, -0.8], atol=1e-6)  # pushed to the corner
    boxes = example.attention_boxes(theta)
    assert boxes.min() >= -1e-4 and boxes.max() <= 84 + 1e-4
    model = example.build_transformer(1 / 3, 0.2)
    _, start = model(np.random.default_rng(0).uniform(size=(2, 84, 84, 1)).astype("float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(start), [[1 / 3, 0, 0]] * 2, atol=1e-6)


def test_triplet_loss_by_hand():
    example = load_example()
    anchor = np.array([[0.0, 0.0], [0.0, 0.0]], "float32")
    positive = np.array([[1.0, 0.0], [0.0, 0.5]], "float32")  # near: 1, 0.25
    negative = np.array([[0.0, 0.5], [3.0, 0.0]], "float32")  # far: 0.25, 9
    # max(0, 1 - 0.25 + 1) = 1.75 and max(0, 0.25 - 9 + 1) = 0: the mean is 0.875.
    loss = example.triplet_loss(anchor, positive, negative, 1.0)
    np.testing.assert_allclose(float(loss), 0.875, rtol=1e-6)


def test_random_crops_keep_the_scale_and_stay_inside():
    example = load_example()
    canvas = np.zeros((2, 84, 84, 1), "float32")
    canvas[:, :28, :28] = 1.0  # ink in the top-left 28x28 only
    scale = np.full((2, 1), 1 / 3, "float32")
    # Shifts of -1 put the digit-sized box in the top-left corner, +1 in the bottom-right.
    crops = keras.ops.convert_to_numpy(
        example.random_crops(canvas, scale, np.float32([[-1, -1], [1, 1]])))
    assert crops.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(crops[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(crops[1], 0.0, atol=1e-6)


def test_landscape_boxes_lie_at_the_asked_distance():
    script = testing.load_script(os.path.join(ROOT, "scripts", "co_localisation_landscape.py"))
    boxes = np.array([[28.0, 28.0, 56.0, 56.0]] * 50)  # digits at the canvas's centre
    for offset in (0, 8, 21):
        theta = script.boxes_at(boxes, offset, np.random.default_rng(offset))
        np.testing.assert_allclose(theta[:, 0], 1 / 3, rtol=1e-6)
        distance = np.linalg.norm(theta[:, 1:] * 42, axis=1)  # from the centre, in px
        np.testing.assert_allclose(distance, offset, atol=1e-3)
    # Far away, the box is kept inside the canvas.
    theta = script.boxes_at(boxes, 200, np.random.default_rng(0))
    assert np.all(np.abs(theta[:, 1:]) <= 2 / 3 + 1e-6)
