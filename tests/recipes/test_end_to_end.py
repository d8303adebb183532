"""End-to-end: each recipe in a subprocess (learning itself is a benchmark)."""

import json
import os

import pytest
import torch

from tests.recipes.common import rows, run, tiny

RECIPES = ["dreamer_v1", "dreamer_v2", "dreamer_v3"]
# Each recipe's default environment and the other kind of action space.
OTHER_ENV = {"dreamer_v1": "CartPole-v1", "dreamer_v2": "Pendulum-v1", "dreamer_v3": "Pendulum-v1"}


@pytest.mark.parametrize("recipe", RECIPES)
def test_smoke_run_writes_everything_and_resume_continues(tmp_path, recipe):
    d = str(tmp_path / "run")
    args = [*tiny(recipe), "--eval-every", "300", "--save-every", "300", "--logdir", d]
    run(recipe, *args, "--steps", "300")
    for name in ("config.json", "metrics.jsonl", "returns.png", "checkpoint.pt"):
        assert os.path.exists(os.path.join(d, name)), name
    first = rows(d)
    assert any("eval/return" in r for r in first)
    assert any("wm/reward" in r for r in first)
    ckpt = torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False)
    assert ckpt["count"]["steps"] == 300 and ckpt["count"]["updates"] > 0
    updates, seconds = ckpt["count"]["updates"], ckpt["count"]["seconds"]
    added = ckpt["replay"]["added"]
    assert seconds > 0

    # A crash after the checkpoint leaves rows the resumed run will repeat: set aside.
    with open(os.path.join(d, "metrics.jsonl"), "a") as f:
        f.write('{"step": 400, "episode/return": 12345.0}\n')
    proc = run(recipe, "--resume", "--steps", "500", "--logdir", d)
    assert all(r.get("episode/return") != 12345.0 for r in rows(d))
    with open(os.path.join(d, "metrics.superseded.jsonl")) as f:
        assert "12345.0" in f.read()
    ckpt = torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False)
    assert ckpt["count"]["steps"] == 500
    # The replay lives once, in replay/: checkpoints record its write position only.
    assert [n for n in os.listdir(d) if n.startswith("replay")] == ["replay"]
    assert os.path.getsize(os.path.join(d, "checkpoint.pt")) < 20e6
    # Ratio 64 / (4 * 16): one update per agent step (one replay row each).
    assert ckpt["count"]["updates"] - updates == ckpt["replay"]["added"] - added >= 100
    later = [r for r in rows(d) if "updates" in r and r["step"] > 300]
    assert later and min(r["updates"] for r in later) > updates
    assert "500/500 env steps" in proc.stderr
    # Training time adds up over the two segments.
    assert ckpt["count"]["seconds"] > seconds
    assert all(
        r["time/elapsed_s"] > seconds for r in rows(d) if "eval/return" in r and r["step"] > 300
    )
    # Starting a new run over an existing one is refused; nothing is overwritten.
    before = os.path.getmtime(os.path.join(d, "checkpoint.pt"))
    proc = run(recipe, *tiny(recipe), "--steps", "100", "--logdir", d, check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert os.path.getmtime(os.path.join(d, "checkpoint.pt")) == before


@pytest.mark.parametrize("recipe", RECIPES)
def test_other_action_space(tmp_path, recipe):
    d = str(tmp_path / "other")
    env = OTHER_ENV[recipe]
    run(recipe, *tiny(recipe), "--env", env, "--steps", "250", "--eval-every", "0", "--logdir", d)
    ckpt = torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False)
    assert ckpt["count"]["episodes"] >= 1 and ckpt["count"]["updates"] > 0
    assert any("eval/return" in r for r in rows(d))


def test_v1_contrastive_objective(tmp_path):
    d = str(tmp_path / "nce")
    run("dreamer_v1", *tiny("dreamer_v1"), "--objective", "nce", "--steps", "200", "--logdir", d)
    logged = [r for r in rows(d) if "wm/state" in r]
    assert logged and all("wm/obs" not in r for r in logged)
    ckpt = torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False)
    assert "state_model" in ckpt["modules"]


def test_resuming_another_recipes_run_is_refused_clearly(tmp_path):
    d = str(tmp_path / "v2run")
    run("dreamer_v2", *tiny("dreamer_v2"), "--steps", "150", "--eval-every", "0", "--logdir", d)
    proc = run("dreamer_v1", "--resume", "--logdir", d, check=False)
    assert proc.returncode == 2 and "does not match this recipe" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("recipe", "args", "message"),
    [
        ("dreamer_v3", ["--env", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
        ("dreamer_v1", ["--env", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
        ("dreamer_v2", ["--env", "FrozenLake-v1"], "observation space"),
        ("dreamer_v3", ["--size", "13m"], "unknown size preset '13m'"),
    ],
)
def test_bad_input_gets_a_clear_message(tmp_path, recipe, args, message):
    proc = run(recipe, *args, "--logdir", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("recipe", "own"),
    [
        ("dreamer_v1", ["--objective", "--free-nats", "--noise", "--model-lr"]),
        ("dreamer_v2", ["--kl-balance", "--kl-free", "--rho", "--eta", "--slow-every"]),
        ("dreamer_v3", ["--size", "--revision", "--lr"]),
    ],
)
def test_help_lists_every_option(recipe, own):
    out = run(recipe, "--help").stdout
    shared = ["--env", "--seed", "--device", "--steps", "--batch", "--length", "--train-ratio"]
    shared += ["--prefill", "--logdir", "--eval-every", "--save-every", "--resume"]
    for opt in (*shared, *own):
        assert opt in out, opt
    assert "replayed steps trained on per agent step" in out
    # the docstring's example commands keep their own lines
    assert f"\n    python recipes/{recipe}.py " in out


def test_resume_keeps_the_saved_options_and_refuses_size_changes(tmp_path):
    d = str(tmp_path / "keep")
    args = [*tiny("dreamer_v3"), "--eval-every", "0", "--save-every", "150", "--logdir", d]
    run("dreamer_v3", *args, "--steps", "150")
    # No --steps: the run's own 150, not the default 30,000 (nothing left to do).
    proc = run("dreamer_v3", "--resume", "--logdir", d)
    assert "150/150 env steps" in proc.stderr
    saved = json.load(open(os.path.join(d, "config.json")))
    assert saved["steps"] == 150 and saved["batch"] == 4 and saved["size"] == "debug"
    before = os.path.getmtime(os.path.join(d, "checkpoint.pt"))
    for flag, value in (("--size", "1m"), ("--envs", "2")):
        proc = run("dreamer_v3", "--resume", "--logdir", d, flag, value, check=False)
        assert proc.returncode == 2 and f"cannot change on --resume: {flag}" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert os.path.getmtime(os.path.join(d, "checkpoint.pt")) == before
    # Given options are taken: --steps extends, --batch changes (no size involved).
    run("dreamer_v3", "--resume", "--logdir", d, "--steps", "200", "--batch", "3")
    saved = json.load(open(os.path.join(d, "config.json")))
    assert saved["steps"] == 200 and saved["batch"] == 3 and saved["length"] == 16


def test_given_options_are_only_the_flags_on_the_command_line():
    from tests.recipes.common import load
    from wmblocks.train.config import given_options

    config = load("dreamer_v3").Config
    assert given_options(config, ["--steps", "5", "--no-video", "--size", "1m"]) == {
        "steps",
        "video",
        "size",
    }
    assert given_options(config, []) == set()
