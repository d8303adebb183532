"""Non-finite values: an update with a NaN/inf loss or gradient changes nothing (on the
device, no host sync) and is counted; too many in a row stop the run with the last
checkpoint kept; a NaN/inf from an environment stops with a message naming it, or is
replaced and counted with --sanitize."""

import copy
import dataclasses
import json
import os
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tests.helpers import random_batch, with_context
from tests.recipes.common import AGENTS, TINY, load
from tests.recipes.test_blocks import build
from wmblocks import keys
from wmblocks.errors import UserError
from wmblocks.nn.critics import SlowCritic, ema_update_
from wmblocks.optim import V2_OPTIM, adam, laprop_agc, step_if_finite
from wmblocks.train.checkpoint import load_checkpoint
from wmblocks.train.config import parse_config
from wmblocks.train.envs import Envs
from wmblocks.train.loop import Trainer, run
from wmblocks.train.speed import forbid_host_sync

NAN, INF = float("nan"), float("inf")


# --- the optimisers: a skipped step is as if it never happened -----------------------
OPTIMISERS = {
    "adam": lambda params: adam(params, V2_OPTIM["model"]),  # fused Adam and the V2 decay
    "laprop": lambda params: laprop_agc(params, lr=0.1, warmup=2),
}


def _step(opt, params, grads, **kwargs) -> Tensor:
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    return opt.step(**kwargs)


def _state(opt, params) -> list[Tensor]:
    """Parameters, then every tensor of the optimiser's state (moments, step counts)."""
    out = [p.detach().clone() for p in params]
    for state in opt.state_dict()["state"].values():
        out += [torch.as_tensor(v).clone() for _, v in sorted(state.items())]
    return out


def _assert_same(a: list[Tensor], b: list[Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y), (x, y)


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_a_non_finite_gradient_skips_the_step_as_if_it_never_came(name, bad):
    """Two optimisers on the same parameters: one gets g1, a gradient with ``bad`` in it,
    g2; the other g1, g2. After the bad step nothing has moved (parameters, moments,
    step counts); after g2 both are bit-identical (the step count was rolled back, so
    the bias corrections and the warm-up agree)."""
    g = torch.Generator().manual_seed(0)
    w = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    grads = [[torch.randn(x.shape, generator=g) for x in w] for _ in range(3)]
    a, b = [nn.Parameter(x.clone()) for x in w], [nn.Parameter(x.clone()) for x in w]
    opt_a, opt_b = OPTIMISERS[name](a), OPTIMISERS[name](b)
    _step(opt_a, a, grads[0])
    _step(opt_b, b, grads[0])
    grads[1][1][2] = bad
    norm = _step(opt_a, a, grads[1])
    assert not torch.isfinite(norm)
    assert all(p.grad is None for p in a)
    _assert_same(_state(opt_a, a), _state(opt_b, b))
    _step(opt_a, a, grads[2])
    _step(opt_b, b, grads[2])
    _assert_same(_state(opt_a, a), _state(opt_b, b))
    assert not torch.equal(a[0].detach(), w[0])  # and they did train


@pytest.mark.parametrize("name", sorted(OPTIMISERS))
def test_step_if_finite_skips_every_optimiser_on_a_non_finite_loss(name):
    """Finite gradients but a NaN loss (a NaN added to it): no optimiser steps; a finite
    loss: all do, as their plain ``step()`` would."""
    model, other = nn.Linear(3, 2), nn.Linear(2, 1)
    twin = copy.deepcopy([model, other])
    opts = {"a": OPTIMISERS[name](model.parameters()), "b": OPTIMISERS[name](other.parameters())}
    refs = [OPTIMISERS[name](m.parameters()) for m in twin]
    x = torch.randn(4, 3)
    for offset, skipped_expected in ((0.0, False), (NAN, True), (0.0, False)):
        loss = other(model(x)).square().mean() + offset  # the offset has no gradient
        loss.backward()
        before = _state(opts["a"], list(model.parameters()))
        skipped, norms = step_if_finite(opts, loss)
        assert bool(skipped) is skipped_expected and set(norms) == {"a", "b"}
        assert all(torch.isfinite(n) for n in norms.values())
        if skipped_expected:
            _assert_same(_state(opts["a"], list(model.parameters())), before)
            continue
        twin[1](twin[0](x)).square().mean().backward()
        for ref in refs:
            ref.step()
    for m, t in zip([model, other], twin, strict=True):
        _assert_same([p.detach() for p in m.parameters()], [p.detach() for p in t.parameters()])


@pytest.mark.parametrize("rate", [0.02, 1.0])
def test_a_skipped_update_leaves_the_slow_critic_and_a_good_one_moves_it_as_before(rate):
    critic = nn.Linear(3, 2)
    slow = SlowCritic(critic, rate)
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(1.0)
    before = [p.clone() for p in slow.parameters()]
    slow.update(critic, torch.tensor(True))
    _assert_same([p.detach() for p in slow.parameters()], before)
    expected = copy.deepcopy(slow.critic)
    ema_update_(expected, critic, rate)  # the unmasked update
    slow.update(critic, torch.tensor(False))
    _assert_same(list(slow.critic.parameters()), list(expected.parameters()))


# --- every recipe's update ------------------------------------------------------------
def _agent_state(agent) -> dict[str, Tensor]:
    """Every tensor an update may change: the modules' parameters and buffers (the slow
    critic and the return normaliser among them) and the optimisers' states."""
    out = {}
    for name, module in agent.modules.items():
        for k, v in module.state_dict().items():
            if isinstance(v, Tensor):
                out[f"{name}.{k}"] = v.detach().clone()
    for name, opt in agent.optimizers.items():
        for i, state in opt.state_dict()["state"].items():
            for k, v in state.items():
                out[f"optimizer.{name}.{i}.{k}"] = torch.as_tensor(v).clone()
    return out


@pytest.mark.parametrize("poison", ["reward", "observation"])
@pytest.mark.parametrize(("recipe", "env_id", "args"), AGENTS)
def test_an_update_on_a_non_finite_batch_changes_nothing_and_the_next_trains(
    recipe, env_id, args, poison
):
    agent, env = build(recipe, env_id, *args, "--compile", "off")
    batch = with_context(random_batch(env.obs_shapes, env.action_dim, B=3, T=6), agent)
    for _ in range(2):  # lazy optimiser state; the 2024 warm-up's first step is lr 0
        assert float(agent.update(batch.clone())["train/skipped"]) == 0.0
    bad = batch.clone()
    key = keys.REWARD if poison == "reward" else keys.OBS
    bad[key][1, 3] = NAN  # one step of one sequence
    stored = bad.clone()
    before = _agent_state(agent)
    with forbid_host_sync():  # decided on the device
        metrics = agent.update(bad)
    assert float(metrics["train/skipped"]) == 1.0
    after = _agent_state(agent)
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed
    if agent.replay_context:  # the latents written back to replay stay as they were
        assert torch.equal(bad[keys.DETER], stored[keys.DETER])
        assert torch.equal(bad[keys.STOCH], stored[keys.STOCH])
    metrics = agent.update(batch.clone())
    assert float(metrics["train/skipped"]) == 0.0
    assert all(torch.isfinite(v).all() for v in metrics.values())
    after = _agent_state(agent)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("wm."))


# --- the loop: a run of skipped updates stops it --------------------------------------
def test_the_run_stops_after_max_skipped_in_row_and_keeps_the_last_checkpoint(tmp_path, capsys):
    """Updates 1-40 are good, every later one reports a skip. One update per agent step
    from step 100: the streak starts at step 140; the log read at 160 sees 21 < 30, the
    one at 180 sees 41 and stops the run, before the checkpoint due at 240; the one at
    120 is kept."""
    module = load("dreamer_v1")

    def build_skipping(cfg, env, device):
        agent = module.build(cfg, env, device)
        calls = []

        def update(batch):
            calls.append(1)
            bad = len(calls) > 40
            return {
                "wm/loss": torch.tensor(NAN if bad else 0.0),
                "train/skipped": torch.tensor(float(bad)),
            }

        return dataclasses.replace(agent, update=update)

    run_dir = tmp_path / "run"
    args = [*TINY["dreamer_v1"], "--batch", "4", "--length", "16", "--train-ratio", "64"]
    args += ["--steps", "400", "--action-repeat", "1", "--prefill", "100", "--eval-every", "0"]
    args += ["--eval-episodes", "1", "--log-every", "20", "--save-every", "120"]
    args += ["--max-skipped-in-row", "30", "--logdir", str(run_dir)]
    with pytest.raises(SystemExit) as stop:
        run(module.Config, build_skipping, name="dreamer_v1", argv=args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("dreamer_v1: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(r"the last 41 updates in a row had a non-finite loss or gradient", lines[0])
    assert "at step 180" in lines[0] and str(run_dir / "checkpoint.pt") in lines[0]
    ckpt = load_checkpoint(str(run_dir / "checkpoint.pt"))
    assert ckpt["count"]["steps"] == 120 and ckpt["count"]["skipped_updates"] == 0
    with open(run_dir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    logged = {r["step"]: r["train/skipped_updates"] for r in rows if "train/skipped_updates" in r}
    assert logged[140] == 1 and logged[160] == 21  # the total, read every log_every
    assert max(logged) == 160  # the read at 180 stopped the run instead of logging


# --- environments ----------------------------------------------------------------------
class _BadAt(gym.Env):
    """Three floats in [-1, 1] (0.5 each), two actions, reward 1; at step ``at`` of an
    episode, ``value`` goes into the reward or the observation's elements 1 and 2 (the
    second with the opposite sign)."""

    metadata = {"render_modes": []}

    def __init__(self, at: int = 5, where: str = "reward", value: float = NAN):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.at, self.where, self.value = at, where, value

    def _obs(self):
        obs = np.full(3, 0.5, np.float32)
        if self.where == "observation" and self.t == self.at:
            obs[1], obs[2] = self.value, -self.value
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward = self.value if self.where == "reward" and self.t == self.at else 1.0
        return self._obs(), reward, False, False, {}


_IDS = {
    "wmblocks-test/NanReward-v0": dict(at=5, where="reward", value=NAN),
    "wmblocks-test/InfObservation-v0": dict(at=3, where="observation", value=INF),
    "wmblocks-test/NanOnReset-v0": dict(at=0, where="observation", value=NAN),
}
for _id, _kwargs in _IDS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point=_BadAt, kwargs=_kwargs)


@pytest.mark.parametrize(
    ("env_id", "steps", "message"),
    [
        ("wmblocks-test/NanReward-v0", 5, r"returned nan in 'reward' at its step 5 "),
        ("wmblocks-test/InfObservation-v0", 3, r"returned inf in 'observation' at its step 3 "),
        ("wmblocks-test/NanOnReset-v0", 0, r"returned nan in 'observation' on reset "),
    ],
)
def test_a_non_finite_value_from_an_environment_is_an_error_naming_it(env_id, steps, message):
    env = Envs(env_id, seed=3, n=2, parallel=False)
    try:
        with pytest.raises(UserError) as error:
            env.reset()
            for _ in range(steps):
                env.step(env.random_action())
        text = str(error.value)
        assert re.search(message, text), text
        assert env_id in text and "#0 of 2" in text and "--sanitize" in text
        assert f"(step {steps} of its episode)" in text
    finally:
        env.close()


def test_sanitize_replaces_non_finite_values_and_counts_them():
    env = Envs("wmblocks-test/InfObservation-v0", n=2, parallel=False, sanitize=True)
    try:
        env.reset()
        for _ in range(3):
            row = env.step(env.random_action())
        # +inf -> float32 max, -inf -> float32 min, both clipped to the Box [-1, 1].
        expected = torch.tensor([0.5, 1.0, -1.0]).expand(2, 3)
        assert torch.equal(row[keys.OBS], expected)
        assert env.sanitized == 4  # two values in each of the two environments
        row = env.step(env.random_action())
        assert torch.equal(row[keys.OBS], torch.full((2, 3), 0.5)) and env.sanitized == 4
    finally:
        env.close()
    env = Envs("wmblocks-test/NanReward-v0", n=1, parallel=False, sanitize=True)
    try:
        env.reset()
        rewards = [float(env.step(env.random_action())[keys.REWARD][0]) for _ in range(6)]
        assert rewards == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0] and env.sanitized == 1
    finally:
        env.close()


def _loop_args(run_dir, *extra):
    args = [*TINY["dreamer_v1"], "--batch", "4", "--length", "8", "--train-ratio", "8"]
    args += ["--steps", "120", "--action-repeat", "1", "--prefill", "40", "--eval-every", "0"]
    args += ["--eval-episodes", "1", "--log-every", "60", "--episode-steps", "20"]
    return [*args, "--logdir", str(run_dir), *extra]


def test_the_loop_stops_on_a_nan_reward_before_it_reaches_the_replay(tmp_path):
    module = load("dreamer_v1")
    args = _loop_args(tmp_path / "run", "--env", "wmblocks-test/NanReward-v0")
    trainer = Trainer(module.Config, parse_config(module.Config, args), module.build)
    try:
        with pytest.raises(UserError, match=r"NanReward-v0.*nan in 'reward' at its step 5"):
            trainer.train()
        assert trainer.count["steps"] == 4  # the bad row never came back from env.step
        assert not os.path.exists(tmp_path / "run" / "checkpoint.pt")
    finally:
        trainer.close()


def test_the_loop_with_sanitize_trains_on_and_logs_the_count(tmp_path):
    module = load("dreamer_v1")
    args = _loop_args(tmp_path / "run", "--env", "wmblocks-test/NanReward-v0", "--sanitize")
    trainer = Trainer(module.Config, parse_config(module.Config, args), module.build)
    try:
        trainer.train()
    finally:
        trainer.close()
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    logged = {r["step"]: r["env/sanitized"] for r in rows if "env/sanitized" in r}
    # A NaN reward at step 5 of every 20-step episode: 3 by step 60, 6 by step 120.
    assert logged == {60: 3, 120: 6}
    assert all(r["train/skipped_updates"] == 0 for r in rows if "train/skipped_updates" in r)
