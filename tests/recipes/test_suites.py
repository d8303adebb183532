"""Every recipe on every benchmark suite from pixels (and dict observations): a short
run in-process with tiny networks, through collection, updates, evaluation and its
videos. Skipped, with the reason, only when a suite's extra is not installed (`make
test` installs them all)."""

import importlib.util
import os

import pytest
import torch

from tests.recipes.common import TINY, load
from wmblocks.train.config import parse_config
from wmblocks.train.logging import read_metrics
from wmblocks.train.loop import Trainer
from wmblocks.train.video import read_video

SUITES = {
    "minatar/breakout": "minatar",
    "dmc-vision/cartpole-balance": "dm_control",
    "dmc-both/reacher-easy": "dm_control",
    "atari100k/pong": "ale_py",
    "crafter/reward": "crafter",
}
# V3 on every suite; V1 and V2 on pixels (MinAtar, Atari) and on a dict of pixels and
# vectors (DMC): the costliest pairs (Crafter's world generation, DMC rendering without
# a GPU) run once, to keep the suite's time in budget.
CASES = [("dreamer_v3", env_id) for env_id in SUITES] + [
    (recipe, env_id)
    for recipe in ("dreamer_v1", "dreamer_v2")
    for env_id in ("minatar/breakout", "atari100k/pong", "dmc-both/reacher-easy")
]


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e '.[all]', or make test)")


def _rendering_works() -> bool:
    try:
        from wmblocks.envs import make

        env = make("dmc-vision/cartpole-balance")
        env.reset(seed=0)
        env.close()
        return True
    except Exception:
        return False


@pytest.mark.parametrize(("recipe", "env_id"), CASES)
def test_recipes_run_the_suites(tmp_path, recipe, env_id):
    _needs(SUITES[env_id])
    if env_id.startswith("dmc") and not _rendering_works():
        pytest.skip("MuJoCo cannot render headless here (install libegl1 libegl-mesa0)")
    module = load(recipe)
    args = [*TINY[recipe], "--env", env_id, "--steps", "80", "--prefill", "30"]
    args += ["--batch", "2", "--length", "8", "--train-ratio", "4", "--eval-every", "0"]
    args += ["--eval-episodes", "1", "--log-every", "40", "--logdir", str(tmp_path / "run")]
    args += ["--episode-steps", "25"]  # short episodes: a random policy plays Pong for long
    args += ["--capacity", "2000"]  # the memory-mapped replay allocates its whole file
    cfg = parse_config(module.Config, args, suites=module.SUITES)
    trainer = Trainer(module.Config, cfg, module.build)
    try:
        trainer.train()
    finally:
        trainer.close()
    rows = read_metrics(str(tmp_path / "run" / "metrics.jsonl"))
    assert trainer.count["steps"] >= 80 and trainer.count["updates"] > 0
    assert any("wm/loss" in r or any(k.startswith("wm/") for k in r) for r in rows)
    assert os.path.exists(tmp_path / "run" / "checkpoint.pt")
    batch = trainer.replay.sample()
    image = batch["image"]
    assert image.dtype == torch.uint8 and image.shape[-2:] == (64, 64)
    if env_id == "dmc-both/reacher-easy":
        assert batch["observation"].dtype == torch.float32
    videos = tmp_path / "run" / "videos"
    steps = trainer.count["steps"]
    episode = read_video(str(videos / f"eval_{steps}.mp4"))
    assert episode.shape[1:] == (64, 64, 3) and len(episode) > 1
    openloop = read_video(str(videos / f"openloop_{steps}.mp4"))
    length = 8 + trainer.agent.replay_context  # V3-2024 samples the context step too
    assert openloop.shape == (length, 2 * 64, 3 * 64, 3)  # batch 2


def test_parallel_environments_and_evaluate_video(tmp_path):
    """--envs 2 (subprocesses) through the loop: per-environment episodes; then
    benchmarks/evaluate.py --video on the run."""
    _needs("minatar")
    module = load("dreamer_v3")
    run_dir = tmp_path / "run"
    args = [*TINY["dreamer_v3"], "--env", "minatar/breakout", "--envs", "2", "--steps", "120"]
    args += ["--prefill", "40", "--batch", "2", "--length", "8", "--train-ratio", "4"]
    args += ["--eval-every", "0", "--eval-episodes", "1", "--episode-steps", "20"]
    args += ["--capacity", "2000", "--logdir", str(run_dir), "--no-video"]
    trainer = Trainer(module.Config, parse_config(module.Config, args), module.build)
    try:
        trainer.train()
    finally:
        trainer.close()
    assert trainer.count["steps"] == 120  # frames of both environments
    lengths = [
        r["episode/length"]
        for r in read_metrics(str(run_dir / "metrics.jsonl"))
        if "episode/length" in r
    ]
    assert len(lengths) >= 4 and max(lengths) <= 20  # Breakout ends early, or at the cap
    assert not (run_dir / "videos").exists()  # --no-video
    from benchmarks.evaluate import evaluate_run

    res = evaluate_run(str(run_dir), "dreamer_v3", 2, 0, "cpu", video=str(tmp_path / "v"))
    assert len(res["returns"]) == 2
    assert read_video(str(tmp_path / "v" / "eval.mp4")).shape[1:] == (64, 64, 3)
    assert read_video(str(tmp_path / "v" / "openloop.mp4")).shape[1:] == (2 * 64, 3 * 64, 3)


def test_suite_presets_set_defaults_and_explicit_flags_win():
    v3, v1 = load("dreamer_v3"), load("dreamer_v1")
    cfg = parse_config(v3.Config, ["--suite", "atari100k"], suites=v3.SUITES)
    assert (cfg.size, cfg.train_ratio, cfg.batch, cfg.length, cfg.steps, cfg.lr) == (
        "200m",
        256.0,
        16,
        64,
        400_000,
        4e-5,
    )
    cfg = parse_config(v3.Config, ["--suite", "dmc-proprio", "--size", "debug"], suites=v3.SUITES)
    assert cfg.size == "debug" and cfg.train_ratio == 1024.0 and cfg.envs == 16
    assert cfg.action_repeat == 1  # the 2024 config: its train ratios assume repeat 1
    from wmblocks.errors import UserError

    with pytest.raises(UserError, match="no --suite 'atari100k' preset; it has: dmc-proprio"):
        parse_config(v1.Config, ["--suite", "atari100k"], suites=v1.SUITES)
