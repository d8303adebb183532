"""DreamerV3 (Hafner et al. 2023; the 2024 revision's defaults unless --revision 2023).

    python recipes/dreamer_v3.py                      # CartPole-v1 on CUDA if present, else CPU
    python recipes/dreamer_v3.py --env Pendulum-v1    # continuous actions
    python recipes/dreamer_v3.py --logdir runs/x --resume
    python recipes/dreamer_v3.py --help

Defaults are set for a CPU budget of minutes (size 1m, T 32, train ratio 96, lr 2e-4);
the 2024 reference uses T 64, train ratio 512 (DMC proprio) and lr 4e-5: pass those
flags to match it. Reads top to bottom: configuration, the blocks, acting, one training update,
evaluation, checkpoints, the loop. The run directory (--logdir) receives config.json,
metrics.jsonl, returns.png, checkpoint.pt and the replay buffer.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import sys
import time

import torch

from wmblocks import keys, presets
from wmblocks.losses import (
    CONT_TARGET_2024,
    V3_2023_SCALES,
    V3_2024_SCALES,
    behavior_loss_v3,
    replay_value_loss_v3,
    total_loss,
    world_model_loss_v3,
)
from wmblocks.nn import ReturnNormalizer
from wmblocks.nn.critics import SlowCritic
from wmblocks.optim import V3_2023_OPTIM, adam, laprop_agc
from wmblocks.train.acting import LatentPolicy
from wmblocks.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from wmblocks.train.config import load_config, option, parse_config, save_config
from wmblocks.train.envs import Env
from wmblocks.train.logging import MetricsLog, Progress, plot_returns
from wmblocks.train.replay import SequenceReplay


# --- 1. Configuration ----------------------------------------------------------------
@dataclasses.dataclass
class Config:
    env: str = option("CartPole-v1", "gymnasium id: 1-D Box observations, Discrete or Box actions")
    seed: int = option(0, "random seed (environment, networks, sampling)")
    device: str = option("auto", "cpu, cuda, or auto (cuda when available)")
    steps: int = option(30_000, "total environment steps")
    size: str = option("1m", "size preset: 1m 12m 25m 50m 100m 200m (2024), S M L XL (2023), debug")
    revision: int = option(2024, "which paper revision's defaults", choices=[2023, 2024])
    batch: int = option(16, "replay sequences per update (B)")
    length: int = option(32, "steps per replay sequence (T); reference: 64")
    train_ratio: float = option(
        96.0,
        "replayed steps trained on per environment step; updates per environment "
        "step = train_ratio / (batch * length)",
    )
    horizon: int = option(15, "imagination horizon (H)")
    lr: float = option(
        4e-5,
        "learning rate of the 2024 optimiser (LaProp + AGC); the 2023 "
        "revision uses its per-module Adam defaults",
    )
    prefill: int = option(1000, "environment steps collected before the first update")
    capacity: int = option(1_000_000, "replay capacity in steps")
    logdir: str = option(
        "runs/dreamer_v3", "run directory (config, metrics, plot, checkpoint, replay)"
    )
    eval_every: int = option(2500, "environment steps between evaluations (0: only at the end)")
    eval_episodes: int = option(5, "episodes per evaluation, acting with the policy's mode")
    log_every: int = option(1000, "environment steps between metric lines")
    save_every: int = option(10_000, "environment steps between checkpoints (and at the end)")
    resume: bool = option(False, "continue the run in --logdir from its checkpoint")


# --- 2. The blocks -------------------------------------------------------------------
def build(cfg: Config, env: Env, device: torch.device):
    wm = presets.world_model_v3(env.obs_shapes, env.action_dim, cfg.size, cfg.revision)
    feat = wm.rssm.feat_dim
    actor = presets.actor_v3(env.action_space, feat, cfg.size, cfg.revision)
    critic = presets.critic_v3(feat, cfg.size, cfg.revision)
    wm, actor, critic = wm.to(device), actor.to(device), critic.to(device)
    slow = SlowCritic(critic, rate=0.02)
    normalizer = ReturnNormalizer().to(device)
    if cfg.revision == 2024:  # one optimiser for everything
        params = [*wm.parameters(), *actor.parameters(), *critic.parameters()]
        opts = {"all": laprop_agc(params, lr=cfg.lr)}
    else:
        opts = {
            name: adam(module.parameters(), V3_2023_OPTIM[name])
            for name, module in (("model", wm), ("actor", actor), ("critic", critic))
        }
    return wm, actor, critic, slow, normalizer, opts


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(Config, argv, __doc__)
    run = cfg.logdir
    ckpt_path = os.path.join(run, "checkpoint.pt")
    if cfg.resume:
        ckpt = load_checkpoint(ckpt_path)
        saved = load_config(Config, os.path.join(run, "config.json"))
        cfg = dataclasses.replace(saved, steps=cfg.steps, device=cfg.device, resume=True)
    elif os.path.exists(ckpt_path):
        raise ValueError(
            f"{run} already holds a run; pass --resume to continue it, or choose another --logdir"
        )
    os.makedirs(run, exist_ok=True)
    save_config(cfg, os.path.join(run, "config.json"))
    torch.manual_seed(cfg.seed)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    env, eval_env = Env(cfg.env, cfg.seed), Env(cfg.env, cfg.seed + 10_000)
    wm, actor, critic, slow, normalizer, opts = build(cfg, env, device)
    modules = {"wm": wm, "actor": actor, "critic": critic, "slow": slow, "normalizer": normalizer}
    replay = SequenceReplay(cfg.capacity, os.path.join(run, "replay"), cfg.batch, cfg.length)
    policy = LatentPolicy(wm, actor, env.action_dim, env.discrete)
    count = {"steps": 0, "updates": 0, "episodes": 0, "credit": 0.0}
    if cfg.resume:
        for name, module in modules.items():
            module.load_state_dict(ckpt["modules"][name])
        for name, opt in opts.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        count = ckpt["count"]
        replay.load(os.path.join(run, ckpt["replay_dir"]), ckpt["replay_added"])
        set_rng_state(ckpt["rng"])
    scales = V3_2024_SCALES if cfg.revision == 2024 else V3_2023_SCALES
    cont_target, gamma = (CONT_TARGET_2024, 1.0) if cfg.revision == 2024 else (1.0, 1 - 1 / 333)

    # --- 3. One training update --------------------------------------------------------
    def train_step() -> dict[str, torch.Tensor]:
        batch = replay.sample().to(device)
        td = world_model_loss_v3(wm, batch, cont_target=cont_target)
        wm_loss, wm_metrics = total_loss(td, scales)
        td = td.apply(lambda x: x.detach())
        beh = behavior_loss_v3(
            wm, actor, critic, slow, normalizer, td, horizon=cfg.horizon, gamma=gamma
        )
        ac_loss, ac_metrics = total_loss(beh, {"actor": 1.0, "critic": 1.0})
        loss = wm_loss + ac_loss
        metrics = {
            **{f"wm/{k}": v for k, v in wm_metrics.items()},
            **{f"ac/{k}": v for k, v in ac_metrics.items()},
        }
        if cfg.revision == 2024:  # replay value loss, bootstrapped from imagined returns
            imagined = beh["return"][:, 0].view(cfg.batch, cfg.length)
            repval = replay_value_loss_v3(critic, slow, td, imagined)
            loss = loss + 0.3 * repval["loss_repval"].mean()
            metrics["ac/repval"] = repval["loss_repval"].mean().detach()
        loss.backward()
        for opt in opts.values():
            metrics["grad_norm"] = opt.step()
        slow.update(critic)
        metrics["ac/return"] = beh["return"].mean()
        metrics["ac/scale"] = normalizer.scale()
        return metrics

    # --- 4. Evaluation: the policy's mode, on a separate environment ---------------------
    def evaluate() -> float:
        greedy = LatentPolicy(wm, actor, env.action_dim, env.discrete)
        returns = []
        for _ in range(cfg.eval_episodes):
            row, total = eval_env.reset(), 0.0
            while not row["is_last"]:
                obs = {keys.OBS: row[keys.OBS][None].to(device)}
                action = greedy(obs, row[keys.IS_FIRST][None].to(device), greedy=True)[0]
                row = eval_env.step(action.cpu())
                total += float(row[keys.REWARD])
            returns.append(total)
        return sum(returns) / len(returns)

    # --- 5. Checkpoints: replay first, then the state that points to it ----------------
    def checkpoint() -> None:
        replay_dir = f"replay_{count['steps']}"
        replay.save(os.path.join(run, replay_dir))
        save_checkpoint(
            ckpt_path,
            {
                "modules": {name: m.state_dict() for name, m in modules.items()},
                "optimizers": {name: o.state_dict() for name, o in opts.items()},
                "count": dict(count),
                "rng": rng_state(),
                "replay_dir": replay_dir,
                "replay_added": replay.added,
                "config": dataclasses.asdict(cfg),
            },
        )
        for old in glob.glob(os.path.join(run, "replay_*")):
            if os.path.basename(old) != replay_dir:
                shutil.rmtree(old, ignore_errors=True)

    # --- 6. The loop: act, store, train at the train ratio, log, evaluate, save ----------
    log = MetricsLog(run)
    progress = Progress(cfg.steps, start=count["steps"])
    metrics: dict[str, torch.Tensor] = {}
    per_update = cfg.train_ratio / (cfg.batch * cfg.length)
    row, episode_return, episode_length = env.reset(), 0.0, 0
    start = time.time()
    while count["steps"] < cfg.steps:
        obs = {keys.OBS: row[keys.OBS][None].to(device)}
        action = policy(obs, row[keys.IS_FIRST][None].to(device))[0].cpu()
        replay.add({**_stored(row), keys.ACTION: action})
        row = env.step(action)
        count["steps"] += 1
        episode_return += float(row[keys.REWARD])
        episode_length += 1
        if row["is_last"]:  # store the final observation (no action is taken there)
            replay.add({**_stored(row), keys.ACTION: torch.zeros(env.action_dim)})
            count["episodes"] += 1
            log.write(
                count["steps"], {"episode/return": episode_return, "episode/length": episode_length}
            )
            progress.episode(episode_return)
            row, episode_return, episode_length = env.reset(), 0.0, 0
        if count["steps"] >= cfg.prefill and replay.can_sample():
            count["credit"] += per_update
            while count["credit"] >= 1.0:
                metrics = train_step()
                count["updates"] += 1
                count["credit"] -= 1.0
        steps = count["steps"]
        if steps % cfg.log_every == 0 and metrics:
            elapsed = time.time() - start
            log.write(
                steps,
                {
                    **{k: float(v) for k, v in metrics.items()},
                    "updates": count["updates"],
                    "time/elapsed_s": elapsed,
                },
            )
        if (cfg.eval_every and steps % cfg.eval_every == 0) or steps == cfg.steps:
            progress.eval = evaluate()
            log.write(steps, {"eval/return": progress.eval})
        if steps % cfg.save_every == 0 or steps == cfg.steps:
            checkpoint()
        progress.update(steps, count["updates"])
    progress.update(count["steps"], count["updates"], force=True)
    log.close()
    plot_returns(
        os.path.join(run, "metrics.jsonl"),
        os.path.join(run, "returns.png"),
        f"DreamerV3 ({cfg.revision}, {cfg.size}) on {cfg.env}",
    )
    env.close()
    eval_env.close()


def _stored(row: dict) -> dict:
    """The keys a replay row keeps (``is_last`` only drives the loop)."""
    return {k: v for k, v in row.items() if k != "is_last"}


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"dreamer_v3: error: {e}", file=sys.stderr)
        sys.exit(2)
