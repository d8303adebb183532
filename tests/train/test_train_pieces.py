import io

import gymnasium as gym
import pytest
import torch

from tests.helpers import random_batch, tiny_world_model
from wmblocks import keys
from wmblocks.errors import UserError
from wmblocks.train.checkpoint import load_checkpoint, save_checkpoint
from wmblocks.train.config import option, parse_config
from wmblocks.train.envs import Envs
from wmblocks.train.logging import MetricsLog, Progress, plot_returns, read_metrics
from wmblocks.train.replay import SequenceReplay


@pytest.mark.parametrize("version", ["v1", "v3-2023", "v3-2024"])
def test_obs_step_repeats_one_iteration_of_observe(version):
    wm = tiny_world_model(version, {"observation": (5,)}, 2)
    td = random_batch({"observation": (5,)}, 2, B=2, T=4)
    td[keys.IS_FIRST][:, 2] = True
    torch.manual_seed(0)
    out = wm.observe(td.clone())
    torch.manual_seed(0)
    embed = wm.encoder({"observation": td["observation"]})
    deter, stoch = wm.rssm.initial(2)
    prev = torch.zeros(2, 2)
    for t in range(4):
        deter, stoch = wm.rssm.obs_step(deter, stoch, prev, embed[:, t], td[keys.IS_FIRST][:, t])
        prev = td[keys.ACTION][:, t]
        torch.testing.assert_close(deter, out[keys.DETER][:, t])
        torch.testing.assert_close(stoch, out[keys.STOCH][:, t])


def _row(i):
    """One step of one environment, as the loop adds it (leading dim: environments)."""
    return {
        keys.OBS: torch.tensor([[float(i)]]),
        keys.ACTION: torch.zeros(1, 1),
        keys.REWARD: torch.tensor([0.0]),
        keys.IS_FIRST: torch.tensor([i % 7 == 0]),
        keys.IS_TERMINAL: torch.tensor([False]),
    }


def test_replay_windows_are_consecutive_and_never_span_the_write_cursor(tmp_path):
    replay = SequenceReplay(capacity=20, directory=str(tmp_path), batch=8, length=4)
    for i in range(33):  # wraps once: slots hold steps 20..32 and 13..19
        replay.add(_row(i))
    for _ in range(20):
        obs = replay.sample()[keys.OBS][..., 0]
        assert obs.shape == (8, 4)
        assert torch.equal(obs.diff(dim=1), torch.ones(8, 3)), obs
    other = SequenceReplay.reopen(20, str(tmp_path), 8, 4, envs=1, added=replay.added)
    assert len(other) == len(replay) == 20 and other.added == 33
    for _ in range(20):  # the reopened buffer knows where its cursor is
        obs = other.sample()[keys.OBS][..., 0]
        assert torch.equal(obs.diff(dim=1), torch.ones(8, 3)), obs


def test_checkpoints_are_atomic_and_errors_are_actionable(tmp_path):
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, {"a": torch.ones(2), "count": {"steps": 0}})
    with open(path + ".tmp", "wb") as f:  # a crash mid-write leaves only a temp file
        f.write(b"half")
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    with open(path, "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(path)
    with pytest.raises(UserError, match="--resume"):
        load_checkpoint(str(tmp_path / "missing.pt"))


def test_env_adapter_rows_and_errors():
    env = Envs("CartPole-v1", seed=0)
    row = env.reset()
    assert row[keys.IS_FIRST].all() and row[keys.REWARD] == 0 and row[keys.OBS].shape == (1, 4)
    row = env.step(env.random_action())
    assert not row[keys.IS_FIRST].any() and row[keys.REWARD] == 1.0 and env.frames == 1
    pend = Envs("Pendulum-v1")
    pend.reset()
    assert pend.step(torch.ones(1, 1))[keys.OBS].shape == (1, 3) and not pend.discrete
    with pytest.raises(UserError, match="Nope-v0"):
        Envs("Nope-v0")
    with pytest.raises(UserError, match="observation space"):
        Envs("FrozenLake-v1")
    gym.register("wmblocks-test/MultiDiscrete-v0", entry_point=_MultiDiscreteEnv)
    with pytest.raises(UserError, match="action space"):
        Envs("wmblocks-test/MultiDiscrete-v0")
    with pytest.raises(UserError, match="--envs"):
        Envs("CartPole-v1", n=0)


class _MultiDiscreteEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.MultiDiscrete([2, 2])


def test_resumed_metrics_set_aside_rows_after_the_checkpoint(tmp_path):
    log = MetricsLog(str(tmp_path))
    for step in (10, 20, 30, 40):
        log.write(step, {"episode/return": float(step)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 50, "episo')  # torn by the crash
    MetricsLog(str(tmp_path), resume_step=20).write(30, {"episode/return": -1.0})
    rows = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [(r["step"], r["episode/return"]) for r in rows] == [(10, 10), (20, 20), (30, -1)]
    aside = (tmp_path / "metrics.superseded.jsonl").read_text().splitlines()
    assert [line[:12] for line in aside] == ['{"step": 30,', '{"step": 40,', '{"step": 50,']
    MetricsLog(str(tmp_path), resume_step=30)  # nothing after 30: both files unchanged
    assert len(read_metrics(str(tmp_path / "metrics.jsonl"))) == 3
    assert len((tmp_path / "metrics.superseded.jsonl").read_text().splitlines()) == 3


def test_metrics_progress_and_plot(tmp_path):
    log = MetricsLog(str(tmp_path))
    for step in (10, 20):
        log.write(step, {"episode/return": step / 2})
    log.write(20, {"eval/return": 7.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "episo')  # a torn line from a crash
    rows = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [10, 20, 20]
    assert plot_returns(str(tmp_path / "metrics.jsonl"), str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    out = io.StringIO()
    progress = Progress(100, stream=out)
    progress.episode(12.0)
    progress.update(50, 7, force=True)
    line = out.getvalue()
    assert "50/100 env steps" in line and "updates/s" in line and "return last 12.0" in line


def test_config_cli_lists_every_option(capsys):
    import dataclasses

    @dataclasses.dataclass
    class C:
        lr: float = option(1e-3, "learning rate")
        flag: bool = option(False, "a switch")
        kind: int = option(1, "a choice", choices=[1, 2])

    assert parse_config(C, ["--lr", "0.5", "--flag", "--kind", "2"]) == C(0.5, True, 2)
    with pytest.raises(SystemExit):
        parse_config(C, ["--help"])
    text = capsys.readouterr().out
    assert all(s in text for s in ("--lr", "learning rate", "--flag", "--no-flag", "a choice"))
    with pytest.raises(SystemExit):
        parse_config(C, ["--kind", "3"])


def test_action_repeat_sums_rewards_and_stops_at_the_episode_end():
    repeated = Envs("Pendulum-v1", seed=3, action_repeat=3)
    single = Envs("Pendulum-v1", seed=3, action_repeat=1)
    a, b = repeated.reset(), single.reset()
    assert torch.equal(a[keys.OBS], b[keys.OBS])
    frames = 0
    while True:
        action = torch.rand(1, 1) * 2 - 1
        row = repeated.step(action)
        total = 0.0
        for _ in range(repeated.frames):
            ref = single.step(action)
            total += float(ref[keys.REWARD])
        frames += repeated.frames
        assert torch.allclose(row[keys.OBS], ref[keys.OBS])
        assert float(row[keys.REWARD]) == pytest.approx(total, rel=1e-5)
        if row[keys.IS_LAST]:
            break
        assert repeated.frames == 3 and not ref[keys.IS_LAST]
    assert frames == 200 and repeated.frames == 200 % 3 and ref[keys.IS_LAST]  # 66 x 3 + 2
    row = repeated.step(action)  # the next step starts a new episode and takes no frame
    assert row[keys.IS_FIRST] and repeated.frames == 0 and row[keys.REWARD] == 0


def test_run_prints_user_errors_in_one_line_and_lets_bugs_keep_their_traceback(tmp_path, capsys):
    import dataclasses

    from wmblocks.train.loop import LoopConfig, run

    @dataclasses.dataclass
    class Config(LoopConfig):
        pass

    def user_mistake(cfg, env, device):
        raise UserError("size preset 'huge' is unknown; choose one of ['1m']")

    def bug(cfg, env, device):
        raise RuntimeError("shape mismatch in an update")

    argv = ["--logdir", str(tmp_path / "a"), "--steps", "1"]
    with pytest.raises(SystemExit) as exit_info:
        run(Config, user_mistake, name="recipe", argv=argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "recipe: error: size preset 'huge' is unknown; choose one of ['1m']"
    with pytest.raises(RuntimeError, match="shape mismatch"):  # not swallowed into exit 2
        run(Config, bug, name="recipe", argv=["--logdir", str(tmp_path / "b"), "--steps", "1"])
