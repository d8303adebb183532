"""Checkpoint time and disk use as the replay grows: a 1M-step replay of 64x64x3 pixels
(synthetic rows), the DreamerV3 agent of the given size (issue 16).

    python benchmarks/bench_checkpoint.py                      # fills 10k, 100k, 1M steps
    python benchmarks/bench_checkpoint.py --fills 1000 10000 --size 1m --out runs/ckpt

At each fill level the script times what ``Trainer.checkpoint`` does (flush the
replay's memory-mapped files, then write the agent and optimiser state with the
replay's write position, atomically) and reports the checkpoint file's size and the
replay directory's size on disk. For comparison it also times what the previous
format (wmblocks 0.1) did at each checkpoint: copy every filled replay row to a new
directory (skipped above ``--copy-up-to`` rows, where it would take minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import gymnasium as gym
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.bench_update import load_recipe  # noqa: E402
from wmblocks import keys  # noqa: E402
from wmblocks.train.checkpoint import rng_state, rotate_checkpoints  # noqa: E402
from wmblocks.train.replay import SequenceReplay  # noqa: E402


def agent_state(size: str, actions: int = 6) -> dict:
    """What a checkpoint holds besides the replay: a V3 agent's modules and optimisers."""
    recipe = load_recipe("dreamer_v3")
    cfg = recipe.Config(size=size)
    env = SimpleNamespace(obs_shapes={"image": (3, 64, 64)}, action_dim=actions,
                          action_space=gym.spaces.Discrete(actions), discrete=True)  # fmt: skip
    agent = recipe.build(cfg, env, torch.device("cpu"))
    return {
        "modules": {n: m.state_dict() for n, m in agent.modules.items()},
        "optimizers": {n: o.state_dict() for n, o in agent.optimizers.items()},
        "count": {"steps": 0, "updates": 0, "episodes": 0, "credit": 0.0, "seconds": 0.0},
        "rng": rng_state(),
        "config": {"size": size},
    }


def fill(replay: SequenceReplay, upto: int, chunk: int = 5000, actions: int = 6) -> None:
    """Synthetic rows (random uint8 images) until ``replay.added == upto``."""
    g = torch.Generator().manual_seed(replay.added)
    base = torch.randint(0, 256, (1, chunk, 3, 64, 64), dtype=torch.uint8, generator=g)
    while replay.added < upto:
        k = min(chunk, upto - replay.added)
        replay.extend({
            "image": (base[:, :k] + replay.added % 251).to(torch.uint8),
            keys.ACTION: torch.zeros(1, k, actions),
            keys.REWARD: torch.rand(1, k, generator=g),
            keys.IS_FIRST: torch.zeros(1, k, dtype=torch.bool),
            keys.IS_TERMINAL: torch.zeros(1, k, dtype=torch.bool),
            keys.IS_LAST: torch.zeros(1, k, dtype=torch.bool),
        })  # fmt: skip


def du(path: str) -> int:
    """Bytes allocated on disk under ``path`` (sparse files count only what is written)."""
    out = subprocess.run(["du", "-sB1", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def old_format_copy(replay: SequenceReplay, dest: str) -> float:
    """Seconds to copy the filled rows to ``dest`` as wmblocks 0.1's checkpoints did."""
    start = time.perf_counter()
    store = replay.buffer.storage._storage
    n = min(replay.added, replay.per_env)
    rows = store[:n].memmap_like(prefix=dest)
    for a in range(0, n, 256):
        rows[a : min(a + 256, n)] = store[a : min(a + 256, n)]
    for value in rows.values(include_nested=True, leaves_only=True):
        fd = os.open(value.filename, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--capacity", type=int, default=1_000_000)
    p.add_argument("--fills", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--size", default="12m")
    p.add_argument("--copy-up-to", type=int, default=100_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default="runs/bench_checkpoint")
    args = p.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    replay = SequenceReplay(args.capacity, os.path.join(args.out, "replay"), 16, 65)
    state = agent_state(args.size)
    print("| replay steps | checkpoint s (median) | checkpoint file MB | replay on disk GB | "
          "0.1 format: copy s |")  # fmt: skip
    print("|---|---|---|---|---|")
    for level in args.fills:
        fill(replay, level)
        replay.flush()
        times = []
        for _ in range(args.reps):
            fill(replay, replay.added + 100)  # some new rows since the last checkpoint
            t = time.perf_counter()
            replay.flush()
            path = rotate_checkpoints(args.out, {**state, "replay": {"added": replay.added}})
            times.append(time.perf_counter() - t)
        times.sort()
        copy = "skipped"
        if level <= args.copy_up_to:
            dest = os.path.join(args.out, "old_copy")
            copy = f"{old_format_copy(replay, dest):.1f} ({du(dest) / 1e9:.2f} GB more)"
            shutil.rmtree(dest)
        print(f"| {replay.added:,} | {times[len(times) // 2]:.3f} | "
              f"{os.path.getsize(path) / 1e6:.1f} | {du(replay.directory) / 1e9:.2f} | {copy} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
