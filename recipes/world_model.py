"""World models, and offline Dreamer, trained from recorded data with no environment.

    python recipes/world_model.py --data runs/dreamer_v3                 # a run's replay
    python recipes/world_model.py --data episodes/ --recipe dreamer_v1   # .npz files
    python recipes/world_model.py --data minari:cartpole/random-v0 --behavior --env CartPole-v1
    python recipes/world_model.py --data runs/dreamer_v3 -- --size 12m --batch 32

The agent is the one a recipe builds (``--recipe``: dreamer_v1, dreamer_v2 or
dreamer_v3; its own options follow ``--``, as that recipe takes them: size, learning
rates, batch, length, seed, device, ...). By default only its world model trains, on
the recipe's own world-model objective; ``--behavior`` trains the recipe's whole update
(world model, then actor and critic in imagination from its posteriors: offline
Dreamer) and, with ``--env``, evaluates the policy there.

The data (``--data``, see wmblocks.train.datasets): a run directory (its replay is read
where it lies, never written), a directory of ``.npz`` files (the DreamerV3 reference's
layout; ``--npz-actions previous`` for V1/V2 episode files), or ``minari:DATASET_ID``.
The last ``--val-fraction`` of every recorded stream is held out: every
``--eval-every`` updates, the world model's open-loop errors on it, by imagination
horizon (per observation key, reward, continue, KL; wmblocks.train.wm_eval), go to
``openloop.jsonl`` and ``openloop.png``, their means to ``metrics.jsonl``; pixel data
also gets the open-loop video. ``checkpoint.pt`` and ``config.json`` are the recipe's
(so ``wmblocks.load_policy`` loads an offline-trained agent that names ``--env``);
``--resume`` continues a run.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import torch

from wmblocks.errors import UserError
from wmblocks.train import wm_eval
from wmblocks.train.checkpoint import (
    NAME,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from wmblocks.train.config import given_options, load_config, option, parse_config, save_config
from wmblocks.train.datasets import load_dataset
from wmblocks.train.envs import Envs
from wmblocks.train.logging import MetricsLog
from wmblocks.train.loop import evaluate, load_states, pick_device, recipe_of, spaces_of
from wmblocks.train.offline import initial_context, world_model_update
from wmblocks.train.policy import RECIPES_DIR, import_recipe
from wmblocks.train.speed import tune_host_allocator, use_compile
from wmblocks.train.video import open_loop, write_video


# --- 1. Configuration (the agent's options are its recipe's, after --) ------------------
@dataclasses.dataclass
class Config:
    data: str = option("", "a run directory, a directory of .npz files, or minari:DATASET_ID")
    recipe: str = option(
        "dreamer_v3",
        "the recipe whose agent trains",
        choices=["dreamer_v1", "dreamer_v2", "dreamer_v3"],
    )
    behavior: bool = option(
        False, "also train the actor and critic in imagination: the recipe's whole update"
    )
    env: str = option(
        "", "an environment to evaluate the policy in (with --behavior); the data must fit it"
    )
    updates: int = option(5000, "training updates")
    context: int = option(5, "steps the model observes before each open-loop prediction")
    val_fraction: float = option(
        0.1, "share of the data held out for validation (two blocks of each stream, in time)"
    )
    val_batches: int = option(8, "validation batches per evaluation (the same ones each time)")
    npz_actions: str = option(
        "taken",
        "npz data: the action at row t was taken at o_t (V3 reference) or led to it (V1/V2)",
        choices=["taken", "previous"],
    )
    eval_every: int = option(1000, "updates between evaluations (and at the end)")
    eval_episodes: int = option(5, "policy evaluation episodes in --env (with --behavior)")
    log_every: int = option(100, "updates between metric lines")
    save_every: int = option(1000, "updates between checkpoints (and at the end)")
    logdir: str = option("runs/world_model", "run directory")
    resume: bool = option(False, "continue the run in --logdir (its saved options)")

    minimums = {
        "updates": 1,
        "context": 1,
        "val_batches": 1,
        "eval_every": 1,
        "eval_episodes": 1,
        "log_every": 1,
        "save_every": 1,
    }
    positive = ()


OFFLINE_JSON = "offline.json"


def parse(argv: list[str]) -> tuple[Config, object, object]:
    """This script's options (before ``--``), the recipe module, and the recipe's
    options (after ``--``; on --resume: the saved ones, the flags given overriding)."""
    split = argv.index("--") if "--" in argv else len(argv)
    cfg = parse_config(Config, argv[:split], __doc__)
    run_dir = cfg.logdir
    if cfg.resume:
        saved = load_config(Config, os.path.join(run_dir, OFFLINE_JSON))
        given = given_options(Config, argv[:split]) - {"logdir", "resume"}
        cfg = dataclasses.replace(
            saved, **{k: getattr(cfg, k) for k in given}, logdir=run_dir, resume=True
        )
    elif os.path.exists(os.path.join(run_dir, NAME)):
        raise UserError(f"{run_dir} already holds a run; pass --resume, or choose another --logdir")
    if not cfg.data:
        raise UserError("--data is required: a run directory, .npz directory or minari:ID")
    module = import_recipe(os.path.join(RECIPES_DIR, f"{cfg.recipe}.py"))
    rcfg = parse_config(module.Config, argv[split + 1 :], module.__doc__)
    if cfg.resume:
        saved = load_config(module.Config, os.path.join(run_dir, "config.json"))
        given = given_options(module.Config, argv[split + 1 :])
        rcfg = dataclasses.replace(saved, **{k: getattr(rcfg, k) for k in given})
    # The recipe's environment is the one evaluated in (or none); its logdir is this run.
    rcfg = dataclasses.replace(rcfg, env=cfg.env or "", logdir=run_dir, resume=cfg.resume)
    return cfg, module, rcfg


def main(argv: list[str]) -> None:
    cfg, module, rcfg = parse(argv)
    run_dir = cfg.logdir
    os.makedirs(run_dir, exist_ok=True)
    tune_host_allocator()
    torch.manual_seed(rcfg.seed)
    device = pick_device(rcfg.device)

    # --- 2. Data, spaces and the recipe's agent --------------------------------------
    env = (
        Envs(cfg.env, rcfg.seed + 10_000, 1, rcfg.action_repeat, parallel=False)
        if cfg.env
        else None
    )
    data = load_dataset(cfg.data, cfg.val_fraction, cfg.npz_actions, env)
    spaces = env if env is not None else data.spaces
    print(
        f"world_model: {data.source}: {data.steps} steps, {data.episodes} episodes, "
        f"observations {data.spaces.obs_shapes}, {data.spaces.action_dim} "
        f"{'discrete' if data.spaces.discrete else 'continuous'} actions",
        flush=True,
    )
    agent = module.build(rcfg, spaces, device)
    compile = use_compile(rcfg.compile, device)
    update = (
        agent.update if cfg.behavior else world_model_update(agent, rcfg.precision, device, compile)
    )
    length = rcfg.length + agent.replay_context
    count = {"updates": 0, "seconds": 0.0, "steps": 0}  # steps: environment steps (none)
    ckpt_path = os.path.join(run_dir, NAME)
    if cfg.resume:
        ckpt = load_checkpoint(ckpt_path)
        load_states(agent.modules, ckpt["modules"], ckpt_path)
        load_states(agent.optimizers, ckpt["optimizers"], ckpt_path)
        count = dict(ckpt["count"])
        set_rng_state(ckpt["rng"])
    save_config(cfg, os.path.join(run_dir, OFFLINE_JSON))
    save_config(rcfg, os.path.join(run_dir, "config.json"))
    # The same validation windows at every evaluation (their own generator).
    val_gen = torch.Generator().manual_seed(rcfg.seed + 1)
    val = [data.sample(rcfg.batch, rcfg.length, "val", val_gen) for _ in range(cfg.val_batches)]

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_path,
            {
                "modules": {n: m.state_dict() for n, m in agent.modules.items()},
                "optimizers": {n: o.state_dict() for n, o in agent.optimizers.items()},
                "count": dict(count),
                "rng": rng_state(),
                "replay": {"added": 0},
                "config": dataclasses.asdict(rcfg),
                "recipe": recipe_of(module.Config),
                "spaces": spaces_of(spaces),
                "offline": dataclasses.asdict(cfg),
            },
        )

    def evaluate_model(step: int) -> dict[str, float]:
        """Open-loop errors on the validation windows, the policy in --env, videos."""
        errors = wm_eval.mean_errors(
            [wm_eval.open_loop_errors(agent.wm, b.to(device), cfg.context) for b in val]
        )
        curves_path = os.path.join(run_dir, "openloop.jsonl")
        wm_eval.write_open_loop(curves_path, step, errors)
        wm_eval.plot_open_loop(
            wm_eval.read_open_loop(curves_path, last=6),
            os.path.join(run_dir, "openloop.png"),
            f"{agent.title}, validation windows of {data.source}",
        )
        out = {f"val/{k}/h1": v[0] for k, v in errors.items()}
        out.update({f"val/{k}/mean": sum(v) / len(v) for k, v in errors.items()})
        if data.spaces.image_keys:
            key = data.spaces.image_keys[0]
            frames = open_loop(agent.wm, val[0].to(device), key, cfg.context)
            write_video(os.path.join(run_dir, "videos", f"openloop_{step}.mp4"), frames)
        if cfg.behavior and env is not None:
            out["eval/return"] = evaluate(
                agent,
                env,
                cfg.eval_episodes,
                device,
                rcfg.eval_mode,
                seed=rcfg.seed + 10_000 + step,
            )
        return out

    # --- 3. Training: sample recorded windows, update, evaluate, save ----------------
    log = MetricsLog(run_dir, resume_step=count["updates"] if cfg.resume else None)
    start, seconds0, first = time.time(), count["seconds"], count["updates"]
    if not cfg.resume:  # the untrained model: the baseline of every curve
        log.write(0, evaluate_model(0))
    while count["updates"] < cfg.updates:
        batch = initial_context(data.sample(rcfg.batch, length).to(device), agent)
        metrics = update(batch)
        count["updates"] += 1
        n = count["updates"]
        if n % cfg.log_every == 0:
            elapsed = seconds0 + time.time() - start
            row = {k: float(v) for k, v in metrics.items()}
            log.write(n, {**row, "updates": n, "time/elapsed_s": elapsed})
            rate = (n - first) / max(time.time() - start, 1e-9)
            print(
                f"world_model: {n}/{cfg.updates} updates, {rate:.2f} updates/s, "
                + ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k.startswith("wm/")),
                flush=True,
            )
        if n % cfg.eval_every == 0 or n == cfg.updates:
            figures = evaluate_model(n)
            log.write(n, {**figures, "time/elapsed_s": seconds0 + time.time() - start})
            shown = {k: v for k, v in figures.items() if k.endswith("/h1") or k.startswith("eval/")}
            print(
                f"world_model: eval at {n}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()),
                flush=True,
            )
        if n % cfg.save_every == 0 or n == cfg.updates:
            count["seconds"] = seconds0 + time.time() - start
            checkpoint()
    log.close()
    if env is not None:
        env.close()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as e:
        print(f"world_model: error: {e}", file=sys.stderr)
        sys.exit(2)
