"""Evaluate a trained run's checkpoint over many episodes: the policy's mode, no
exploration noise, on a fresh environment instance seeded apart from training and
from the run's own evaluations (which use seed + 10,000).

    python benchmarks/evaluate.py runs/v1i/dreamer_v1-Pendulum-v1-seed0 --episodes 100
    python benchmarks/evaluate.py runs/x/dreamer_v3-dmc-vision-seed0 --video runs/x/videos

The agent is loaded with :func:`wmblocks.load_policy` (the world model's encoder and
RSSM and the actor; no training loop, replay or optimiser); the recipe is the one the
checkpoint records, else the run directory's name's (``dreamer_v1-...``, as
benchmarks/learn.py names runs), unless --recipe gives it. Prints the mean, standard
deviation, minimum and maximum return and the sorted returns; --out also writes
them as JSON. The run directory is only read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wmblocks.errors import UserError  # noqa: E402
from wmblocks.train.envs import video_frame  # noqa: E402
from wmblocks.train.loop import pick_device  # noqa: E402
from wmblocks.train.policy import load_policy, load_run  # noqa: E402
from wmblocks.train.replay import SequenceReplay  # noqa: E402
from wmblocks.train.video import open_loop, write_video  # noqa: E402

RECIPES = ("dreamer_v1", "dreamer_v2", "dreamer_v3")


def evaluate_run(
    run_dir: str,
    recipe: str | None,
    episodes: int,
    seed: int,
    device: str,
    video: str | None = None,
) -> dict:
    """Load ``run_dir``'s policy (``recipe``: None for the one its checkpoint records)
    and return the per-episode evaluation returns with their summary statistics. The
    policy acts as the run evaluated (its --eval-mode). With ``video`` (a directory)
    and a pixel environment, also write ``eval.mp4`` (the first episode) and
    ``openloop.mp4`` (the world model's open-loop prediction on a batch of the run's
    saved replay)."""
    dev = pick_device(device)
    policy = load_policy(run_dir, dev, recipe)
    cfg = policy.config
    torch.manual_seed(seed)  # the posterior latents are sampled while acting
    env = policy.make_env(seed)
    images = [k for k, s in policy.obs_shapes.items() if len(s) == 3]
    record = video is not None and bool(images)
    frames: list = []
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed if i == 0 else None)  # then continued, unseeded
        policy.reset()
        total, done = 0.0, False
        while not done:
            if record and i == 0:
                frames.append(video_frame(obs[images[0]]))
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
            total += float(reward)
            done = terminated or truncated
        if record and i == 0:
            frames.append(video_frame(obs[images[0]]))  # the final observation
        returns.append(total)
    env.close()
    if record:
        write_video(os.path.join(video, "eval.mp4"), frames)
        run = load_run(run_dir, dev, recipe)  # the whole world model: the decoder too
        agent, ckpt = run.agent, run.checkpoint
        length = cfg.length + agent.replay_context  # as the run sampled it
        replay = SequenceReplay.reopen(  # the run's own files, read (sampled) only
            cfg.capacity,
            os.path.join(run_dir, "replay"),
            cfg.batch,
            length,
            envs=cfg.envs,
            added=ckpt["replay"]["added"],
        )
        batch = replay.sample().to(dev)
        frames = open_loop(agent.wm, batch, images[0])
        write_video(os.path.join(video, "openloop.mp4"), frames)
    return {
        "run": run_dir,
        "recipe": policy.recipe,
        "env": cfg.env,
        "env_steps": policy.steps,
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
        help="default: the one the checkpoint records, else from the run directory's name",
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
    if a.episodes < 1:
        p.error("--episodes must be at least 1")
    try:
        res = evaluate_run(a.run_dir, a.recipe, a.episodes, a.seed, a.device, a.video)
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
