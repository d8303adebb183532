"""Learning benchmark: run a recipe for several seeds (one after another, so each gets
the whole machine) and report evaluation return against environment steps and
wall-clock time, from each run's metrics.jsonl.

    python benchmarks/learn.py --recipe dreamer_v3 --env CartPole-v1 --seeds 0 1 2 \\
        --target 475 -- --size 1m --length 32 --train-ratio 96
    python benchmarks/learn.py --report runs/bench/dreamer_v3-CartPole-v1-*   # summarise

Arguments after ``--`` go to the recipe unchanged. Writes summary.json next to the
runs and prints a table: final evaluation return, best evaluation return, and the
first environment step and second of training (wall clock, pauses before a
--resume left out) at which the evaluation reached --target (if it did).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summarise(run_dir: str, target: float | None) -> dict:
    rows = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if not rows:
        return {"run": run_dir, "evals": []}
    t0 = rows[0]["time"]
    # Training seconds as the loop counts them (pauses before a --resume excluded);
    # runs logged before that was recorded fall back to wall-clock since the first row.
    evals = [
        (r["step"], r["eval/return"], r.get("time/elapsed_s", r["time"] - t0))
        for r in rows
        if "eval/return" in r
    ]
    out = {
        "run": run_dir,
        "evals": evals,
        "steps": rows[-1]["step"],
        "wall_s": rows[-1]["time"] - t0,
    }
    achievements = sorted({k for r in rows for k in r if k.startswith("episode/achievement_")})
    if achievements:  # Crafter: its score over every training episode, as its paper
        from wmblocks.envs.crafter import score

        episodes = [[r[k] for k in achievements] for r in rows if achievements[0] in r]
        out["crafter_score"] = score([[float(v > 0) for v in e] for e in episodes])
    if evals:
        out["final_eval"] = evals[-1][1]
        out["best_eval"] = max(e[1] for e in evals)
    if target is not None:
        hit = [e for e in evals if e[1] >= target]
        out["target"] = target
        out["reached_at_step"] = hit[0][0] if hit else None
        out["reached_at_s"] = round(hit[0][2]) if hit else None
    return out


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="dreamer_v3")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--target", type=float, default=None)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--report", nargs="+", help="only summarise these run directories")
    args = parser.parse_args(argv)
    if args.report:
        dirs = sorted(d for pattern in args.report for d in glob.glob(pattern))
    else:
        dirs = []
        for seed in args.seeds:
            d = os.path.join(args.out, f"{args.recipe}-{args.env.replace('/', '-')}-seed{seed}")
            cmd = [
                sys.executable,
                os.path.join(ROOT, "recipes", f"{args.recipe}.py"),
                "--env",
                args.env,
                "--seed",
                str(seed),
                "--steps",
                str(args.steps),
                "--logdir",
                d,
                *extra,
            ]
            print("running:", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            dirs.append(d)
    results = [summarise(d, args.target) for d in dirs]
    print(
        f"{'run':60} {'steps':>7} {'wall s':>7} {'final':>8} {'best':>8} {'target at step / s':>20}"
    )
    for r in results:
        hit = "-"
        if r.get("reached_at_step") is not None:
            hit = f"{r['reached_at_step']} / {r['reached_at_s']}"
        final, best = r.get("final_eval", float("nan")), r.get("best_eval", float("nan"))
        print(
            f"{r['run']:60} {r.get('steps', 0):>7} {r.get('wall_s', 0):>7.0f} "
            f"{final:>8.1f} {best:>8.1f} {hit:>20}"
        )
        if "crafter_score" in r:
            print(f"  Crafter score over the training episodes: {r['crafter_score']:.2f} %")
    if dirs:
        with open(os.path.join(os.path.dirname(dirs[0]) or ".", "summary.json"), "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
