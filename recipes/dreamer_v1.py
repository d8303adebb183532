"""DreamerV1 (Hafner et al. 2020, "Dream to Control"): Gaussian RSSM, reconstruction ELBO
(or the contrastive objective), V_lambda critic, dynamics-backprop actor.

    python recipes/dreamer_v1.py                    # Pendulum-v1 on CUDA if present, else CPU
    python recipes/dreamer_v1.py --objective nce    # contrastive state model, no decoder
    python recipes/dreamer_v1.py --env CartPole-v1  # discrete actions (straight-through)
    python recipes/dreamer_v1.py --logdir runs/x --resume

Official V1 defaults (deter 200, stoch 30, 400 units, free nats 3, H 15, gamma 0.99,
lambda 0.95, Adam lr 6e-4 (model) / 8e-5 (critic), clip 100, exploration noise 0.3,
action repeat 2 as on DMC) except where the CPU budget of minutes forces a change:
batch 16 x 50 (reference 50 x 50), train ratio 64 (reference: 100 updates of 50 x 50
every 1000 steps = 250) and prefill 2500 (reference 5000); and actor lr 2e-5
(reference 8e-5): with 8e-5 the tanh-Gaussian actor saturates to constant full torque
on Pendulum-v1 before the critic has learned the value scale (docs/benchmarks.md).
On this 2-core CPU, Pendulum-v1 reaches -250 within 30k env steps with half-width
networks, twice the updates and a faster critic:
``--units 200 --train-ratio 128 --critic-lr 4e-4 --actor-lr 4e-5``.
Reads top to bottom: configuration, the blocks, one training update; the shared loop
(wmblocks.train.loop) collects, replays, logs, evaluates and checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from wmblocks import presets
from wmblocks.losses import (
    V1_NCE_SCALES,
    V1_SCALES,
    behavior_loss_v1,
    total_loss,
    world_model_loss_v1,
    world_model_loss_v1_nce,
)
from wmblocks.optim import V1_OPTIM, adam, step_if_finite
from wmblocks.train.config import option
from wmblocks.train.envs import Envs
from wmblocks.train.loop import Agent, LoopConfig, run
from wmblocks.train.speed import autocast, compiled, use_compile


# --- 1. Configuration (the shared options are LoopConfig's) ---------------------------
@dataclasses.dataclass
class Config(LoopConfig):
    env: str = option(
        "Pendulum-v1",
        "SUITE/TASK (dmc/..., dmc-vision/..., see docs/suites/) or a gymnasium id",
    )
    objective: str = option(
        "recon",
        "world-model objective: recon (reconstruction ELBO) or nce (contrastive state model)",
        choices=["recon", "nce"],
    )
    action_repeat: int = option(2, "environment frames per action (reference: 2 on DMC)")
    batch: int = option(16, "replay sequences per update (B); reference: 50")
    length: int = option(50, "steps per replay sequence (T)")
    train_ratio: float = option(
        128.0,
        "replayed steps trained on per agent step; updates per agent step = "
        "train_ratio / (batch * length); reference: 500 (100 updates of 50 x 50 every "
        "1000 frames at action repeat 2)",
    )
    prefill: int = option(
        2500, "environment steps collected (by the untrained agent) first; reference 5000"
    )
    deter: int = option(200, "deterministic state size (GRU)")
    stoch: int = option(30, "Gaussian stochastic state size")
    units: int = option(400, "MLP width (encoder, decoder, heads, actor, critic)")
    free_nats: float = option(3.0, "free nats on the KL (batch mean)")
    horizon: int = option(15, "imagination horizon (H)")
    gamma: float = option(0.99, "discount")
    lam: float = option(0.95, "lambda of the V_lambda returns")
    noise: float = option(0.3, "Gaussian exploration noise on continuous actions")
    eta: float = option(0.0, "actor entropy bonus (V1 has none: 0)")
    eval_mode: str = option(
        "mode", "how evaluation acts: mode (the V1 reference) or sample", choices=["sample", "mode"]
    )
    model_lr: float = option(V1_OPTIM["model"].lr, "world-model Adam learning rate")
    actor_lr: float = option(
        2e-5,
        "actor Adam learning rate; reference 8e-5, which on Pendulum-v1's dense rewards "
        "saturates the actor within ~120 updates (docs/benchmarks.md)",
    )
    critic_lr: float = option(V1_OPTIM["critic"].lr, "critic Adam learning rate")
    logdir: str = option(
        "runs/dreamer_v1", "run directory (config, metrics, plot, checkpoint, replay)"
    )
    # Network sizes: a resumed run must keep them (--resume refuses a change).
    fixed_on_resume: ClassVar[tuple[str, ...]] = LoopConfig.fixed_on_resume + (
        "deter",
        "stoch",
        "units",
        "objective",
    )
    minimums: ClassVar[dict[str, int]] = {
        **LoopConfig.minimums,
        **dict.fromkeys(("deter", "stoch", "units", "horizon"), 1),
    }
    positive: ClassVar[tuple[str, ...]] = (
        *LoopConfig.positive,
        *("model_lr", "actor_lr", "critic_lr"),
    )


# The reference's settings for the suites its paper ran (DMC, from pixels in the paper).
_V1_DMC = {"batch": 50, "length": 50, "train_ratio": 500.0, "prefill": 5000, "steps": 5_000_000}
SUITES = {"dmc-vision": _V1_DMC, "dmc-proprio": _V1_DMC}


# --- 2. The blocks ------------------------------------------------------------------
def build(cfg: Config, env: Envs, device: torch.device) -> Agent:
    wm = presets.world_model_v1(
        env.obs_shapes, env.action_dim, deter=cfg.deter, stoch=cfg.stoch, units=cfg.units
    )
    feat = wm.rssm.feat_dim
    actor = presets.actor_v1(env.action_space, feat, units=cfg.units)  # tanh-Gaussian
    critic = presets.critic_v1(feat, units=cfg.units)  # MSE on V_lambda
    model = [wm]
    if cfg.objective == "nce":  # q(s_t | o_t) replaces the decoder's likelihood
        state_model = presets.state_model_v1(wm.encoder.out_dim, cfg.stoch, cfg.units)
        model.append(state_model)
    wm, actor, critic = wm.to(device), actor.to(device), critic.to(device)
    model = [m.to(device) for m in model]
    lrs = {"model": cfg.model_lr, "actor": cfg.actor_lr, "critic": cfg.critic_lr}
    params = {
        "model": [p for m in model for p in m.parameters()],
        "actor": list(actor.parameters()),
        "critic": list(critic.parameters()),
    }
    opts = {
        name: adam(params[name], dataclasses.replace(V1_OPTIM[name], lr=lrs[name]))
        for name in ("model", "actor", "critic")
    }

    # --- 3. One training update: ELBO (or NCE), then V_lambda by dynamics backprop --
    def model_losses(batch):
        """The world model's loss: the observed chunk, the loss and its metrics."""
        if cfg.objective == "nce":
            td = world_model_loss_v1_nce(wm, model[1], batch, free=cfg.free_nats)
            wm_loss, wm_metrics = total_loss(td, V1_NCE_SCALES)
        else:
            td = world_model_loss_v1(wm, batch, free=cfg.free_nats)
            wm_loss, wm_metrics = total_loss(td, V1_SCALES)
        return td, wm_loss, {f"wm/{k}": v for k, v in wm_metrics.items()}

    def losses(batch):
        """Every loss of one update (forward only): the part torch.compile compiles."""
        td, wm_loss, wm_metrics = model_losses(batch)
        td = td.apply(lambda x: x.detach())
        beh = behavior_loss_v1(
            wm, actor, critic, td, horizon=cfg.horizon, gamma=cfg.gamma, lam=cfg.lam, eta=cfg.eta
        )
        ac_loss, ac_metrics = total_loss(beh, {"actor": 1.0, "critic": 1.0})
        metrics = {
            **wm_metrics,
            **{f"ac/{k}": v for k, v in ac_metrics.items()},
            "ac/return": beh["return"].mean().detach(),
        }
        return wm_loss + ac_loss, metrics  # the losses touch disjoint parameter sets

    forward = compiled(losses, use_compile(cfg.compile, device))

    def update(batch) -> dict[str, torch.Tensor]:
        with autocast(cfg.precision, device):
            loss, metrics = forward(batch)
        loss.backward()
        skipped, norms = step_if_finite(opts, loss)  # a non-finite loss or gradient: no step
        metrics.update({f"grad_norm/{name}": norm for name, norm in norms.items()})
        metrics["train/skipped"] = skipped.float()
        return metrics

    modules = {"wm": wm, "actor": actor, "critic": critic}
    if cfg.objective == "nce":
        modules["state_model"] = model[1]
    return Agent(
        wm,
        actor,
        update,
        modules=modules,
        optimizers=opts,
        title=f"DreamerV1 ({cfg.objective})",
        noise=cfg.noise,
        world_model_loss=lambda batch: model_losses(batch)[1:],
    )


if __name__ == "__main__":
    run(Config, build, name="dreamer_v1", description=__doc__, suites=SUITES)
