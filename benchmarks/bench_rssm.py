"""RSSM speed: wmblocks against torchrl's DreamerV3 modules, same work, same process.

One measurement = observe over T steps (B sequences, given embeddings and actions,
with is_first resets) + imagine H steps from all B*T posterior states under a small
policy, then backward of a scalar touching every output. Both sides use the DreamerV3
block GRU (8 blocks), 32 categorical groups with 1% unimix, an RMS-normed posterior
layer, and the same layer sizes. Reported: median seconds over --reps runs after
--warmup, the implementations interleaved rep by rep, and the median of the paired
ratios torchrl / wmblocks.

    python benchmarks/bench_rssm.py                 # sizes 1m and XS, B16 T64 H15
    python benchmarks/bench_rssm.py --sizes 1m --reps 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from wmblocks.nn.cores import BlockGRUCore
from wmblocks.nn.latents import CategoricalLatentHead
from wmblocks.nn.rssm import RSSM

SIZES = {  # deter, hidden, classes, prior layers
    "1m": dict(deter=512, hidden=64, classes=4, prior_layers=2),
    "XS": dict(deter=256, hidden=256, classes=32, prior_layers=1),
}
STOCH, ACTIONS, EMBED = 32, 6, 256


def policy_net(feat: int) -> nn.Module:
    return nn.Sequential(nn.Linear(feat, 64), nn.SiLU(), nn.Linear(64, ACTIONS), nn.Tanh())


def build_ours(cfg):
    core = BlockGRUCore(cfg["deter"], STOCH * cfg["classes"], ACTIONS, hidden=cfg["hidden"])
    heads = [
        CategoricalLatentHead(cfg["hidden"], STOCH, cfg["classes"], unimix=0.01) for _ in range(2)
    ]
    rssm = RSSM(
        core,
        *heads,
        embed_dim=EMBED,
        hidden=cfg["hidden"],
        prior_layers=cfg["prior_layers"],
        norm="rms",
        act="silu",
    )
    policy = policy_net(rssm.feat_dim)

    def step(embed, action, is_first, horizon, imagine_grad=True):
        out = rssm.observe(embed, action, is_first)
        start = out["deter"].flatten(0, 1), out["stoch"].flatten(0, 1)
        if imagine_grad:
            img = rssm.imagine(*start, policy, horizon)
        else:
            with torch.no_grad():
                img = rssm.imagine(*[s.detach() for s in start], policy, horizon)
        loss = out["post"].mean() + out["prior"].mean() + img["deter"].mean() + img["stoch"].mean()
        loss.backward()

    return step, [rssm, policy]


def build_torchrl(cfg):
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.modules.models.model_based import RSSMPosteriorV3, RSSMPriorV3, RSSMRolloutV3

    prior = RSSMPriorV3(
        hidden_dim=cfg["hidden"],
        rnn_hidden_dim=cfg["deter"],
        num_categoricals=STOCH,
        num_classes=cfg["classes"],
        action_dim=ACTIONS,
        action_shape=(ACTIONS,),
        recurrent_model="block_gru",
        num_blocks=8,
        num_layers=1,
        prior_num_layers=cfg["prior_layers"],
        unimix=0.01,
    )
    posterior = RSSMPosteriorV3(
        hidden_dim=cfg["hidden"],
        num_categoricals=STOCH,
        num_classes=cfg["classes"],
        rnn_hidden_dim=cfg["deter"],
        obs_embed_dim=EMBED,
        use_rms_norm=True,
        num_layers=1,
        unimix=0.01,
    )
    rollout = RSSMRolloutV3(
        TensorDictModule(
            prior,
            in_keys=["state", "belief", "action"],
            out_keys=[("next", "prior_logits"), ("next", "state"), ("next", "belief")],
        ),
        TensorDictModule(
            posterior,
            in_keys=[("next", "belief"), ("next", "encoded_latents")],
            out_keys=[("next", "posterior_logits"), ("next", "state")],
        ),
        reset_key="is_init",
    )
    policy = policy_net(STOCH * cfg["classes"] + cfg["deter"])

    def step(embed, action, is_first, horizon, imagine_grad=True):
        B, T = embed.shape[:2]
        td = TensorDict(
            {
                "state": torch.zeros(B, T, STOCH * cfg["classes"]),
                "belief": torch.zeros(B, T, cfg["deter"]),
                "action": action,
                "is_init": is_first.unsqueeze(-1),
                "next": {"encoded_latents": embed},
            },
            [B, T],
        )
        out = rollout(td)
        state = out["next", "state"].flatten(0, 1)
        belief = out["next", "belief"].flatten(0, 1)
        beliefs, states = [belief], [state]
        for _ in range(horizon):
            a = policy(torch.cat([state, belief], -1))
            _, state, belief = prior(state, belief, a)
            beliefs.append(belief)
            states.append(state)
        loss = (
            out["next", "posterior_logits"].mean()
            + out["next", "prior_logits"].mean()
            + torch.stack(beliefs, 1).mean()
            + torch.stack(states, 1).mean()
        )
        loss.backward()

    return step, [prior, posterior, policy]


def interleaved(runs, args, inputs):
    """Time several (step, modules, kwargs) alternately, rep by rep, so that drift of
    this shared machine hits all of them alike. Returns per-run lists of seconds."""
    times = [[] for _ in runs]
    for i in range(args.warmup + args.reps):
        order = range(len(runs)) if i % 2 == 0 else reversed(range(len(runs)))
        for j in order:
            step, modules, kw = runs[j]
            for m in modules:
                m.zero_grad(set_to_none=True)
            start = time.perf_counter()
            step(*inputs, args.horizon, **kw)
            if i >= args.warmup:
                times[j].append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["1m", "XS"], choices=list(SIZES))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    B, T = args.batch, args.length
    inputs = (
        torch.randn(B, T, EMBED, generator=g),
        torch.randn(B, T, ACTIONS, generator=g).tanh(),
        torch.rand(B, T, generator=g) < 0.02,
    )
    results = []
    print(f"B={B} T={T} H={args.horizon} threads={args.threads} torch {torch.__version__}")
    for size in args.sizes:
        cfg = SIZES[size]
        torch.manual_seed(0)
        ours, ours_nograd, theirs = interleaved(
            [
                (*build_ours(cfg), {}),
                (*build_ours(cfg), {"imagine_grad": False}),
                (*build_torchrl(cfg), {}),
            ],
            args,
            inputs,
        )
        med = statistics.median
        row = dict(
            size=size,
            wmblocks_s=med(ours),
            torchrl_s=med(theirs),
            wmblocks_no_grad_imagine_s=med(ours_nograd),
            ratio=med([b / a for a, b in zip(ours, theirs, strict=True)]),
            ratio_v3_path=med([b / a for a, b in zip(ours_nograd, theirs, strict=True)]),
        )
        results.append(row)
        print(
            f"{size:>3}: wmblocks {row['wmblocks_s']:.3f} s | torchrl {row['torchrl_s']:.3f} s"
            f" | torchrl/wmblocks {row['ratio']:.2f}x (median of paired reps) | wmblocks,"
            f" imagination without graph (REINFORCE) {row['wmblocks_no_grad_imagine_s']:.3f}"
            f" s, torchrl/that {row['ratio_v3_path']:.2f}x"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), results=results), f, indent=1)


if __name__ == "__main__":
    main()
