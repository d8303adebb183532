"""Compare world models trained offline on the same data (recipes/world_model.py runs):
their last open-loop evaluation, as one plot and a markdown table.

    python benchmarks/compare_world_models.py runs/wm/v3 runs/wm/v1 \\
        --labels "V3 (32x32 categorical)" "V1 (Gaussian)" --out docs/img/openloop.png

Each run's ``openloop.jsonl`` holds the open-loop errors on its validation windows by
imagination horizon (wmblocks.train.wm_eval); the runs should share ``--data``,
``--val-fraction``, ``--context`` and the recipe's ``--length`` and ``--seed`` (then the
validation windows are the same ones), which this script checks and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wmblocks.train.wm_eval import plot_open_loop, read_open_loop  # noqa: E402

SAME = ("data", "val_fraction", "context", "val_batches")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories of recipes/world_model.py")
    parser.add_argument("--labels", nargs="*", default=None, help="one label per run")
    parser.add_argument("--out", default="openloop_compare.png", help="the plot (PNG)")
    parser.add_argument("--horizons", type=int, nargs="*", default=[1, 5, 10, 15])
    args = parser.parse_args()
    labels = args.labels or [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(labels) != len(args.runs):
        sys.exit("compare_world_models: give one --labels entry per run")
    curves, settings = {}, []
    for run, label in zip(args.runs, labels, strict=True):
        path = os.path.join(run, "openloop.jsonl")
        if not os.path.exists(path):
            sys.exit(f"compare_world_models: {path} is missing (not a world_model.py run?)")
        last_step, errors = list(read_open_loop(path, last=1).items())[0]
        curves[f"{label} ({last_step})"] = errors
        with open(os.path.join(run, "offline.json")) as f:
            offline = json.load(f)
        with open(os.path.join(run, "config.json")) as f:
            recipe = json.load(f)
        settings.append(
            {**{k: offline[k] for k in SAME}, "length": recipe["length"], "seed": recipe["seed"]}
        )
    differ = [k for k in settings[0] if any(s[k] != settings[0][k] for s in settings)]
    print(
        "validation windows: "
        + ("the same in every run" if not differ else f"NOT the same (differ in {differ})")
    )
    plot_open_loop(curves, args.out, "open-loop error on the validation windows")
    names = list(next(iter(curves.values())))
    header = "| model | " + " | ".join(f"{n} h{h}" for n in names for h in args.horizons) + " |"
    print(header)
    print("|" + "---|" * (1 + len(names) * len(args.horizons)))
    for label, errors in curves.items():
        cells = []
        for name in names:
            values = errors.get(name, [])
            cells += [f"{values[h - 1]:.3g}" if h <= len(values) else "-" for h in args.horizons]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
