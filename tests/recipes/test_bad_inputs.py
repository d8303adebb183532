"""Every bad input of docs/reliability.md's table (issue 16): one clear line on stderr,
exit status 2, and nothing already written lost. In-process (``loop.run`` with an
argv, as ``python recipes/<recipe>.py`` calls it) so the table stays cheap to test."""

import json
import os
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch

from tests.recipes.common import load, tiny
from wmblocks.train.loop import run as loop_run

RUN_ARGS = [*tiny("dreamer_v3"), "--eval-every", "0", "--steps", "150", "--save-every", "150"]


def cli(capsys, recipe: str, *argv: str) -> str:
    """Run ``recipe`` with ``argv``; assert exit 2, one line, no traceback; return it."""
    module = load(recipe)
    with pytest.raises(SystemExit) as exit_info:
        loop_run(module.Config, module.build, name=recipe, argv=list(argv),
                 suites=getattr(module, "SUITES", None))  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny V3 run, copied fresh for each test that damages it."""
    d = str(tmp_path_factory.mktemp("bad") / "run")
    module = load("dreamer_v3")
    loop_run(module.Config, module.build, name="dreamer_v3", argv=[*RUN_ARGS, "--logdir", d])
    return d


@pytest.fixture
def run_dir(trained, tmp_path):
    d = str(tmp_path / "run")
    shutil.copytree(trained, d)
    return d


def _unchanged(run_dir: str):
    """The files of ``run_dir`` and their bytes, to check nothing was lost."""
    out = {}
    for root, _, files in os.walk(run_dir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, run_dir)] = f.read()
    return out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--stpes", "10"],
            "unrecognized arguments: --stpes 10 (did you mean: --stpes -> --steps?)",
        ),
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--steps", "-5"], "--steps must be at least 1, got -5"),
        (["--batch", "0"], "--batch must be at least 1, got 0"),
        (["--length", "0"], "--length must be at least 1, got 0"),
        (["--horizon", "0"], "--horizon must be at least 1, got 0"),
        (["--train-ratio", "0"], "--train-ratio must be greater than 0, got 0.0"),
        (["--train-ratio", "-1"], "--train-ratio must be greater than 0, got -1.0"),
        (["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
        (["--length", "64", "--capacity", "40"], "--capacity 40 holds 40 steps per environment"),
        (["--env", "NoSuchEnv-v0"], "NoSuchEnv-v0"),
        (["--env", "nosuite/walker-walk"], "nosuite"),
        (["--env", "dmc/walker-flyy"], "walker-flyy"),
        (["--size", "13m"], "unknown size preset '13m'"),
        (["--suite", "mujoco"], "no --suite 'mujoco' preset; it has: atari100k"),
        (["--resume"], "no checkpoint at"),
    ],
)
def test_bad_options_and_environments(capsys, tmp_path, argv, message):
    line = cli(capsys, "dreamer_v3", *tiny("dreamer_v3"), "--logdir", str(tmp_path / "x"), *argv)
    assert message in line, line


def test_a_read_only_logdir(capsys):
    assert "cannot write to --logdir /sys/wmblocks" in cli(
        capsys, "dreamer_v3", "--logdir", "/sys/wmblocks/run"
    )


def test_resume_with_a_run_of_another_recipe(capsys, run_dir):
    before = _unchanged(run_dir)
    line = cli(capsys, "dreamer_v1", "--resume", "--logdir", run_dir)
    assert "trained by dreamer_v3, not dreamer_v1" in line and "does not match" in line
    assert _unchanged(run_dir) == before


def test_resume_with_a_truncated_checkpoint(capsys, run_dir):
    path = os.path.join(run_dir, "checkpoint.pt")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    line = cli(capsys, "dreamer_v3", "--resume", "--logdir", run_dir)
    assert "corrupt or unreadable" in line


def test_resume_with_a_corrupt_replay_file(capsys, run_dir):
    files = [f for f in os.listdir(os.path.join(run_dir, "replay")) if f.endswith(".memmap")]
    path = os.path.join(run_dir, "replay", sorted(files)[0])
    with open(path, "r+b") as f:
        f.truncate(10)
    before = _unchanged(run_dir)
    line = cli(capsys, "dreamer_v3", "--resume", "--logdir", run_dir, "--steps", "200")
    assert "replay" in line and ("corrupt" in line or "truncated" in line), line
    assert _unchanged(run_dir) == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text[: len(text) // 2], "cannot read the run's configuration"),
        (lambda text: text.replace('"batch": 4', '"batch": "four"'), "--batch must be int"),
        (lambda text: text.replace('"batch": 4', '"batch": -4'), "--batch must be at least 1"),
        (lambda text: "[1, 2]", "is not a JSON object"),
    ],
)
def test_resume_with_a_hand_edited_config(capsys, run_dir, edit, message):
    path = os.path.join(run_dir, "config.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(edit(text))
    before = _unchanged(run_dir)
    line = cli(capsys, "dreamer_v3", "--resume", "--logdir", run_dir)
    assert message in line, line
    assert _unchanged(run_dir) == before


class _Changing(gym.Env):
    """A 1-D Box env; its observation grows from 3 to 4 values at step ``grow_at``,
    and its action space has ``actions`` dimensions."""

    def __init__(self, grow_at: int = 10**9, actions: int = 1):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (actions,), np.float32)
        self.grow_at, self.t = grow_at, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.zeros(4 if self.t >= self.grow_at else 3, np.float32)
        return obs, 0.0, False, self.t >= 50, {}


def test_an_observation_shape_that_changes_mid_episode(capsys, tmp_path):
    gym.register("WmblocksGrowing-v0", entry_point=lambda **kw: _Changing(grow_at=7))
    line = cli(capsys, "dreamer_v3", *tiny("dreamer_v3"), "--env", "WmblocksGrowing-v0",
               "--logdir", str(tmp_path / "g"), "--steps", "100")  # fmt: skip
    assert "WmblocksGrowing-v0" in line and "shape" in line, line


def test_an_action_space_that_changes_between_a_run_and_its_resume(capsys, tmp_path):
    d = str(tmp_path / "a")
    gym.register("WmblocksActions-v0", entry_point=lambda **kw: _Changing(actions=1))
    module = load("dreamer_v3")
    args = [*RUN_ARGS, "--env", "WmblocksActions-v0", "--steps", "120", "--logdir", d]
    loop_run(module.Config, module.build, name="dreamer_v3", argv=args)
    gym.registry.pop("WmblocksActions-v0")
    gym.register("WmblocksActions-v0", entry_point=lambda **kw: _Changing(actions=2))
    before = _unchanged(d)
    line = cli(capsys, "dreamer_v3", "--resume", "--logdir", d, "--steps", "200")
    assert "no longer has the spaces" in line and "'action_dim': 1" in line, line
    assert _unchanged(d) == before


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    capsys, run_dir, monkeypatch
):
    path = os.path.join(run_dir, "checkpoint.pt")
    good = torch.load(path, weights_only=False)["count"]["steps"]

    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    line = cli(capsys, "dreamer_v3", "--resume", "--logdir", run_dir, "--steps", "200")
    monkeypatch.undo()
    assert "the disk is full" in line and "previous checkpoint is unchanged" in line
    assert torch.load(path, weights_only=False)["count"]["steps"] == good
    assert not os.path.exists(path + ".tmp")
    saved = json.load(open(os.path.join(run_dir, "config.json")))
    assert saved["steps"] == 200  # the resumed options were written before the failure
