"""Evaluate a trained run's checkpoint over many episodes: the policy's mode, no
exploration noise, on a fresh environment instance seeded apart from training and
from the run's own evaluations (which use seed + 10,000).

    python benchmarks/evaluate.py runs/v1i/dreamer_v1-Pendulum-v1-seed0 --episodes 100
    python benchmarks/evaluate.py runs/x/dreamer_v3-dmc-vision-seed0 --video runs/x/videos

The recipe is read from the run directory's name (``dreamer_v1-...``, as
benchmarks/learn.py names runs) unless --recipe gives it. Prints the mean, standard
deviation, minimum and maximum return and the sorted returns; --out also writes
them as JSON. The run directory is only read.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wmblocks.errors import UserError  # noqa: E402
from wmblocks.train.checkpoint import load_checkpoint  # noqa: E402
from wmblocks.train.config import load_config  # noqa: E402
from wmblocks.train.envs import Envs  # noqa: E402
from wmblocks.train.loop import evaluate, load_states, pick_device  # noqa: E402
from wmblocks.train.replay import SequenceReplay  # noqa: E402
from wmblocks.train.video import open_loop, write_video  # noqa: E402

RECIPES = ("dreamer_v1", "dreamer_v2", "dreamer_v3")


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "recipes", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def evaluate_run(
    run_dir: str, recipe: str, episodes: int, seed: int, device: str, video: str | None = None
) -> dict:
    """Load ``run_dir``'s config and checkpoint into ``recipe``'s agent and return the
    per-episode evaluation returns with their summary statistics. With ``video`` (a
    directory) and a pixel environment, also write ``eval.mp4`` (the first episode)
    and ``openloop.mp4`` (the world model's open-loop prediction on a batch of the
    run's saved replay)."""
    module = load_recipe(recipe)
    cfg = load_config(module.Config, os.path.join(run_dir, "config.json"))
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    ckpt = load_checkpoint(ckpt_path)
    dev = pick_device(device)
    torch.manual_seed(seed)  # the posterior latents are sampled while acting
    env = Envs(cfg.env, seed, 1, cfg.action_repeat, parallel=False, episode_steps=cfg.episode_steps)
    agent = module.build(cfg, env, dev)
    load_states(agent.modules, ckpt["modules"], ckpt_path)
    record = video is not None and bool(env.image_keys)
    frames: list | None = [] if record else None
    returns = [
        evaluate(agent, env, 1, dev, cfg.eval_mode, frames if i == 0 else None)
        for i in range(episodes)
    ]
    env.close()
    if record:
        write_video(os.path.join(video, "eval.mp4"), frames)
        with tempfile.TemporaryDirectory() as scratch:
            length = cfg.length + agent.replay_context  # as the run sampled it
            replay = SequenceReplay(cfg.capacity, scratch, cfg.batch, length, envs=cfg.envs)
            replay.load(os.path.join(run_dir, ckpt["replay_dir"]), ckpt["replay_added"])
            batch = replay.sample().to(dev)
            frames = open_loop(agent.wm, batch, env.image_keys[0])
            write_video(os.path.join(video, "openloop.mp4"), frames)
    return {
        "run": run_dir,
        "recipe": recipe,
        "env": cfg.env,
        "env_steps": ckpt["count"]["steps"],
        "episodes": episodes,
        "seed": seed,
        "mean": statistics.mean(returns),
        "sd": statistics.stdev(returns) if episodes > 1 else 0.0,
        "min": min(returns),
        "max": max(returns),
        "returns": returns,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument(
        "--recipe",
        choices=RECIPES,
        help="default: from the run directory's name (pass it when wrong)",
    )
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--seed", type=int, default=123, help="evaluation environment seed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="also write the result as JSON here")
    p.add_argument(
        "--video",
        metavar="DIR",
        help="pixel environments: write eval.mp4 and openloop.mp4 (world-model prediction) here",
    )
    a = p.parse_args(argv)
    recipe = a.recipe or next(
        (r for r in RECIPES if os.path.basename(os.path.normpath(a.run_dir)).startswith(r)), None
    )
    if recipe is None:
        p.error(f"cannot tell the recipe from {a.run_dir!r}; pass --recipe")
    if a.episodes < 1:
        p.error("--episodes must be at least 1")
    try:
        res = evaluate_run(a.run_dir, recipe, a.episodes, a.seed, a.device, a.video)
    except UserError as e:
        p.exit(2, f"evaluate.py: error: {e}\n")
    print(
        f"{res['run']} ({res['env_steps']} env steps): mean {res['mean']:.1f} "
        f"sd {res['sd']:.1f} min {res['min']:.1f} max {res['max']:.1f} "
        f"over {res['episodes']} episodes"
    )
    print("sorted returns:", sorted(round(r, 1) for r in res["returns"]))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
