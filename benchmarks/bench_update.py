"""Time the DreamerV3 recipe's own training update (``recipes/dreamer_v3.py``:
``build(cfg, env, device).update``): world-model loss, imagination behaviour loss
(actor + critic), replay value loss, one backward, the optimiser step and the
slow-critic update, exactly as training runs it. Random data of a vector environment;
a B x T replay batch (plus the 2024 revision's context step), H steps of imagination
from all B*T states.

    python benchmarks/bench_update.py                       # size 1m, B16 T64 H15
    python benchmarks/bench_update.py --size XS --discrete
    python benchmarks/bench_update.py --revision 2023 --size S
    python benchmarks/bench_update.py --image 3 --discrete   # 64x64 RGB pixels (uint8), no vector
    python benchmarks/bench_update.py --image 4 --discrete --length 32   # MinAtar-like grids
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from types import SimpleNamespace

import gymnasium as gym
import torch
from tensordict import TensorDict

from wmblocks import keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "recipes", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1m", help="1m, 12m, ..., XS, debug (2024); S..XL (2023)")
    parser.add_argument("--revision", type=int, default=2024, choices=[2023, 2024])
    parser.add_argument("--obs", type=int, default=24, help="vector size (0: none)")
    parser.add_argument(
        "--image", type=int, default=0, help="channels of a 64x64 uint8 image observation"
    )
    parser.add_argument("--actions", type=int, default=6)
    parser.add_argument("--discrete", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    recipe = load_recipe("dreamer_v3")
    cfg = recipe.Config(
        size=args.size,
        revision=args.revision,
        batch=args.batch,
        length=args.length,
        horizon=args.horizon,
        device="cpu",
    )
    space = (
        gym.spaces.Discrete(args.actions)
        if args.discrete
        else gym.spaces.Box(-1.0, 1.0, (args.actions,))
    )
    shapes = {keys.OBS: (args.obs,)} if args.obs else {}
    if args.image:
        shapes["image"] = (args.image, 64, 64)
    if not shapes:
        parser.error("give an observation: --obs K and/or --image C")
    env = SimpleNamespace(
        obs_shapes=shapes,
        action_dim=args.actions,
        action_space=space,
        discrete=args.discrete,
    )
    agent = recipe.build(cfg, env, torch.device("cpu"))
    B, T = args.batch, args.length + agent.replay_context
    action = (
        torch.nn.functional.one_hot(torch.randint(0, args.actions, (B, T)), args.actions).float()
        if args.discrete
        else torch.rand(B, T, args.actions) * 2 - 1
    )
    obs = {k: torch.randn(B, T, *shape) for k, shape in shapes.items() if len(shape) == 1}
    obs |= {
        k: torch.randint(0, 256, (B, T, *shape), dtype=torch.uint8)
        for k, shape in shapes.items()
        if len(shape) == 3
    }
    rows = {
        **obs,
        keys.ACTION: action,
        keys.REWARD: torch.randn(B, T),
        keys.IS_FIRST: torch.rand(B, T) < 0.01,
        keys.IS_TERMINAL: torch.zeros(B, T, dtype=torch.bool),
        keys.IS_LAST: torch.zeros(B, T, dtype=torch.bool),
    }
    if agent.replay_context:  # the stored latents a chunk starts from
        rows[keys.DETER] = torch.randn(B, T, agent.wm.rssm.deter).tanh()
        rows[keys.STOCH] = torch.zeros(B, T, agent.wm.rssm.stoch_dim)
    batch = TensorDict(rows, [B, T])

    times = []
    for i in range(args.warmup + args.reps):
        start = time.perf_counter()
        agent.update(batch.clone())
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    params = sum(
        p.numel() for name in ("wm", "actor", "critic") for p in agent.modules[name].parameters()
    )
    kind = "discrete" if args.discrete else "continuous"
    observed = ", ".join(f"{k} {list(v)}" for k, v in shapes.items())
    print(
        f"DreamerV3 ({args.revision}) recipe update on {observed}, size {args.size} "
        f"({params / 1e6:.2f} M params), {kind} actions, B{args.batch} T{args.length} "
        f"H{args.horizon}, threads {torch.get_num_threads()}: "
        f"median {statistics.median(times):.3f} s per update (min {min(times):.3f})"
    )


if __name__ == "__main__":
    main()
