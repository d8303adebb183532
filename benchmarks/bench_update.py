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
    python benchmarks/bench_update.py --compile on --precision bf16 --profile
    python benchmarks/bench_update.py --device cuda --compile on --precision bf16

Reports the median seconds per update, updates/s, the environment steps per second
that rate sustains at ``--train-ratio`` (env steps/s = updates/s * B * T / ratio, the
environments' own time not counted), page faults, and on CUDA the GPU's utilisation
during the timed updates (NVML, ``nvidia-ml-py``) and the peak memory allocated.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import statistics
import sys
import time
from types import SimpleNamespace

import gymnasium as gym
import torch
from tensordict import TensorDict

from wmblocks import keys
from wmblocks.train.monitor import DeviceMonitor
from wmblocks.train.speed import tune_host_allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "recipes", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def build_update(
    size: str = "1m",
    revision: int = 2024,
    batch: int = 16,
    length: int = 64,
    horizon: int = 15,
    obs: int = 24,
    image: int = 0,
    actions: int = 6,
    discrete: bool = False,
    compile: str = "off",
    precision: str = "fp32",
    device: str = "cpu",
    seed: int = 0,
):
    """``(update, params)``: ``update()`` runs the recipe's training update once on a
    fixed random replay batch (cloned per call, as the loop hands a fresh batch);
    ``params`` counts the world model, actor and critic parameters."""
    torch.manual_seed(seed)
    recipe = load_recipe("dreamer_v3")
    cfg = recipe.Config(
        size=size,
        revision=revision,
        batch=batch,
        length=length,
        horizon=horizon,
        device=device,
        compile=compile,
        precision=precision,
    )
    space = gym.spaces.Discrete(actions) if discrete else gym.spaces.Box(-1.0, 1.0, (actions,))
    shapes = {keys.OBS: (obs,)} if obs else {}
    if image:
        shapes["image"] = (image, 64, 64)
    if not shapes:
        raise ValueError("give an observation: obs > 0 and/or image > 0")
    env = SimpleNamespace(
        obs_shapes=shapes, action_dim=actions, action_space=space, discrete=discrete
    )
    dev = torch.device(device)
    agent = recipe.build(cfg, env, dev)
    B, T = batch, length + agent.replay_context
    action = (
        torch.nn.functional.one_hot(torch.randint(0, actions, (B, T)), actions).float()
        if discrete
        else torch.rand(B, T, actions) * 2 - 1
    )
    data = {k: torch.randn(B, T, *shape) for k, shape in shapes.items() if len(shape) == 1}
    data |= {
        k: torch.randint(0, 256, (B, T, *shape), dtype=torch.uint8)
        for k, shape in shapes.items()
        if len(shape) == 3
    }
    rows = {
        **data,
        keys.ACTION: action,
        keys.REWARD: torch.randn(B, T),
        keys.IS_FIRST: torch.rand(B, T) < 0.01,
        keys.IS_TERMINAL: torch.zeros(B, T, dtype=torch.bool),
        keys.IS_LAST: torch.zeros(B, T, dtype=torch.bool),
    }
    if agent.replay_context:  # the stored latents a chunk starts from
        rows[keys.DETER] = torch.randn(B, T, agent.wm.rssm.deter).tanh()
        rows[keys.STOCH] = torch.zeros(B, T, agent.wm.rssm.stoch_dim)
    fixed = TensorDict(rows, [B, T], device=dev)
    params = sum(
        p.numel() for name in ("wm", "actor", "critic") for p in agent.modules[name].parameters()
    )
    return (lambda: agent.update(fixed.clone())), params


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
    parser.add_argument("--compile", default="off", choices=["off", "on"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--train-ratio",
        type=float,
        default=None,
        help="for the env steps/s the update rate sustains (default: the recipe's, 96)",
    )
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="print the top aten ops")
    parser.add_argument(
        "--stock-allocator",
        action="store_true",
        help="keep glibc's malloc defaults (the training loop tunes them: "
        "wmblocks.train.speed.tune_host_allocator)",
    )
    args = parser.parse_args()
    tuned = False if args.stock_allocator else tune_host_allocator()
    if not (args.obs or args.image):
        parser.error("give an observation: --obs K and/or --image C")
    if args.reps < 1:
        parser.error(f"--reps must be >= 1, got {args.reps}")
    if args.train_ratio is None:
        args.train_ratio = load_recipe("dreamer_v3").Config().train_ratio
    if args.train_ratio <= 0:
        parser.error(f"--train-ratio must be > 0, got {args.train_ratio}")
    start = time.perf_counter()
    update, params = build_update(
        args.size,
        args.revision,
        args.batch,
        args.length,
        args.horizon,
        args.obs,
        args.image,
        args.actions,
        args.discrete,
        args.compile,
        args.precision,
        args.device,
    )
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync() -> None:  # an update is timed to its last kernel, not its last launch
        if cuda:
            torch.cuda.synchronize(device)

    times, faults, monitor = [], 0, DeviceMonitor(device, interval=0.1)
    for i in range(args.warmup + args.reps):
        if i == args.warmup:
            monitor.read()  # from here on: the samples of the timed updates only
        t = time.perf_counter()
        f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        update()
        sync()
        if i == 0:
            first = time.perf_counter() - start
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f
    stats = monitor.read()
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            update()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    median = statistics.median(times)
    per_s = 1.0 / median
    env_steps = per_s * args.batch * args.length / args.train_ratio
    kind = "discrete" if args.discrete else "continuous"
    observed = f"vector {args.obs}" if args.obs else ""
    observed += f" image {args.image}x64x64" if args.image else ""
    print(
        f"DreamerV3 ({args.revision}) recipe update on {observed.strip()}, size {args.size} "
        f"({params / 1e6:.2f} M params), {kind} actions, B{args.batch} T{args.length} "
        f"H{args.horizon}, compile {args.compile}, {args.precision}, "
        f"{'tuned' if tuned else 'stock'} allocator, threads "
        f"{torch.get_num_threads()}, {device}: median {median:.4f} s per update "
        f"(min {min(times):.4f}) = {per_s:.2f} updates/s = {env_steps:.1f} env steps/s at "
        f"train ratio {args.train_ratio:g}; {faults // args.reps:,} page faults per update; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; build + "
        f"first update {first:.1f} s"
    )
    if cuda:
        util = stats.get("gpu/util_percent")
        print(
            f"GPU: utilisation {'n/a' if util is None else f'{util:.0f}%'} during the timed "
            f"updates, peak memory allocated {stats['gpu/peak_memory_gb']:.2f} GB "
            f"(reserved {stats['gpu/reserved_gb']:.2f} GB)"
            + (f"; {monitor.note}" if monitor.note else "")
        )
    monitor.close()


if __name__ == "__main__":
    main()
