"""Kill a training run with SIGKILL at random moments, resume it, and check that
nothing was lost, duplicated or changed (issue 16).

    python benchmarks/kill_resume.py --kills 10 --seed 0 --out runs/kill
    python benchmarks/kill_resume.py --recipe dreamer_v1 --kills 5

One reference run trains uninterrupted. Each trial starts the same run (same seed,
``--deterministic``, one thread), waits until it has written its first checkpoint,
sleeps a random time (seeded, up to ``--max-delay``) and kills it with SIGKILL: in an
update, while it writes replay rows, a checkpoint, metrics. It resumes the run to the
end (``--resume``) and checks, from the files alone:

* the replay holds every row up to the checkpoint the resume started from, exactly as
  the reference run wrote them (observation, action, reward and episode flags);
* the resumed segment starts right after them (its first row is the episode start of
  the resumed run), so no row written after the checkpoint is kept or duplicated;
* the counters agree with the rows: updates since the checkpoint equal the agent steps
  since it (train ratio = batch x length: one update per step), and the final
  checkpoint is at the requested steps;
* the metrics history has no step twice and its update counts never go backwards
  (rows a killed run wrote after its checkpoint are set aside in
  ``metrics.superseded.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import torch
from tensordict import TensorDict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW_KEYS = ("observation", "action", "reward", "is_first", "is_terminal", "is_last")
TINY = {
    "dreamer_v3": ["--size", "debug"],
    "dreamer_v1": ["--units", "32", "--deter", "32", "--stoch", "8"],
}
ARGS = ["--env", "Pendulum-v1", "--batch", "4", "--length", "16", "--train-ratio", "64"]
ARGS += ["--prefill", "100", "--eval-every", "0", "--eval-episodes", "1"]
ARGS += ["--log-every", "25", "--deterministic", "--seed", "0"]


def _cmd(recipe: str, logdir: str, steps: int, save_every: int, *extra: str) -> list[str]:
    script = os.path.join(ROOT, "recipes", f"{recipe}.py")
    args = [*TINY[recipe], *ARGS, "--steps", str(steps), "--save-every", str(save_every)]
    return [sys.executable, script, *args, "--logdir", logdir, *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _checkpoint(run_dir: str) -> dict:
    return torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)


def _rows(run_dir: str, added: int) -> dict[str, torch.Tensor]:
    store = TensorDict.load_memmap(os.path.join(run_dir, "replay"))
    return {k: store[k][:added].clone() for k in ROW_KEYS if k in store.keys()}


def _metrics(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def reference(workdir: str, recipe: str, steps: int, save_every: int) -> str:
    """The uninterrupted run (made once per work directory)."""
    ref = os.path.join(workdir, f"{recipe}-reference")
    if not os.path.exists(os.path.join(ref, "checkpoint.pt")):
        shutil.rmtree(ref, ignore_errors=True)
        subprocess.run(_cmd(recipe, ref, steps, save_every), check=True, env=_env(),
                       capture_output=True, timeout=900)  # fmt: skip
    return ref


def trial(
    workdir: str,
    recipe: str,
    steps: int,
    save_every: int,
    rng: random.Random,
    index: int,
    max_delay: float = 3.0,
) -> dict:
    """One kill + resume; returns what it checked (raises AssertionError on a fault)."""
    ref = reference(workdir, recipe, steps, save_every)
    run_dir = os.path.join(workdir, f"{recipe}-trial{index}")
    shutil.rmtree(run_dir, ignore_errors=True)
    proc = subprocess.Popen(_cmd(recipe, run_dir, steps, save_every), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    while not os.path.exists(ckpt_path) and proc.poll() is None:
        time.sleep(0.05)
    delay = rng.uniform(0.0, max_delay)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    start = _checkpoint(run_dir)  # what the resume starts from
    k, added_k, updates_k = (
        start["count"]["steps"],
        start["replay"]["added"],
        start["count"]["updates"],
    )
    resume = subprocess.run(_cmd(recipe, run_dir, steps, save_every, "--resume"), env=_env(),
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert resume.returncode == 0, resume.stderr[-2000:]
    end = _checkpoint(run_dir)
    assert end["count"]["steps"] == steps, end["count"]
    added = end["replay"]["added"]
    rows, ref_rows = _rows(run_dir, added), _rows(ref, added_k)
    for key, value in ref_rows.items():
        assert torch.equal(rows[key][:added_k], value), f"row {key} before step {k} changed"
    if killed and k < steps:
        assert bool(rows["is_first"][added_k].all()), "the resumed segment does not start fresh"
        # Agent steps since the checkpoint: one row each (episode ends add the reset
        # row, which is an agent step too); one update per agent step after prefill.
        assert end["count"]["updates"] - updates_k == added - added_k, (end["count"], added)
    metrics = _metrics(run_dir)
    steps_seen = [r["step"] for r in metrics if "updates" in r]
    assert len(steps_seen) == len(set(steps_seen)), "a metrics step appears twice"
    updates = [r["updates"] for r in metrics if "updates" in r]
    assert updates == sorted(updates), "update counts go backwards in metrics.jsonl"
    return {"killed": killed, "delay_s": round(delay, 2), "resumed_from": k,
            "rows_checked": int(added_k), "rows_total": int(added)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="dreamer_v3", choices=sorted(TINY))
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument(
        "--max-delay", type=float, default=20.0, help="seconds after the first checkpoint"
    )
    p.add_argument("--out", default="runs/kill")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)
    results = []
    for i in range(args.kills):
        row = trial(args.out, args.recipe, args.steps, args.save_every, rng, i, args.max_delay)
        results.append(row)
        print(json.dumps(row), flush=True)
    killed = [r for r in results if r["killed"]]
    print(
        f"{len(killed)} of {len(results)} runs killed (the others had finished), all "
        f"resumed; {sum(r['rows_checked'] for r in results)} replay rows checked against "
        f"the uninterrupted run, resumed from steps "
        f"{sorted(r['resumed_from'] for r in results)}"
    )


if __name__ == "__main__":
    main()
