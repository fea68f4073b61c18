"""The whole of Table 1, over several seeds: every variant, the CNN and the ST-CNNs.

Runs `examples/distorted_mnist.py`'s training (same models, same recipe, same flags)
for each variant x model x seed, prints each result and the time left as it goes,
and writes a table of every seed, mean +- sd and the spread beside the paper's
numbers, with the verdict the reproduction is judged by: is each ST-CNN's mean error
below the CNN's by more than the seeds' spread (the larger of the two max - min
ranges)?

    python examples/distorted_mnist_table.py                    # 5 variants x 4 models x 3 seeds
    python examples/distorted_mnist_table.py --variants TC --models cnn,affine --seeds 3
    python examples/distorted_mnist_table.py --smoke            # a few steps: does it run?
    python examples/distorted_mnist_table.py --no-train --out-dir DIR   # only DIR's runs

Results go to `--out-dir` (`runs/table` by default): one line per run in
`runs.jsonl` (a rerun with the same flags skips the runs already there, so an
interrupted table resumes), and the table in `table.md` and `table.json`. On a 2-core
CPU a run takes 1 to 30 minutes (TC's, at 60x60, the longest): the default table
takes several hours. With `--no-train` nothing is trained: the table is made from the
runs already in `runs.jsonl`, and a missing run is an error that names it.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import distorted_mnist as example  # noqa: E402  (the main example, beside this file)

from keras_stn import datasets  # noqa: E402
from keras_stn import transforms  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=example.HelpFormatter
    )
    parser.add_argument("--variants", default=",".join(datasets.VARIANTS),
                        help="comma-separated, from: " + ", ".join(datasets.VARIANTS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed")
    parser.add_argument("--out-dir", default=os.path.join("runs", "table"),
                        help="where runs.jsonl, table.md and table.json go")
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: make the table from runs.jsonl, or fail "
                        "naming the runs it lacks")
    own, rest = parser.parse_known_args(argv)
    if own.seeds < 1:
        parser.error(f"--seeds must be positive; got {own.seeds}")
    variants = [v.strip() for v in own.variants.split(",") if v.strip()]
    if not variants or any(v not in datasets.VARIANTS for v in variants):
        parser.error(f"--variants must be from {list(datasets.VARIANTS)}; got {own.variants!r}")
    # Everything else is the example's own flags (models, epochs, recipe, smoke, ...);
    # the table's models are the CNN and every ST-CNN unless --models says otherwise.
    if not any(arg == "--models" or arg.startswith("--models=") for arg in rest):
        rest = rest + ["--models", ",".join(example.MODELS)]
    args = example.parse_args(rest + ["--out-dir", own.out_dir, "--verbose", "0"])
    args.variants = variants
    args.no_train = own.no_train
    args.seeds = list(range(own.first_seed, own.first_seed + own.seeds))
    return args


def run_key(args, variant, key, seed):
    """What makes two runs the same run (for resuming). The recipe builds only the
    transformers, so a CNN's run is the same under every recipe."""
    recipe = None if key == "cnn" else list(args.recipe)
    if recipe and not args.recipe.warmup_steps:
        # Runs made before the recipe had a warm-up have no such field.
        recipe = recipe[:-1]
    fields = [variant, key, seed, args.epochs, args.batch_size, args.learning_rate,
              recipe, args.train_digits, args.test_digits,
              args.validation_digits, args.source]
    if key == "projective":
        # Its theta is the keystone form; runs of the matrix form, before the
        # keystone was the default, have no such field and are other runs.
        fields.append(PROJECTIVE)
    # Its training data depend only on its seed (`example.training_data`); runs made
    # before, whose data depended on what ran before them, have no such field.
    fields.append(DATA)
    return json.dumps(fields)


PROJECTIVE = transforms.get("projective").parameterisation
DATA = "seeded"


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "runs.jsonl")
    done = {}
    if os.path.exists(path):
        with open(path) as file:
            for line in file:
                record = json.loads(line)
                done[record["key"]] = record
    plan = [(v, s, k) for v in args.variants for s in args.seeds for k in args.models]
    todo = [p for p in plan if run_key(args, *p[::2], p[1]) not in done]
    print(f"{len(plan)} runs, {len(plan) - len(todo)} already in {path}", flush=True)
    if todo and args.no_train:
        missing = ", ".join(f"{v} {k} seed {s}" for v, s, k in todo)
        raise SystemExit(f"--no-train: {path} lacks {len(todo)} runs: {missing}")
    started, finished = time.time(), 0
    for variant, seed in dict.fromkeys((v, s) for v, s, _ in todo):
        args.variant, args.seed = variant, seed
        _, test, steps, source, count = example.load_data(args)
        for key in [k for v, s, k in todo if (v, s) == (variant, seed)]:
            model, error, seconds = example.train_and_evaluate(key, variant, test, steps, args)
            record = {
                "key": run_key(args, variant, key, seed), "variant": variant, "model": key,
                "seed": seed, "error": error, "seconds": seconds, "source": source,
                "train_digits": count, "epochs": args.epochs, "recipe": args.recipe._asdict(),
                "evaluated_on": "validation" if args.validation_digits else "test",
                # The training loss of each epoch: a run that never learned shows here.
                "loss": [round(float(x), 4) for x in model.history.history["loss"]],
            }
            if key == "projective":
                record["parameterisation"] = PROJECTIVE
            record["data"] = DATA
            with open(path, "a") as file:
                file.write(json.dumps(record) + "\n")
            done[record["key"]] = record
            finished += 1
            elapsed = time.time() - started
            left = elapsed / finished * (len(todo) - finished)
            print(
                f"[{len(plan) - len(todo) + finished}/{len(plan)}] {variant} "
                f"{example.MODELS[key][0]} seed {seed}: {record['evaluated_on']} error "
                f"{error:.1f}% ({seconds:.0f} s); {_duration(elapsed)} so far, "
                f"about {_duration(left)} left",
                flush=True,
            )
    results = {p: done[run_key(args, p[0], p[2], p[1])] for p in plan}
    summary = summarise(args, results)
    table = format_table(args, summary)
    print("\n" + table)
    with open(os.path.join(args.out_dir, "table.md"), "w") as file:
        file.write(table + "\n")
    with open(os.path.join(args.out_dir, "table.json"), "w") as file:
        json.dump(summary, file, indent=1)
    print(f"\nIn {args.out_dir}: table.md, table.json and every run in runs.jsonl")
    return summary


def summarise(args, results):
    """Per variant and model: errors by seed, mean, sd, range; per ST-CNN the verdict."""
    summary = {}
    for variant in args.variants:
        rows = {}
        for key in args.models:
            errors = [results[(variant, seed, key)]["error"] for seed in args.seeds]
            rows[key] = {
                "errors": errors,
                "mean": statistics.fmean(errors),
                "sd": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                "range": max(errors) - min(errors),
                "seconds": statistics.fmean(
                    results[(variant, seed, key)]["seconds"] for seed in args.seeds
                ),
            }
        if "cnn" in rows:
            cnn = rows["cnn"]
            for key, row in rows.items():
                if key == "cnn":
                    continue
                spread = max(cnn["range"], row["range"])
                row["gain"] = cnn["mean"] - row["mean"]
                row["spread"] = spread
                # The errors are float32 accuracies, off their multiples of 0.1
                # point by about 1e-6: a gain equal to the spread is a tie, not a win.
                row["beats_cnn"] = round(row["gain"], 4) > round(spread, 4)
        summary[variant] = rows
    return summary


def format_table(args, summary):
    evaluated_on = "validation" if args.validation_digits else "test"
    seeds = ", ".join(map(str, args.seeds))
    lines = [
        f"Distorted MNIST: {evaluated_on} error (%), seeds {seeds}, {args.epochs} epochs, "
        f"recipe {dict(args.recipe._asdict())}",
        "",
        "| variant | model | " + " | ".join(f"seed {s}" for s in args.seeds)
        + " | mean +- sd | range | beats the CNN by more than the spread | paper |",
        "|---|---|" + "---:|" * len(args.seeds) + "---:|---:|---|---:|",
    ]
    for variant, rows in summary.items():
        for key, row in rows.items():
            label = example.MODELS[key][0]
            paper = example.PAPER.get(label, {}).get(variant, "-")
            verdict = ""
            if "beats_cnn" in row:
                verdict = (
                    f"{'yes' if row['beats_cnn'] else 'NO'}: {row['gain']:+.1f} "
                    f"vs {row['spread']:.1f}"
                )
            lines.append(
                f"| {variant} | {label} | "
                + " | ".join(f"{e:.1f}" for e in row["errors"])
                + f" | {row['mean']:.2f} +- {row['sd']:.2f} | {row['range']:.1f} | {verdict} "
                f"| {paper} |"
            )
    return "\n".join(lines)


def _duration(seconds):
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


if __name__ == "__main__":
    main()
