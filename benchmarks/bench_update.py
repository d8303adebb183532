"""Time one full DreamerV3 training update: world-model loss, backward and optimiser
step, then imagination behaviour loss (actor + critic), backward and step, and the
slow-critic update. Random data of a vector environment; B x T replay batch, H steps
of imagination from all B*T states.

    python benchmarks/bench_update.py                       # size 1m, B16 T64 H15
    python benchmarks/bench_update.py --size XS --discrete
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import torch
from tensordict import TensorDict

from wmblocks import keys, presets
from wmblocks.losses import (
    CONT_TARGET_2024,
    V3_2024_SCALES,
    behavior_loss_v3,
    total_loss,
    world_model_loss_v3,
)
from wmblocks.nn import ReturnNormalizer
from wmblocks.nn.critics import SlowCritic
from wmblocks.optim import laprop_agc


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1m", help="1m, 12m, ..., debug, or XS")
    parser.add_argument("--obs", type=int, default=24)
    parser.add_argument("--actions", type=int, default=6)
    parser.add_argument("--discrete", action="store_true")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    size = presets.XS if args.size == "XS" else args.size
    space = (
        gym.spaces.Discrete(args.actions)
        if args.discrete
        else gym.spaces.Box(-1.0, 1.0, (args.actions,))
    )
    wm = presets.world_model_v3({"observation": (args.obs,)}, args.actions, size)
    feat = wm.rssm.feat_dim
    actor = presets.actor_v3(space, feat, size)
    critic = presets.critic_v3(feat, size)
    slow, norm = SlowCritic(critic, 0.02), ReturnNormalizer()
    opt = laprop_agc([*wm.parameters(), *actor.parameters(), *critic.parameters()])
    B, T = args.batch, args.length
    action = (
        torch.nn.functional.one_hot(torch.randint(0, args.actions, (B, T)), args.actions).float()
        if args.discrete
        else torch.rand(B, T, args.actions) * 2 - 1
    )
    batch = TensorDict(
        {
            "observation": torch.randn(B, T, args.obs),
            keys.ACTION: action,
            keys.REWARD: torch.randn(B, T),
            keys.IS_FIRST: torch.rand(B, T) < 0.01,
            keys.IS_TERMINAL: torch.zeros(B, T, dtype=torch.bool),
        },
        [B, T],
    )

    def update():
        td = world_model_loss_v3(wm, batch.clone(), cont_target=CONT_TARGET_2024)
        wm_loss, _ = total_loss(td, V3_2024_SCALES)
        wm_loss.backward()
        td = td.apply(lambda x: x.detach())
        out = behavior_loss_v3(wm, actor, critic, slow, norm, td, horizon=args.horizon)
        ac_loss, _ = total_loss(out, {"actor": 1.0, "critic": 1.0})
        ac_loss.backward()
        opt.step()
        slow.update(critic)

    times = []
    for i in range(args.warmup + args.reps):
        start = time.perf_counter()
        update()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for m in (wm, actor, critic) for p in m.parameters())
    kind = "discrete" if args.discrete else "continuous"
    print(
        f"size {args.size} ({params / 1e6:.2f} M params), {kind} actions, "
        f"B{B} T{T} H{args.horizon}, threads {torch.get_num_threads()}: "
        f"median {statistics.median(times):.3f} s per update (min {min(times):.3f})"
    )


if __name__ == "__main__":
    main()
