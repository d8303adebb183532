"""End-to-end: the DreamerV3 recipe in a subprocess (learning itself is a benchmark)."""

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "dreamer_v3.py")
TINY = [
    "--size",
    "debug",
    "--batch",
    "4",
    "--length",
    "16",
    "--train-ratio",
    "64",
    "--prefill",
    "100",
    "--eval-episodes",
    "1",
    "--log-every",
    "100",
]


def run(*args, check=True):
    proc = subprocess.run(
        [sys.executable, RECIPE, *args], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_smoke_run_writes_everything_and_resume_continues(tmp_path):
    d = str(tmp_path / "run")
    run(*TINY, "--steps", "300", "--eval-every", "300", "--save-every", "300", "--logdir", d)
    for name in ("config.json", "metrics.jsonl", "returns.png", "checkpoint.pt"):
        assert os.path.exists(os.path.join(d, name)), name
    first = rows(d)
    assert any("episode/return" in r for r in first) and any("eval/return" in r for r in first)
    ckpt = torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False)
    assert ckpt["count"]["steps"] == 300 and ckpt["count"]["updates"] > 0
    updates = ckpt["count"]["updates"]

    proc = run("--resume", "--steps", "500", "--logdir", d)
    ckpt = torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False)
    assert ckpt["count"]["steps"] == 500
    assert ckpt["count"]["updates"] >= updates + 190  # ratio 64 / (4 * 16) = 1 per step
    later = [r for r in rows(d) if "updates" in r and r["step"] > 300]
    assert later and min(r["updates"] for r in later) > updates
    assert "500/500 env steps" in proc.stderr
    # Starting a new run over an existing one is refused; nothing is overwritten.
    before = os.path.getmtime(os.path.join(d, "checkpoint.pt"))
    proc = run(*TINY, "--steps", "100", "--logdir", d, check=False)
    assert proc.returncode == 2 and "--resume" in proc.stderr
    assert os.path.getmtime(os.path.join(d, "checkpoint.pt")) == before


def test_continuous_actions(tmp_path):
    d = str(tmp_path / "pend")
    run(*TINY, "--env", "Pendulum-v1", "--steps", "250", "--eval-every", "0", "--logdir", d)
    ckpt = torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False)
    assert ckpt["count"]["episodes"] == 1 and ckpt["count"]["updates"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
        (["--env", "FrozenLake-v1"], "observation space"),
        (["--size", "13m"], "unknown size preset '13m'"),
    ],
)
def test_bad_input_gets_a_clear_message(tmp_path, args, message):
    proc = run(*args, "--logdir", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_help_lists_every_option():
    out = run("--help").stdout
    for opt in (
        "--env",
        "--seed",
        "--device",
        "--steps",
        "--size",
        "--revision",
        "--batch",
        "--length",
        "--train-ratio",
        "--logdir",
        "--eval-every",
        "--resume",
    ):
        assert opt in out, opt
    assert "replayed steps trained on per environment step" in out
