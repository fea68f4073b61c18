"""The main example, end to end, in its smoke mode (a few steps on a few digits)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "distorted_mnist.py")


def run(*args, cwd):
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # As a user runs it: the example quiets TF itself.
    # This tree's keras_stn, whatever copy is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, EXAMPLE, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_smoke_run_trains_prints_the_table_saves_pictures_and_serves(tmp_path):
    out = tmp_path / "out"
    result = run("--smoke", "--verbose", "2", "--frames", "--models", "cnn,affine,projective,tps",
                 "--out-dir", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stdout = result.stdout
    # It says where the digits came from, and nothing was downloaded.
    assert "bundled with keras_stn" in stdout or "from TFDS" in stdout
    # The table, beside the paper's Table 1.
    for label in ("FCN", "CNN", "ST-CNN Aff", "ST-CNN Proj", "ST-CNN TPS"):
        assert f"| {label} |" in stdout
    assert "| CNN | " in stdout and "**0.8**" in stdout  # the paper's RTS column, marked
    results = json.loads((out / "results_RTS.json").read_text())
    assert set(results["errors"]) == {"cnn", "affine", "projective", "tps"}
    assert all(0 <= e <= 100 for e in results["errors"].values())
    # Pictures of each transformer, TensorBoard logs and PNG frames of each epoch.
    for key in ("affine", "projective", "tps"):
        assert (out / f"RTS_{key}_outputs.png").stat().st_size > 1000
        assert (out / f"RTS_{key}_grid.png").stat().st_size > 1000
        assert os.listdir(out / "tensorboard" / key)
        assert sorted(os.listdir(out / "frames" / key)) == ["st_0000.png", "st_0001.png"]
    # The SavedModel was reloaded with tf.saved_model.load and served.
    assert (out / "RTS_affine_savedmodel" / "saved_model.pb").exists()
    assert "serving_default" in stdout and "32/32 agree with Keras" in stdout
    # The closing lines say where the results are and how to look at the logs.
    closing = stdout[stdout.rindex("32/32 agree with Keras") :]
    assert "results_RTS.md" in closing and "results_RTS.json" in closing
    assert f"tensorboard --logdir {out / 'tensorboard'}" in closing
    # No start-up noise from TensorFlow's C++ libraries (CUDA probing on a machine
    # without a GPU, CPU features) and no retracing warnings from training four models.
    for noise in ("cuInit", "cudart_stub", "cpu_feature_guard", "InitializeLog", "retracing"):
        assert noise not in result.stderr, result.stderr[-3000:]


def test_other_variant_and_models(tmp_path):
    result = run(
        "--smoke",
        "--variant",
        "E",
        "--models",
        "tps",
        "--verbose",
        "0",
        "--out-dir",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert set(json.loads((tmp_path / "results_E.json").read_text())["errors"]) == {"tps"}
    assert (tmp_path / "E_tps_savedmodel" / "saved_model.pb").exists()


def load_example():
    return testing.load_script(EXAMPLE)


def test_pictures_show_all_sixteen_digits_with_titles(tmp_path, monkeypatch):
    example = load_example()
    calls = {}

    def record(name):
        def plot(images, second, **kwargs):
            calls[name] = (len(images), len(second), kwargs)

        return plot

    monkeypatch.setattr(example.visualize, "plot_transformed", record("outputs"))
    monkeypatch.setattr(example.visualize, "plot_sampling_grid", record("grid"))
    model = example.build_model("tps", 42)
    images = np.zeros((16, 42, 42, 1), "float32")
    example.save_pictures(model, images, str(tmp_path), "RTS_tps")
    for name in ("outputs", "grid"):
        count, second, kwargs = calls[name]
        assert count == second == 16
        assert kwargs["title"].startswith("RTS tps: ")


@pytest.mark.parametrize(
    "args", [("--models", "cnn,lstm"), ("--variant", "Q"), ("--epochs", "0"), ("--models", ",")]
)
def test_bad_flags_are_refused(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_example().parse_args(list(args))
    assert exit_info.value.code == 2 and "error" in capsys.readouterr().err


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        load_example().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("RTS", "cnn,affine", "20", "64", "0.001", "auto"):
        assert f"(default: {default})" in text, default


def test_defaults_are_the_documented_run():
    args = load_example().parse_args([])
    assert args.variant == "RTS" and args.epochs == 20 and args.batch_size == 64
    assert args.models == ["cnn", "affine"]
    assert args.source == "auto" and not args.download


def test_defaults_are_the_documented_recipe():
    example = load_example()
    args = example.parse_args([])
    assert args.recipe == example.DEFAULT_RECIPE
    assert args.recipe.output_size == 0 and args.recipe.antialias is True
    assert args.recipe.warmup_steps == 16  # chosen on held-out digits (reproduction.md)
    for size in (28, 42, 60):  # the transformer keeps every variant's input size
        st = example.build_model("affine", size).get_layer("st")
        assert st.output_size is None and st.antialias and st.warmup_steps == 16
        assert example.build_model("affine", size).output_shape == (None, 10)
    changed = example.parse_args(["--no-antialias", "--output-size", "28",
                                  "--localisation-learning-rate", "0.1",
                                  "--warmup-steps", "0"]).recipe
    st = example.build_model("tps", 42, changed).get_layer("st")
    assert st.output_size == (28, 28) and not st.antialias
    assert st.learning_rate_multiplier == 0.1 and st.warmup_steps == 0
    assert example.build_model("affine", 28, changed).get_layer("st").output_size is None


TABLE = os.path.join(ROOT, "examples", "distorted_mnist_table.py")


def test_table_trains_every_model_unless_told_otherwise():
    table = testing.load_script(TABLE)
    assert table.parse_args([]).models == ["cnn", "affine", "projective", "tps"]
    assert table.parse_args(["--models", "cnn,tps"]).models == ["cnn", "tps"]
    assert table.parse_args(["--models=affine"]).models == ["affine"]
    assert table.parse_args([]).recipe == load_example().DEFAULT_RECIPE


def test_table_smoke_run_resumes_and_judges_each_st_cnn(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    command = [sys.executable, TABLE, "--smoke", "--variants", "R", "--models", "cnn,affine",
               "--seeds", "2", "--out-dir", str(tmp_path)]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "[4/4] R ST-CNN Aff seed 1" in first.stdout
    summary = json.loads((tmp_path / "table.json").read_text())
    row = summary["R"]["affine"]
    cnn = summary["R"]["cnn"]
    assert len(row["errors"]) == 2 and row["mean"] == pytest.approx(np.mean(row["errors"]))
    assert row["beats_cnn"] == (cnn["mean"] - row["mean"] > max(cnn["range"], row["range"]))
    assert "| R | ST-CNN Aff |" in (tmp_path / "table.md").read_text()
    records = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert all(len(r["loss"]) == r["epochs"] and np.isfinite(r["loss"]).all() for r in records)
    # A second run finds every result in runs.jsonl and trains nothing.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "4 runs, 4 already in" in again.stdout
    assert "seed 1: test error" not in again.stdout
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 4


def test_table_keeps_projective_runs_of_the_keystone_apart_from_the_matrix_ones():
    # docs/data/reproduction_runs.jsonl holds runs of the projective ST-CNN from before
    # it had the keystone form: resuming must not take them for today's.
    table = testing.load_script(TABLE)
    args = table.parse_args([])
    key = json.loads(table.run_key(args, "TC", "projective", 0))
    assert key[-2:] == ["keystone", "seeded"]
    assert json.loads(table.run_key(args, "TC", "affine", 0))[-2:] == ["auto", "seeded"]
    path = os.path.join(ROOT, "docs", "data", "reproduction_runs.jsonl")
    with open(path) as file:
        records = [json.loads(line) for line in file]
    for record in records:
        if record["model"] == "projective":
            assert record.get("parameterisation") in ("keystone", "matrix"), record
            assert ("keystone" in json.loads(record["key"])) == (
                record["parameterisation"] == "keystone"), record
        # Runs made since training_data say so, in their key and their record.
        assert (json.loads(record["key"])[-1] == "seeded") == (record.get("data") == "seeded")


def test_table_keys_a_cnn_run_without_the_recipe_which_builds_only_transformers():
    table = testing.load_script(TABLE)
    plain = table.parse_args([])
    other = table.parse_args(["--localisation-learning-rate", "0.3", "--no-antialias"])
    assert table.run_key(plain, "TC", "cnn", 0) == table.run_key(other, "TC", "cnn", 0)
    assert table.run_key(plain, "TC", "affine", 0) != table.run_key(other, "TC", "affine", 0)
    assert table.run_key(plain, "TC", "cnn", 0) != table.run_key(plain, "TC", "cnn", 1)
    # The warm-up is part of an ST-CNN's run; without one, the key is that of the runs
    # recorded before the recipe had a warm-up.
    cold = table.parse_args(["--warmup-steps", "0"])
    assert table.run_key(plain, "TC", "affine", 0) != table.run_key(cold, "TC", "affine", 0)
    assert json.loads(table.run_key(cold, "TC", "affine", 0))[6] == [0, True, 1.0]
    path = os.path.join(ROOT, "docs", "data", "reproduction_runs.jsonl")
    with open(path) as file:
        records = [json.loads(line) for line in file]
    for record in records:
        recipe = json.loads(record["key"])[6]
        assert (recipe is None) == (record["model"] == "cnn"), record["key"]


def test_table_with_no_train_makes_the_table_from_its_runs_or_names_the_missing(tmp_path):
    table = testing.load_script(TABLE)
    flags = ["--variants", "R", "--models", "cnn,affine", "--seeds", "2",
             "--out-dir", str(tmp_path), "--no-train"]
    args = table.parse_args(flags)
    errors = {("cnn", 0): 7.0, ("cnn", 1): 8.0, ("affine", 0): 4.0}
    with open(tmp_path / "runs.jsonl", "w") as file:
        for (key, seed), error in errors.items():
            record = {"key": table.run_key(args, "R", key, seed), "error": error, "seconds": 1.0}
            file.write(json.dumps(record) + "\n")
    with pytest.raises(SystemExit, match="lacks 1 runs: R affine seed 1"):
        table.main(flags)
    assert not (tmp_path / "table.json").exists()
    with open(tmp_path / "runs.jsonl", "a") as file:
        record = {"key": table.run_key(args, "R", "affine", 1), "error": 5.0, "seconds": 1.0}
        file.write(json.dumps(record) + "\n")
    summary = table.main(flags)
    # Gain 7.5 - 4.5 = 3.0 against the larger range, 1.0: it beats the CNN.
    assert summary["R"]["affine"]["errors"] == [4.0, 5.0]
    assert summary["R"]["affine"]["gain"] == pytest.approx(3.0)
    assert summary["R"]["affine"]["beats_cnn"]
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 4


def test_table_calls_a_tie_a_tie_whatever_float32_rounding_says():
    # R's projective row of 2026-12-06: a gain of 1.2 points against a spread of 1.2,
    # which Keras' float32 accuracies made 1.1999985 against 1.1999965.
    table = testing.load_script(TABLE)
    args = table.parse_args(["--variants", "R", "--models", "cnn,projective"])
    cnn = [6.599998474121094, 7.599997520446777, 6.699997186660767]
    st = [5.0000011920928955, 6.199997663497925, 6.099998950958252]
    results = {("R", seed, key): {"error": error, "seconds": 1.0}
               for key, errors in (("cnn", cnn), ("projective", st))
               for seed, error in enumerate(errors)}
    row = table.summarise(args, results)["R"]["projective"]
    assert row["gain"] == pytest.approx(1.2, abs=1e-5) and row["spread"] == pytest.approx(1.2, abs=1e-5)
    assert not row["beats_cnn"]
    # One test digit more (0.1 point) on one seed of the CNN is a win.
    results[("R", 1, "cnn")]["error"] = 7.699997
    assert table.summarise(args, results)["R"]["projective"]["beats_cnn"]


def test_localiser_probe_prints_each_step():
    script = os.path.join(ROOT, "scripts", "probe_localiser.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, script, "--variant", "R", "--steps", "2", "--form", "keystone"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("step")]
    assert [line[1] for line in lines] == ["1", "2"]
    moves = [float(line[line.index("move") + 1]) for line in lines]
    assert all(0 <= move < 1 for move in moves), moves


def test_walk_off_probe_prints_how_much_of_the_output_reads_inside():
    script = os.path.join(ROOT, "scripts", "probe_walk_off.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, script, "--variant", "R", "--steps", "4", "--every", "2", "--smoke",
         "--warmup-steps", "0"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("step")]
    assert [line[1] for line in lines][:1] == ["2"]
    for line in lines:
        inside = float(line[line.index("inside") + 1])
        centre = float(line[line.index("centre") + 1])
        # Two steps from the identity: the output still reads the image, near its centre.
        assert 0.5 < inside <= 1.0 and 0.0 <= centre < 0.5, line


def test_walk_off_probe_counts_steps_across_epochs_and_stops_at_steps():
    # 32 digits in batches of 16: two steps an epoch, so step 3 is in the second epoch.
    script = os.path.join(ROOT, "scripts", "probe_walk_off.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, script, "--variant", "R", "--steps", "3", "--every", "1",
         "--train-digits", "32", "--test-digits", "64", "--batch-size", "16", "--epochs", "4"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("step")]
    assert [line[1] for line in lines] == ["1", "2", "3"]


def test_a_runs_training_data_depend_only_on_its_seed():
    # The pipeline's shuffle and distortions take TensorFlow's global seed with their
    # own, and reshuffle on each iteration: built before the seed, or iterated by an
    # earlier model, it would give a run other batches than the same run alone.
    example = load_example()
    args = example.parse_args(["--smoke", "--variant", "R", "--seed", "3", "--source", "bundled"])

    def first_batch(train):
        images, labels = next(iter(train))
        return np.asarray(images), np.asarray(labels)

    keras.utils.set_random_seed(11)
    unseeded = example.load_data(args)[0]
    keras.utils.set_random_seed(12)
    other = example.load_data(args)[0]
    assert not np.array_equal(first_batch(unseeded)[0], first_batch(other)[0])  # the hazard

    keras.utils.set_random_seed(11)
    first = example.training_data(args)
    expected = first_batch(first)
    first_batch(first)  # a second iteration, as a second model's fit would make
    keras.utils.set_random_seed(12)
    images, labels = first_batch(example.training_data(args))
    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(labels, expected[1])


@pytest.mark.parametrize("flags", [[], ["--warmup-steps", "63"], ["--warmup-steps", "0"],
                                   ["--warmup-steps", "0", "--localisation-learning-rate", "0.3"]],
                         ids=["recipe", "warm_up_63", "before_the_warm_up", "localisation_0.3x"])
def test_reproduction_tables_are_the_recorded_runs(tmp_path, flags):
    # docs/reproduction.md's seeded tables, made again from docs/data with --no-train:
    # every row's numbers (seeds, mean, sd, range) are on the page as printed.
    table = testing.load_script(TABLE)
    path = os.path.join(ROOT, "docs", "data", "reproduction_runs.jsonl")
    with open(path) as file:
        seeded = [line for line in file if '"seeded"' in line]
    (tmp_path / "runs.jsonl").write_text("".join(seeded))
    table.main(flags + ["--out-dir", str(tmp_path), "--no-train"])
    with open(os.path.join(ROOT, "docs", "reproduction.md")) as file:
        page = file.read()
    rows = [line for line in (tmp_path / "table.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| variant")]
    assert len(rows) == 20
    for row in rows:
        numbers = "|".join(row.split("|")[:8])  # variant, model, seeds, mean, range
        assert numbers in page, row
