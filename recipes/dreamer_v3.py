"""DreamerV3 (Hafner et al. 2023; the 2024 revision's defaults unless --revision 2023).

    python recipes/dreamer_v3.py                      # CartPole-v1 on CUDA if present, else CPU
    python recipes/dreamer_v3.py --env Pendulum-v1    # continuous actions
    python recipes/dreamer_v3.py --logdir runs/x --resume
    python recipes/dreamer_v3.py --help

Defaults are set for a CPU budget of minutes (size 1m, T 32, train ratio 96, lr 2e-4);
the 2024 reference uses T 64, train ratio 1024 (DMC proprio) and lr 4e-5: pass those
flags to match it. Everything else in which the 2023 and 2024 revisions differ is one
record, ``presets.v3_revision(cfg.revision)`` (see docs/dreamer_v3.md). Evaluation
samples the policy, as the reference (``--eval-mode mode`` takes its mode). Reads top
to bottom: configuration, the blocks, one training update. Collection, replay, the
train ratio, logging, evaluation, checkpoints and resuming are the shared loop's
(wmblocks.train.loop). The run directory (--logdir) receives config.json,
metrics.jsonl, returns.png, checkpoint.pt and the replay buffer.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from wmblocks import keys, presets
from wmblocks.losses import (
    behavior_loss_v3,
    replay_value_loss_v3,
    total_loss,
    world_model_loss_v3,
)
from wmblocks.nn import ReturnNormalizer, SlowCritic, refresh_context_, split_context
from wmblocks.optim import step_if_finite
from wmblocks.train.config import option
from wmblocks.train.envs import Envs
from wmblocks.train.loop import Agent, LoopConfig, run
from wmblocks.train.speed import autocast, compile_optimizers, compiled, use_compile


# --- 1. Configuration (the shared options are LoopConfig's) ---------------------------
@dataclasses.dataclass
class Config(LoopConfig):
    size: str = option("1m", "size preset: 1m 12m 25m 50m 100m 200m (2024), S M L XL (2023), debug")
    revision: int = option(2024, "which paper revision's defaults", choices=[2023, 2024])
    length: int = option(32, "steps per replay sequence (T); reference: 64")
    train_ratio: float = option(
        96.0,
        "replayed steps trained on per agent step; updates per agent step = "
        "train_ratio / (batch * length); reference: 1024 (DMC proprio, size 1m)",
    )
    horizon: int = option(15, "imagination horizon (H)")
    lr: float = option(
        2e-4,
        "learning rate of the 2024 optimiser (LaProp + AGC; reference 4e-5); the 2023 "
        "revision uses its per-module Adam defaults",
    )
    logdir: str = option(
        "runs/dreamer_v3", "run directory (config, metrics, plot, checkpoint, replay)"
    )
    # Network sizes: a resumed run must keep them (--resume refuses a change).
    fixed_on_resume: ClassVar[tuple[str, ...]] = LoopConfig.fixed_on_resume + ("size", "revision")
    minimums: ClassVar[dict[str, int]] = {**LoopConfig.minimums, "horizon": 1}
    positive: ClassVar[tuple[str, ...]] = (*LoopConfig.positive, "lr")


# The 2024 reference's settings per suite (dreamerv3 configs.yaml: its default size is
# 200m; dmc_proprio sets 1m; 16 environments except Atari 100k and Crafter; lr 4e-5;
# batch 16 x 64; DMC with action repeat 1, as its env.dmc). Steps count frames: Atari
# 100k is 100k agent steps = 400k frames. Atari evaluates every 20k frames (an
# evaluation episode can last 27k agent steps).
_V3 = {"batch": 16, "length": 64, "lr": 4e-5}
_DMC = {**_V3, "envs": 16, "action_repeat": 1, "steps": 1_100_000}
SUITES = {
    "dmc-proprio": {**_DMC, "size": "1m", "train_ratio": 1024.0},
    "dmc-vision": {**_DMC, "size": "200m", "train_ratio": 256.0},
    "atari100k": {
        **_V3,
        "size": "200m",
        "train_ratio": 256.0,
        "steps": 400_000,
        "envs": 1,
        "eval_every": 20_000,
    },
    "crafter": {**_V3, "size": "200m", "train_ratio": 512.0, "steps": 1_100_000, "envs": 1},
}


# --- 2. The blocks ------------------------------------------------------------------
def build(cfg: Config, env: Envs, device: torch.device) -> Agent:
    rev = presets.v3_revision(cfg.revision)  # everything the revisions differ in
    wm = presets.world_model_v3(env.obs_shapes, env.action_dim, cfg.size, rev)
    feat = wm.rssm.feat_dim
    actor = presets.actor_v3(env.action_space, feat, cfg.size, rev)
    critic = presets.critic_v3(feat, cfg.size, rev)
    wm, actor, critic = wm.to(device), actor.to(device), critic.to(device)
    slow = SlowCritic(critic, rate=0.02)  # EMA of the critic, regulariser target
    normalizer = ReturnNormalizer().to(device)  # percentile EMA of the returns
    opts = rev.optimizer({"model": wm, "actor": actor, "critic": critic}, cfg.lr)
    backprop = rev.backprop_continuous and not env.discrete  # 2023: Box by dynamics backprop

    # --- 3. One training update: world model, then behaviour from its posteriors ------
    def model_losses(batch):
        """The world model's loss: the observed chunk, the loss and its metrics."""
        # 2024: the chunk starts from the latent stored with the step before it.
        td, start = split_context(batch) if rev.replay_context else (batch, None)
        td = world_model_loss_v3(wm, td, start=start, cont_target=rev.cont_target)
        wm_loss, wm_metrics = total_loss(td, rev.scales)
        return td, wm_loss, {f"wm/{k}": v for k, v in wm_metrics.items()}

    def losses(batch):
        """Every loss of one update (forward only): the part torch.compile compiles."""
        td, wm_loss, wm_metrics = model_losses(batch)
        beh = behavior_loss_v3(
            wm,
            actor,
            critic,
            slow,
            normalizer,
            td.apply(lambda x: x.detach()),
            horizon=cfg.horizon,
            gamma=rev.gamma,
            backprop=backprop,
            continue_flags=rev.imagined_continue,
        )
        ac_loss, ac_metrics = total_loss(beh, {"actor": 1.0, "critic": 1.0})
        loss = wm_loss + ac_loss
        metrics = {**wm_metrics, **{f"ac/{k}": v for k, v in ac_metrics.items()}}
        if rev.repval_scale:  # replay value loss; its gradient also trains the world model
            posterior = wm.features(td)
            repval = replay_value_loss_v3(
                critic=critic(posterior),
                slow_value=slow(posterior.detach()).mean,
                reward=td[keys.REWARD],
                is_last=td[keys.IS_LAST],
                is_terminal=td[keys.IS_TERMINAL],
                boot=beh["return"][:, 0].view(td.batch_size),
            )
            loss = loss + rev.repval_scale * repval["loss_repval"].mean()
            metrics["ac/repval"] = repval["loss_repval"].mean().detach()
        metrics["ac/return"] = beh["return"].mean().detach()
        context = td.select(keys.DETER, keys.STOCH).detach() if rev.replay_context else None
        return loss, metrics, context

    forward = compiled(losses, use_compile(cfg.compile, device))
    compile_optimizers(opts, use_compile(cfg.compile, device), device)

    def update(batch) -> dict[str, torch.Tensor]:
        kept = normalizer.state()  # the losses update it; a skipped update restores it
        with autocast(cfg.precision, device):
            loss, metrics, context = forward(batch)
        loss.backward()
        skipped, norms = step_if_finite(opts, loss)  # a non-finite loss or gradient: no step
        normalizer.restore_(kept, skipped)
        slow.update(critic, skipped)
        if rev.replay_context:
            refresh_context_(batch, context, skipped)
        metrics.update({f"grad_norm/{name}": norm for name, norm in norms.items()})
        metrics["ac/scale"] = normalizer.scale()
        metrics["train/skipped"] = skipped.float()
        return metrics

    return Agent(
        wm,
        actor,
        update,
        modules={
            "wm": wm,
            "actor": actor,
            "critic": critic,
            "slow": slow,
            "normalizer": normalizer,
        },
        optimizers=opts,
        title=f"DreamerV3 ({rev.name}, {cfg.size})",
        replay_context=rev.replay_context,
        world_model_loss=lambda batch: model_losses(batch)[1:],
        world_model_optimizers=("model",) if "model" in opts else ("all",),
    )


if __name__ == "__main__":
    run(Config, build, name="dreamer_v3", description=__doc__, suites=SUITES)
