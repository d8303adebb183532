"""sheeprl 0.8.4's own DreamerV3 training update, as a benchmark peer of wmblocks.

Runs only in the separate venv made by ``benchmarks/peers/sheeprl_venv.sh`` (sheeprl is
no dependency of wmblocks, and this module imports nothing of it):

    /work/sheeprl-venv/bin/python benchmarks/peers/sheeprl_v3.py --size 1m --discrete \\
        --threads 2 --reps 10 --warmup 2          # compare.py's worker protocol: one JSON line

The agent is assembled as sheeprl's entry point ``sheeprl/algos/dreamer_v3/dreamer_v3.py``
``main`` does: the configuration is composed with hydra from sheeprl's packaged configs
(``exp=dreamer_v3``, whose algo is ``dreamer_v3_S``, ``env=dummy``) and turned into
sheeprl's ``dotdict``; a single-device CPU Lightning ``Fabric`` is instantiated from
``cfg.fabric``; ``agent.build_agent`` builds the world model, actor, critic and target
critic (with sheeprl's Hafner initialisation) and sets them up with Fabric; the three
Adam optimisers come from ``cfg.algo.*.optimizer`` through ``hydra.utils.instantiate`` and
``fabric.setup_optimizers``; ``utils.Moments`` normalises the returns. ``update()`` then
does what ``main``'s training loop does per gradient step: the slow-critic update
(``tau`` 1 at the first step, then 0.02, every step) and one call of sheeprl's own
``train(...)`` (world-model loss and step, imagination, actor loss and step, critic loss
and step) on a fixed random replay batch (time first, ``[T, B, ...]`` float32, as
``sample_batches`` yields it; cloned per call, since ``train`` writes ``is_first[0]``).

``--algo dreamer_v3_5`` builds sheeprl's other DreamerV3, ``sheeprl/algos/dreamer_v3_5``
(the 2024 "Nature" revision: block GRU, RMSNorm, one LaProp optimiser with AGC, replay
value loss, a stored replay context), from ``exp=dreamer_v3_5`` with the same widths, and
calls its ``train(...)`` plus ``update_target_critic``. That one is the architecture of
wmblocks' 2024 update; ``dreamer_v3`` (the default) is sheeprl's classic DreamerV3.

Size mapping, wmblocks ``presets.SIZES_2024`` -> sheeprl config keys (under ``algo.``;
``wm.`` is ``world_model.``, ``rec.`` is ``wm.recurrent_model.``):

    wmblocks     dreamer_v3 (2023)                   dreamer_v3_5 (2024)       1m    XS
    deter        rec.recurrent_state_size            the same                  512   256
    hidden       rec.dense_units, wm.transition_     rec.hidden_size (prior    64    256
                   model / representation_model.       and posterior read it)
                   hidden_size
    units        dense_units (every MLP)             dense_units               64    256
    stoch        wm.stochastic_size                  the same                  32    32
    classes      wm.discrete_size                    the same                  4     32
    layers       wm.encoder / observation_model.     the same                  3     1
                   mlp_layers
    head_layers  wm.reward_model / discount_model.   the same                  1     1
                   mlp_layers
    ac_layers    actor / critic.mlp_layers           the same                  3     1
    blocks       (none: one LayerNorm GRU cell)      rec.blocks                8     8

XS is exactly sheeprl's own ``dreamer_v3_XS`` preset; 1m matches ``dreamer_v3_5_1M``.
Vector observations only: one MLP key ``state`` (24), no CNN keys; 6 actions (one-hot
for discrete, in [-1, 1] for continuous); B16 T64 H15.

Trainable parameters (world model + actor + critic, the learnable initial recurrent
state included, the target critic not), 24 observations, 6 actions; wmblocks from
``benchmarks.bench_update.build_update(size, discrete=...)``:

    size / actions     wmblocks    sheeprl dreamer_v3    sheeprl dreamer_v3_5
    1m discrete        640,477     1,259,613             640,477
    1m continuous      640,867     1,260,003             640,867
    XS discrete        3,138,077   3,169,821             3,138,077
    XS continuous      3,139,619   3,171,363             3,139,619

``dreamer_v3_5`` counts exactly wmblocks' parameters at both sizes. ``dreamer_v3`` at
1m (discrete): encoder 10,112, decoder 51,096, reward 57,663, continue 41,153, recurrent
model 896,512 (its GRU cell 887,808), posterior 45,312, prior 41,216, actor 49,926,
critic 66,111 (+ 512 initial state).

Differences from wmblocks' 2024 update, same widths, ``--algo dreamer_v3`` (sheeprl's
2023 revision, its own ``dreamer_v3_S`` defaults for everything but the widths):
* recurrent model: a dense layer (hidden) on cat(z, a), then one LayerNorm GRU cell of
  size deter, no blocks: at 1m its 3 x 512 x (64 + 512) weights alone are 888k, hence
  1.26M parameters against wmblocks' 640k (about 2x); at XS +1.0%.
* prior and posterior have one hidden layer each (wmblocks' 2024 prior has 2); the
  reward and critic heads are zero-initialised, the others Hafner-uniform.
* LayerNorm (eps 1e-3) instead of RMSNorm (1e-4); no symlog on the encoder inputs.
* three fused Adam optimisers (world model lr 1e-4, eps 1e-8, clip 1000; actor and
  critic lr 3e-5, eps 1e-5, clip 100) and three backward passes, against wmblocks'
  single LaProp + AGC step on the summed loss; no replay value loss; KL dynamic 0.5 /
  representation 0.1; the discount gamma 0.997 in the lambda returns (no continue
  target 1 - 1/333); the critic regresses on the lambda returns and the slow critic.
* sequences start from the learnable initial state (no stored replay-context row).
* the discrete actor mixes 1% uniform (REINFORCE); the continuous actor is sheeprl's
  ``scaled_normal`` (tanh mean, std in [0.1, 1]) trained by dynamics backpropagation
  (``objective_mix`` null), so the imagination keeps its graph for continuous actions.
* logging is off (``metric.log_level=0``, no aggregator): the posterior and prior
  entropies that sheeprl computes only for its metrics are skipped. ``update.losses``
  holds the three losses ``train`` backpropagates (recorded by wrapping
  ``fabric.backward``, since ``train`` returns nothing).
* ``algo.compile.enabled`` is False (sheeprl's default) unless ``--compile``, which sets
  it with ``algo.compile.mode=default`` (its default ``reduce-overhead`` asks for CUDA
  graphs) and ``algo.compile.player=False``: sheeprl then compiles its world-model,
  imagination, actor and critic losses with ``torch.compile``, as its own option does.

``--algo dreamer_v3_5``: sheeprl's defaults of that revision (one LaProp, lr 4e-5, eps
1e-20, AGC 0.3, 1000 warm-up steps; replay value loss 0.3; slow-critic regulariser 1;
unimix 1% in the actor, which wmblocks' discrete actor lacks; continue target "contdisc";
``replay_context`` 1: the batch is 65 steps, the first one carrying stored random
``deter``/``stoch`` latents, like wmblocks' stored-context row). ``update.losses`` holds
the one summed loss.

Lightning prints "Seed set to 0" on stderr; the JSON row is the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import gymnasium as gym
import hydra
import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

# wmblocks presets (wmblocks/presets.py SIZES_2024) that sheeprl's configs can express.
SIZES = {
    "1m": dict(deter=512, hidden=64, units=64, stoch=32, classes=4, layers=3, head_layers=1,
               ac_layers=3, blocks=8),
    "XS": dict(deter=256, hidden=256, units=256, stoch=32, classes=32, layers=1, head_layers=1,
               ac_layers=1, blocks=8),
}  # fmt: skip
OBS_KEY = "state"
ALGOS = ("dreamer_v3", "dreamer_v3_5")


def _overrides(
    algo: str, size: str, batch: int, length: int, horizon: int, compile: bool = False
) -> list[str]:
    s = SIZES[size]
    w = "algo.world_model"
    common = [
        f"exp={algo}",
        "env=dummy",
        "env.num_envs=1",
        "fabric.accelerator=cpu",
        "fabric.devices=1",
        "fabric.precision=32-true",
        "metric.log_level=0",
        "model_manager.disabled=True",
        f"algo.compile.enabled={compile}",
        "algo.compile.mode=default",
        "algo.compile.player=False",
        "algo.cnn_keys.encoder=[]",
        "algo.cnn_keys.decoder=[]",
        f"algo.mlp_keys.encoder=[{OBS_KEY}]",
        f"algo.mlp_keys.decoder=[{OBS_KEY}]",
        f"algo.per_rank_batch_size={batch}",
        f"algo.per_rank_sequence_length={length}",
        f"algo.horizon={horizon}",
        f"algo.dense_units={s['units']}",
        f"{w}.stochastic_size={s['stoch']}",
        f"{w}.discrete_size={s['classes']}",
        f"{w}.recurrent_model.recurrent_state_size={s['deter']}",
        f"{w}.encoder.mlp_layers={s['layers']}",
        f"{w}.observation_model.mlp_layers={s['layers']}",
        f"{w}.reward_model.mlp_layers={s['head_layers']}",
        f"{w}.discount_model.mlp_layers={s['head_layers']}",
        f"algo.actor.mlp_layers={s['ac_layers']}",
        f"algo.critic.mlp_layers={s['ac_layers']}",
    ]
    if algo == "dreamer_v3":
        # dreamer_v3_S's MLP depth is one knob (algo.mlp_layers) that every MLP reads;
        # the per-module overrides above replace it.
        return common + [
            f"algo.mlp_layers={s['layers']}",
            f"{w}.recurrent_model.dense_units={s['hidden']}",
            f"{w}.transition_model.hidden_size={s['hidden']}",
            f"{w}.representation_model.hidden_size={s['hidden']}",
        ]
    return common + [
        f"{w}.recurrent_model.hidden_size={s['hidden']}",
        f"{w}.recurrent_model.blocks={s['blocks']}",
    ]


def compose_cfg(algo: str, size: str, batch: int, length: int, horizon: int, compile: bool = False):
    """sheeprl's configuration, composed as its CLI does, as its ``dotdict``."""
    from hydra.core.global_hydra import GlobalHydra
    from sheeprl.utils.utils import dotdict

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="sheeprl.configs", version_base="1.3"):
        cfg = compose("config", overrides=_overrides(algo, size, batch, length, horizon, compile))
    return dotdict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))


def _spaces(obs_dim: int, action_dim: int, discrete: bool):
    box = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    obs_space = gym.spaces.Dict({OBS_KEY: box})
    if discrete:
        return obs_space, gym.spaces.Discrete(action_dim)
    return obs_space, gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)


def _batch(T: int, B: int, obs_dim: int, action_dim: int, discrete: bool, dev) -> dict:
    """A replay batch as sheeprl's ``sample_batches`` yields it: time first, float32."""
    if discrete:
        index = torch.randint(0, action_dim, (T, B))
        actions = torch.nn.functional.one_hot(index, action_dim).float()
    else:
        actions = torch.rand(T, B, action_dim) * 2 - 1
    zeros = torch.zeros(T, B, 1)
    data = {
        OBS_KEY: torch.randn(T, B, obs_dim),
        "actions": actions,
        "rewards": torch.randn(T, B, 1),
        "terminated": zeros,
        "truncated": zeros.clone(),
        "is_first": (torch.rand(T, B, 1) < 0.01).float(),
    }
    return {k: v.to(dev) for k, v in data.items()}


def _count(*modules) -> int:
    params = {id(p): p for m in modules for p in m.parameters() if p.requires_grad}
    return sum(p.numel() for p in params.values())


def build(
    size: str,
    batch: int,
    length: int,
    horizon: int,
    obs_dim: int,
    action_dim: int,
    discrete: bool,
    device="cpu",
    algo: str = "dreamer_v3",
    compile: bool = False,
) -> tuple[Callable[[], None], int]:
    """``(update, n_params)`` for sheeprl's DreamerV3 (``algo``: "dreamer_v3" or
    "dreamer_v3_5") at wmblocks' size ``size`` ("1m" or "XS"). ``update()`` runs one
    gradient step of sheeprl's training loop (slow-critic update and ``train(...)``)
    on a fixed random replay batch of ``batch`` x ``length`` steps, cloned per call.
    ``n_params`` counts the trainable parameters of the world model, actor and critic.
    The losses of the last call (detached) are left in ``update.losses``."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; choose one of {ALGOS}")
    if device != "cpu":
        raise ValueError("this peer runs sheeprl's Fabric on the CPU only")
    cfg = compose_cfg(algo, size, batch, length, horizon, compile)
    from sheeprl.utils.metric import MetricAggregator
    from sheeprl.utils.timer import timer

    # What sheeprl's CLI does with metric.log_level 0.
    MetricAggregator.disabled = True
    timer.disabled = True
    fabric = hydra.utils.instantiate(cfg.fabric, accelerator="cpu", devices=1, _convert_="all")
    fabric.seed_everything(0)
    obs_space, action_space = _spaces(obs_dim, action_dim, discrete)
    actions_dim = (action_dim,)
    is_continuous = not discrete
    if algo == "dreamer_v3":
        return _build_v3(fabric, cfg, obs_space, actions_dim, is_continuous, batch, length, obs_dim)
    return _build_v3_5(fabric, cfg, obs_space, actions_dim, is_continuous, batch, length, obs_dim)


def _build_v3(fabric, cfg, obs_space, actions_dim, is_continuous, batch, length, obs_dim):
    from sheeprl.algos.dreamer_v3 import dreamer_v3 as dv3
    from sheeprl.algos.dreamer_v3.agent import build_agent
    from sheeprl.algos.dreamer_v3.utils import Moments

    world_model, actor, critic, target_critic, _player = build_agent(
        fabric, actions_dim, is_continuous, cfg, obs_space
    )
    a = cfg.algo
    world_opt = hydra.utils.instantiate(
        a.world_model.optimizer, params=world_model.parameters(), _convert_="all"
    )
    actor_opt = hydra.utils.instantiate(
        a.actor.optimizer, params=actor.parameters(), _convert_="all"
    )
    critic_opt = hydra.utils.instantiate(
        a.critic.optimizer, params=critic.parameters(), _convert_="all"
    )
    world_opt, actor_opt, critic_opt = fabric.setup_optimizers(world_opt, actor_opt, critic_opt)
    m = a.actor.moments
    moments = Moments(m.decay, m.max, m.percentile.low, m.percentile.high)
    n_params = _count(world_model, actor, critic)
    fixed = _batch(length, batch, obs_dim, sum(actions_dim), not is_continuous, fabric.device)
    losses = _record_losses(fabric)
    step = [0]

    def update() -> None:
        losses.clear()
        # main()'s loop: the slow critic first (a copy at the first step), then train().
        if step[0] % a.critic.per_rank_target_network_update_freq == 0:
            tau = 1 if step[0] == 0 else a.critic.tau
            pairs = zip(critic.module.parameters(), target_critic.parameters(), strict=True)
            for cp, tcp in pairs:
                tcp.data.copy_(tau * cp.data + (1 - tau) * tcp.data)
        data = {k: v.clone() for k, v in fixed.items()}
        dv3.train(
            fabric, world_model, actor, critic, target_critic, world_opt, actor_opt, critic_opt,
            data, None, cfg, is_continuous, actions_dim, moments,
        )  # fmt: skip
        step[0] += 1
        update.losses = dict(zip(("world_model", "policy", "value"), losses, strict=True))

    update.losses = {}
    return update, n_params


def _build_v3_5(fabric, cfg, obs_space, actions_dim, is_continuous, batch, length, obs_dim):
    from sheeprl.algos.dreamer_v3.utils import Moments
    from sheeprl.algos.dreamer_v3_5 import dreamer_v3_5 as dv35
    from sheeprl.algos.dreamer_v3_5.agent import build_agent

    world_model, actor, critic, target_critic, _player = build_agent(
        fabric, actions_dim, is_continuous, cfg, obs_space
    )
    a = cfg.algo
    optimizer = hydra.utils.instantiate(
        a.optimizer,
        params=[*world_model.parameters(), *actor.parameters(), *critic.parameters()],
        _convert_="all",
    )
    optimizer = fabric.setup_optimizers(optimizer)
    m = a.actor.moments
    moments = Moments(m.decay, m.max, m.percentile.low, m.percentile.high)
    n_params = _count(world_model, actor, critic)
    context = int(a.replay_context)
    w = a.world_model
    T = length + context
    fixed = _batch(T, batch, obs_dim, sum(actions_dim), not is_continuous, fabric.device)
    if context > 0:
        # The latent states the buffer keeps (write_latent_states): float16 deter, classes.
        deter = torch.randn(T, batch, w.recurrent_model.recurrent_state_size).tanh()
        fixed["deter"] = deter.half()
        classes = (T, batch, w.stochastic_size)
        fixed["stoch"] = torch.randint(0, w.discrete_size, classes, dtype=torch.uint8)
    losses = _record_losses(fabric)
    step = [0]

    def update() -> None:
        losses.clear()
        data = {k: v.clone() for k, v in fixed.items()}
        dv35.train(
            fabric, cfg, world_model, actor, critic, target_critic, optimizer, moments,
            data, None, actions_dim,
        )  # fmt: skip
        # main()'s loop: the slow critic after every train() step.
        if step[0] % a.critic.per_rank_target_network_update_freq == 0:
            dv35.update_target_critic(critic, target_critic, a.critic.tau)
        step[0] += 1
        update.losses = {"total": losses[-1]}

    update.losses = {}
    return update, n_params


def _record_losses(fabric) -> list:
    """The detached scalars ``fabric.backward`` is called on, in order (sheeprl's
    ``train`` returns no losses without a metric aggregator)."""
    losses: list = []
    backward = fabric.backward

    def recording_backward(tensor, *args, **kwargs):
        losses.append(tensor.detach().clone())
        return backward(tensor, *args, **kwargs)

    fabric.backward = recording_backward
    return losses


# The FLOP counter and the benchmark's sizes are compare.py's own (it imports only the
# standard library at module level, so this venv can load it without wmblocks).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmarks.compare import SETUP, count_flops, time_update  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1m", choices=sorted(SIZES))
    p.add_argument("--sizes", nargs="+", default=None, help="compare.py spelling: first one used")
    p.add_argument("--discrete", action="store_true")
    p.add_argument("--algo", default="dreamer_v3", choices=ALGOS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="sheeprl's algo.compile (losses)")
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--params-only", action="store_true")
    p.add_argument("--check", type=int, default=0, help="run N updates and print their losses")
    args = p.parse_args()
    size = args.sizes[0] if args.sizes else args.size
    torch.set_num_threads(args.threads)
    s = SETUP
    start = time.perf_counter()
    update, params = build(size, s["batch"], s["length"], s["horizon"], s["obs"], s["actions"],
                           args.discrete, algo=args.algo, compile=args.compile)  # fmt: skip
    if args.params_only:
        print(json.dumps({"params": params}))
        return
    if args.check:
        for i in range(args.check):
            update()
            vals = {k: float(v) for k, v in update.losses.items()}
            finite = all(np.isfinite(v) for v in vals.values())
            print(f"update {i}: {vals} finite={finite}", flush=True)
            if not finite:
                raise SystemExit("non-finite loss")
        return
    row = {**time_update(update, start, args.warmup, args.reps), "params": params}
    if not args.no_flops:
        row["flops"] = count_flops(update)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
