"""DreamerV2 (Hafner et al. 2021, "Mastering Atari with Discrete World Models"):
categorical 32 x 32 latents, LayerNorm GRU, KL balancing, discount predictor,
rho-mixed actor, slow critic copied every 100 updates.

    python recipes/dreamer_v2.py                        # CartPole-v1 on CUDA if present, else CPU
    python recipes/dreamer_v2.py --env Pendulum-v1      # continuous: dynamics backprop (rho 0)
    python recipes/dreamer_v2.py --logdir runs/x --resume

Official V2 defaults (32 x 32 latents, KL balance 0.8, batch 16 x 50, one update every
5 steps = train ratio 160, H 15, gamma 0.99, lambda 0.95, Adam eps 1e-5, weight decay
1e-6 per step independent of the lr, clip 100, slow critic every 100) with the
reference's DMC settings for these small vector tasks (deter 200, hidden 200, model
lr 3e-4, KL free 1; the Atari ones are deter 600, model lr 2e-4, free 0), and rho /
eta / the discount head by action space as the reference's configs set them
(REINFORCE, eta 1e-3 and a discount head for discrete as on Atari; backprop, eta 1e-4
and a constant gamma for continuous as on DMC). Evaluation acts with the policy's
mode, as the reference. Reads
top to bottom: configuration, the blocks, one training update; the shared loop
(wmblocks.train.loop) collects, replays, logs, evaluates and checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from wmblocks import presets
from wmblocks.losses import (
    V2_SCALES,
    V2_SCALES_NO_DISCOUNT,
    behavior_loss_v2,
    total_loss,
    world_model_loss_v2,
)
from wmblocks.nn import SlowCritic
from wmblocks.optim import V2_OPTIM, adam, step_if_finite
from wmblocks.train.config import option
from wmblocks.train.envs import Envs
from wmblocks.train.loop import Agent, LoopConfig, run
from wmblocks.train.speed import autocast, compiled, use_compile


# --- 1. Configuration (the shared options are LoopConfig's) ---------------------------
@dataclasses.dataclass
class Config(LoopConfig):
    batch: int = option(16, "replay sequences per update (B)")
    length: int = option(50, "steps per replay sequence (T)")
    train_ratio: float = option(
        64.0,
        "replayed steps trained on per agent step; updates per agent step = "
        "train_ratio / (batch * length); reference: 160 (one update every 5 steps)",
    )
    deter: int = option(200, "deterministic state size (reference: 200 DMC, 600 Atari)")
    hidden: int = option(200, "RSSM hidden size (reference: 200 DMC, 600 Atari)")
    stoch: int = option(32, "categorical groups (S)")
    classes: int = option(32, "classes per group (C)")
    units: int = option(200, "MLP width (encoder, decoder, heads, actor, critic); reference: 400")
    kl_balance: float = option(0.8, "KL balancing alpha (weight of the prior's term)")
    kl_free: float = option(1.0, "free nats on each KL term (reference: 1 DMC, 0 Atari)")
    horizon: int = option(15, "imagination horizon (H)")
    gamma: float = option(0.99, "discount (reference: 0.99, 0.999 Atari)")
    lam: float = option(0.95, "lambda of the lambda-returns")
    rho: float = option(
        -1.0, "REINFORCE fraction of the actor gradient; negative: 1 discrete, 0 continuous"
    )
    eta: float = option(
        -1.0, "actor entropy scale; negative: 1e-3 discrete (Atari), 1e-4 continuous (DMC)"
    )
    slow_every: int = option(100, "updates between hard copies of the critic to its target")
    discount_head: str = option(
        "auto",
        "predict discounts with a head (reference pred_discount): on, off (constant gamma, "
        "the reference's DMC setting), or auto: on for discrete actions, off for continuous",
        choices=["auto", "on", "off"],
    )
    eval_mode: str = option(
        "mode", "how evaluation acts: mode (the V2 reference) or sample", choices=["sample", "mode"]
    )
    model_lr: float = option(
        3e-4, "world-model Adam learning rate (reference: 3e-4 DMC, 2e-4 Atari)"
    )
    actor_lr: float = option(V2_OPTIM["actor"].lr, "actor Adam learning rate")
    critic_lr: float = option(V2_OPTIM["critic"].lr, "critic Adam learning rate")
    logdir: str = option(
        "runs/dreamer_v2", "run directory (config, metrics, plot, checkpoint, replay)"
    )
    # Network sizes: a resumed run must keep them (--resume refuses a change).
    fixed_on_resume: ClassVar[tuple[str, ...]] = LoopConfig.fixed_on_resume + (
        "deter",
        "hidden",
        "stoch",
        "classes",
        "units",
        "discount_head",
    )
    minimums: ClassVar[dict[str, int]] = {
        **LoopConfig.minimums,
        **dict.fromkeys(("deter", "hidden", "stoch", "classes", "units", "horizon"), 1),
    }
    positive: ClassVar[tuple[str, ...]] = (
        *LoopConfig.positive,
        *("model_lr", "actor_lr", "critic_lr"),
    )


# The reference's settings (dreamerv2 configs.yaml): DMC as its dmc_vision / dmc_proprio
# configs (deter and hidden 200, KL free 1, model lr 3e-4, actor and critic lr 8e-5,
# action repeat 2, one update of 16 x 50 every 5 agent steps, 1M frames).
_V2_DMC = {
    "batch": 16,
    "length": 50,
    "train_ratio": 160.0,
    "steps": 1_000_000,
    "prefill": 2500,
    "deter": 200,
    "hidden": 200,
    "units": 400,
    "kl_free": 1.0,
    "model_lr": 3e-4,
    "actor_lr": 8e-5,
    "critic_lr": 8e-5,
}
SUITES = {"dmc-vision": _V2_DMC, "dmc-proprio": _V2_DMC}


# --- 2. The blocks ------------------------------------------------------------------
def build(cfg: Config, env: Envs, device: torch.device) -> Agent:
    discount_head = cfg.discount_head == "on" or (cfg.discount_head == "auto" and env.discrete)
    wm = presets.world_model_v2(
        env.obs_shapes,
        env.action_dim,
        deter=cfg.deter,
        hidden=cfg.hidden,
        stoch=cfg.stoch,
        classes=cfg.classes,
        units=cfg.units,
        discount_head=discount_head,
    ).to(device)
    feat = wm.rssm.feat_dim
    actor = presets.actor_v2(env.action_space, feat, units=cfg.units).to(device)
    critic = presets.critic_v2(feat, units=cfg.units).to(device)
    slow = SlowCritic(critic, rate=1.0, every=cfg.slow_every)  # the target critic
    rho = presets.rho_v2(env.action_space) if cfg.rho < 0 else cfg.rho
    eta = (1e-3 if env.discrete else 1e-4) if cfg.eta < 0 else cfg.eta
    lrs = {"model": cfg.model_lr, "actor": cfg.actor_lr, "critic": cfg.critic_lr}
    opts = {
        name: adam(module.parameters(), dataclasses.replace(V2_OPTIM[name], lr=lrs[name]))
        for name, module in (("model", wm), ("actor", actor), ("critic", critic))
    }
    scales = V2_SCALES if discount_head else V2_SCALES_NO_DISCOUNT

    # --- 3. One training update: balanced-KL world model, then rho-mixed behaviour --
    def model_losses(batch):
        """The world model's loss: the observed chunk, the loss and its metrics."""
        td = world_model_loss_v2(wm, batch, alpha=cfg.kl_balance, free=cfg.kl_free, gamma=cfg.gamma)
        wm_loss, wm_metrics = total_loss(td, scales)
        return td, wm_loss, {f"wm/{k}": v for k, v in wm_metrics.items()}

    def losses(batch):
        """Every loss of one update (forward only): the part torch.compile compiles."""
        td, wm_loss, wm_metrics = model_losses(batch)
        td = td.apply(lambda x: x.detach())
        beh = behavior_loss_v2(
            wm,
            actor,
            critic,
            slow,
            td,
            rho=rho,
            eta=eta,
            horizon=cfg.horizon,
            gamma=cfg.gamma,
            lam=cfg.lam,
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
        slow.update(critic, skipped)
        metrics.update({f"grad_norm/{name}": norm for name, norm in norms.items()})
        metrics["train/skipped"] = skipped.float()
        return metrics

    return Agent(
        wm,
        actor,
        update,
        modules={"wm": wm, "actor": actor, "critic": critic, "slow": slow},
        optimizers=opts,
        title=f"DreamerV2 (rho {rho:g}, discount head {'on' if discount_head else 'off'})",
        world_model_loss=lambda batch: model_losses(batch)[1:],
    )


if __name__ == "__main__":
    run(Config, build, name="dreamer_v2", description=__doc__, suites=SUITES)
