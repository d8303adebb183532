"""Training throughput of one process against N data-parallel ranks (torchrun, gloo on
CPU, one thread per process: OMP_NUM_THREADS=1), on the same recipe configuration for
a fixed number of global environment steps (docs/scaling.md).

Each configuration trains a fresh run (a temporary --logdir) with ``--eval-every 0``
and ``--save-every 0`` (one evaluation and one checkpoint, after the last metric line)
and is measured from its metric lines (``time/elapsed_s``, ``updates``): from the first
line at or past ``--warmup`` global steps to the last one, so interpreter start-up,
the build, prefill, the first updates (and a compile), the final evaluation and the
checkpoint are left out. Reported per configuration:

    env steps/s   global environment steps (frames, all ranks) per second
    updates/s     optimiser steps per second (each one a global batch of N x B x T)
    samples/s     updates/s x batch x length x N: replayed steps trained on per second

    .venv/bin/python benchmarks/bench_distributed.py --steps 6000 --warmup 2000
    .venv/bin/python benchmarks/bench_distributed.py --ranks 1 2 4 --recipe dreamer_v1 \\
        -- --env Pendulum-v1 --batch 8
    .venv/bin/python benchmarks/bench_distributed.py --steps 300 --warmup 100 \\
        --prefill 50 --log-every 50 -- --size debug --batch 2 --length 8   # a smoke run

Flags after ``--`` go to the recipe (both configurations get the same ones); the
train ratio keeps its meaning across ranks, so N ranks do N times the replayed steps
per second of wall time if the update scales.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(recipe: str, ranks: int, args: list[str]) -> list[str]:
    """The command line of one configuration: the recipe itself for 1 rank, torchrun
    (standalone: one node, a free port) for more."""
    path = os.path.join(ROOT, "recipes", f"{recipe}.py")
    if ranks == 1:
        return [sys.executable, path, *args]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launch, "--nproc-per-node", str(ranks), path, *args]


def rates(metrics_path: str, warmup: int) -> dict[str, float]:
    """Steps/s and updates/s between the first metric line at or past ``warmup`` steps
    and the last one (lines with ``updates`` and ``time/elapsed_s``)."""
    with open(metrics_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if "updates" in r and "time/elapsed_s" in r]
    window = [r for r in rows if r["step"] >= warmup]
    if len(window) < 2:
        raise SystemExit(
            f"{metrics_path}: fewer than two metric lines after --warmup {warmup} "
            f"({len(rows)} in all): raise --steps or lower --warmup / --log-every"
        )
    first, last = window[0], window[-1]
    seconds = last["time/elapsed_s"] - first["time/elapsed_s"]
    return {
        "steps_s": (last["step"] - first["step"]) / seconds,
        "updates_s": (last["updates"] - first["updates"]) / seconds,
        "seconds": seconds,
    }


def measure(recipe: str, ranks: int, args: list[str], warmup: int) -> dict[str, float]:
    """Train one configuration in a temporary run directory; its :func:`rates`."""
    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as logdir:
        cmd = command(recipe, ranks, [*args, "--logdir", logdir])
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        return rates(os.path.join(logdir, "metrics.jsonl"), warmup)


def option_value(recipe: str, args: list[str], name: str) -> int:
    """The value of option ``name`` in the recipe's arguments, or the recipe's default."""
    flag = "--" + name
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return int(args[i + 1])
        if a.startswith(flag + "="):
            return int(a.split("=", 1)[1])
    return recipe_default(recipe, name)


def recipe_default(recipe: str, name: str) -> int:
    """A recipe's default for option ``name`` (its Config dataclass)."""
    import dataclasses
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"_bench_{recipe}", os.path.join(ROOT, "recipes", f"{recipe}.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return next(f.default for f in dataclasses.fields(module.Config) if f.name == name)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    recipe_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, recipe_args = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="dreamer_v3", help="recipes/<name>.py")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="processes")
    parser.add_argument("--steps", type=int, default=6000, help="global env steps per run")
    parser.add_argument("--warmup", type=int, default=2000, help="global steps not measured")
    parser.add_argument("--prefill", type=int, default=1000, help="the recipe's --prefill")
    parser.add_argument("--log-every", type=int, default=250, help="metric lines (measures)")
    opts = parser.parse_args(argv)
    if opts.warmup < opts.prefill:
        parser.error("--warmup must be at least --prefill (updates start there)")
    args = [*recipe_args, "--steps", str(opts.steps), "--prefill", str(opts.prefill)]
    args += ["--log-every", str(opts.log_every), "--eval-every", "0", "--save-every", "0"]
    args += ["--eval-episodes", "1"]
    batch = option_value(opts.recipe, recipe_args, "batch")
    length = option_value(opts.recipe, recipe_args, "length")
    print(
        f"{opts.recipe} {' '.join(recipe_args)} | {opts.steps} global env steps, measured "
        f"after {opts.warmup} | batch {batch} x length {length} per rank | "
        "OMP_NUM_THREADS=1 per process",
        flush=True,
    )
    rows = []
    for ranks in opts.ranks:
        r = measure(opts.recipe, ranks, args, opts.warmup)
        r["samples_s"] = r["updates_s"] * batch * length * ranks
        rows.append((ranks, r))
        print(f"  {ranks} rank(s): measured over {r['seconds']:.1f} s", flush=True)
    base = rows[0][1]["samples_s"]
    print("\n| ranks | env steps/s | updates/s | samples/s | samples/s vs first |")
    print("|---|---|---|---|---|")
    for ranks, r in rows:
        print(
            f"| {ranks} | {r['steps_s']:.1f} | {r['updates_s']:.2f} | {r['samples_s']:.0f} | "
            f"{r['samples_s'] / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
