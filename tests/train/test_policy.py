"""wmblocks.load_policy: a trained run acting without the training loop, and its
torch.export file running in a fresh interpreter that cannot import wmblocks."""

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import wmblocks
from tests.recipes.common import TINY, load
from wmblocks.errors import UserError
from wmblocks.train.acting import LatentPolicy
from wmblocks.train.config import parse_config
from wmblocks.train.loop import Trainer

# (recipe, environment): V3 with discrete and continuous actions, V1 continuous, V2
# discrete. Tiny networks, 150 steps (50 updates): learning is not the point.
RUNS = [
    ("dreamer_v3", "CartPole-v1"),
    ("dreamer_v3", "Pendulum-v1"),
    ("dreamer_v1", "Pendulum-v1"),
    ("dreamer_v2", "CartPole-v1"),
]
_TRAINED: dict = {}


def trained(factory, recipe: str, env_id: str):
    """``(run_dir, agent)`` of a tiny in-process run, trained once per session."""
    key = (recipe, env_id)
    if key not in _TRAINED:
        module = load(recipe)
        run_dir = factory.mktemp(f"{recipe}-{env_id}") / f"{recipe}-{env_id}"
        args = [*TINY[recipe], "--env", env_id, "--steps", "150", "--prefill", "100"]
        args += ["--batch", "4", "--length", "16", "--train-ratio", "64", "--eval-every", "0"]
        args += ["--eval-episodes", "1", "--device", "cpu", "--compile", "off"]
        args += ["--logdir", str(run_dir)]
        trainer = Trainer(module.Config, parse_config(module.Config, args), module.build)
        try:
            trainer.train()
        finally:
            trainer.close()
        _TRAINED[key] = (str(run_dir), trainer.agent)
    return _TRAINED[key]


@pytest.fixture(scope="module", params=RUNS, ids=[f"{r}-{e}" for r, e in RUNS])
def run(request, tmp_path_factory):
    recipe, env_id = request.param
    run_dir, agent = trained(tmp_path_factory, recipe, env_id)
    return recipe, env_id, run_dir, agent


def env_action(space, action: torch.Tensor) -> np.ndarray:
    """Agent actions [N, A] in the environment's space, as Envs.step maps them."""
    if isinstance(space, gym.spaces.Discrete):
        return action.argmax(-1).numpy()
    a = action.clamp(-1, 1).numpy()
    return (a + 1) / 2 * (space.high - space.low) + space.low


def random_obs(policy, steps: int, n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(steps, n, *s, generator=g) for k, s in policy.obs_shapes.items()}


def test_acts_for_an_episode_of_a_real_environment_with_valid_actions(run):
    recipe, env_id, run_dir, _ = run
    policy = wmblocks.load_policy(run_dir)
    assert policy.recipe == recipe and policy.steps == 150
    # Only the acting path is kept: encoder, RSSM and actor.
    assert set(dict(policy.net.named_children())) == {"encoder", "rssm", "actor"}
    assert not any(p.requires_grad for p in policy.net.parameters())
    env = gym.make(env_id)  # plain gymnasium: one array observation
    obs, _ = env.reset(seed=3)
    policy.reset()
    steps, done = 0, False
    while not done:
        action = policy.act(obs)
        assert env.action_space.contains(action), action
        if isinstance(env.action_space, gym.spaces.Discrete):
            assert isinstance(action, int)
        obs, _, terminated, truncated, _ = env.step(action)
        steps, done = steps + 1, terminated or truncated
    assert steps >= 5  # CartPole falls after 8 or so steps at the earliest; Pendulum: 200
    env.close()
    wm_env = policy.make_env(seed=0)  # the run's environment: dict observations
    obs, _ = wm_env.reset(seed=0)
    assert wm_env.action_space.contains(policy.act(obs))
    wm_env.close()


@pytest.mark.parametrize("greedy", [True, False])
def test_actions_equal_the_loops_latent_policy(run, greedy):
    _, _, run_dir, agent = run
    policy = wmblocks.load_policy(run_dir, greedy=greedy)
    assert policy.greedy is greedy
    ref = LatentPolicy(agent.wm, agent.actor, policy.action_dim, policy.discrete)
    T, N = 12, 3
    obs = random_obs(policy, T, N, seed=1)
    is_first = torch.zeros(T, N, dtype=torch.bool)
    is_first[0] = True
    is_first[5, 1] = True  # environment 1 starts a new episode at step 5
    torch.manual_seed(7)
    with torch.no_grad():
        want = [
            env_action(
                policy.action_space, ref({k: v[t] for k, v in obs.items()}, is_first[t], greedy)
            )
            for t in range(T)
        ]
    torch.manual_seed(7)
    policy.reset()
    got = [policy.act_batch({k: v[t] for k, v in obs.items()}, is_first[t]) for t in range(T)]
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=0, atol=1e-6)
    # One environment through act(): the same as the batched call with N = 1.
    torch.manual_seed(8)
    policy.reset()
    single = [policy.act({k: v[t, 0].numpy() for k, v in obs.items()}) for t in range(T)]
    torch.manual_seed(8)
    policy.reset()
    batched = [policy.act_batch({k: v[t, :1] for k, v in obs.items()})[0] for t in range(T)]
    np.testing.assert_allclose(np.stack(single), np.stack(batched), rtol=0, atol=0)


# Runs exported files with torch alone: wmblocks (and the libraries it uses) cannot be
# imported in this interpreter. argv: inputs.pt, out.pt, then the .pt2 files.
FRESH = r"""
import sys
BLOCKED = ("wmblocks", "einops", "tensordict", "torchrl", "gymnasium")
for name in BLOCKED:
    sys.modules[name] = None  # any import of these now fails
import json
import torch

torch.set_num_threads(1)
inputs, out, *files = sys.argv[1:]
sequences = torch.load(inputs)
results = []
for pt2 in files:
    extra = {"wmblocks.json": ""}
    step = torch.export.load(pt2, extra_files=extra).module()
    meta = json.loads(extra["wmblocks.json"])
    actions = []
    for seq in sequences:
        torch.manual_seed(seq["seed"])
        n = seq["is_first"].shape[1]
        deter, stoch = torch.zeros(n, meta["deter"]), torch.zeros(n, meta["stoch"])
        action = torch.zeros(n, meta["action_dim"])
        per_step = []
        with torch.no_grad():
            for t in range(seq["is_first"].shape[0]):
                obs = {k: v[t] for k, v in seq["obs"].items()}
                deter, stoch, action = step(obs, seq["is_first"][t], deter, stoch, action)
                per_step.append(action)
        actions.append(torch.stack(per_step))
    results.append({"meta": meta, "actions": actions})
loaded = [m for m in sys.modules if sys.modules[m] is not None and m.split(".")[0] in BLOCKED]
torch.save({"results": results, "loaded": sorted(loaded)}, out)
"""


def test_exported_file_runs_in_a_fresh_interpreter_with_the_same_actions(run, tmp_path):
    recipe, env_id, run_dir, agent = run
    policy = wmblocks.load_policy(run_dir)
    files = [policy.export(str(tmp_path / f"policy-{g}.pt2"), greedy=g) for g in (True, False)]
    ref = LatentPolicy(agent.wm, agent.actor, policy.action_dim, policy.discrete)
    sequences = []
    for seed, (T, N) in [(11, (10, 2)), (12, (6, 1))]:  # batch sizes 2 and 1: dynamic
        is_first = torch.zeros(T, N, dtype=torch.bool)
        is_first[0] = True
        is_first[T // 2, 0] = True  # environment 0 starts a new episode mid-way
        sequences.append(
            {"seed": seed, "obs": random_obs(policy, T, N, seed), "is_first": is_first}
        )
    torch.save(sequences, tmp_path / "inputs.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    inputs, out = str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", FRESH, inputs, out, *files],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**env, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = torch.load(out)
    assert fresh["loaded"] == []
    for greedy, result in zip((True, False), fresh["results"], strict=True):
        meta = result["meta"]
        assert meta["greedy"] is greedy and meta["recipe"] == recipe and meta["env"] == env_id
        assert meta["discrete"] == policy.discrete and meta["action_dim"] == policy.action_dim
        for seq, got in zip(sequences, result["actions"], strict=True):
            torch.manual_seed(seq["seed"])  # the same random stream as the fresh process
            ref.reset()
            with torch.no_grad():
                want = torch.stack(
                    [
                        ref({k: v[t] for k, v in seq["obs"].items()}, seq["is_first"][t], greedy)
                        for t in range(len(seq["is_first"]))
                    ]
                )
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_export_policy_from_a_run_directory(tmp_path_factory, tmp_path):
    run_dir, _ = trained(tmp_path_factory, "dreamer_v3", "CartPole-v1")
    path = wmblocks.export_policy(run_dir, str(tmp_path / "sub" / "p.pt2"), greedy=True)
    extra = {"wmblocks.json": ""}
    step = torch.export.load(path, extra_files=extra).module()
    meta = json.loads(extra["wmblocks.json"])
    assert meta["greedy"] is True and meta["obs_shapes"] == {"observation": [4]}
    assert (meta["n"], meta["start"], meta["action_dim"]) == (2, 0, 2)
    n = 4  # any batch size
    deter, stoch = torch.zeros(n, meta["deter"]), torch.zeros(n, meta["stoch"])
    with torch.no_grad():
        deter, stoch, action = step(
            {"observation": torch.randn(n, 4)},
            torch.ones(n, dtype=torch.bool),
            deter,
            stoch,
            torch.zeros(n, 2),
        )
    assert deter.shape == (n, meta["deter"]) and stoch.shape == (n, meta["stoch"])
    assert torch.equal(action.sum(-1), torch.ones(n))  # one-hot
    with pytest.raises(UserError, match="no run directory"):
        wmblocks.export_policy(str(tmp_path / "nope"), str(tmp_path / "q.pt2"))


def test_load_errors_are_user_errors_with_a_clear_message(tmp_path_factory, tmp_path):
    run_dir, _ = trained(tmp_path_factory, "dreamer_v3", "CartPole-v1")
    with pytest.raises(UserError, match="no run directory"):
        wmblocks.load_policy(str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="has no checkpoint.pt"):
        wmblocks.load_policy(str(empty))
    with pytest.raises(UserError, match="unknown recipe 'dreamer_v9'"):
        wmblocks.load_policy(run_dir, recipe="dreamer_v9")
    with pytest.raises(UserError, match="does not match this recipe"):
        wmblocks.load_policy(run_dir, recipe="dreamer_v1")
    # An older checkpoint that does not record its recipe, in a directory whose name
    # does not tell it either: the message asks for it; recipe= then loads it.
    old = tmp_path / "old-run"
    old.mkdir()
    ckpt = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)
    del ckpt["recipe"]
    torch.save(ckpt, old / "checkpoint.pt")
    (old / "config.json").write_text(open(os.path.join(run_dir, "config.json")).read())
    with pytest.raises(UserError, match="cannot tell which recipe trained"):
        wmblocks.load_policy(str(old))
    assert wmblocks.load_policy(str(old), recipe="dreamer_v3").recipe == "dreamer_v3"
    (old / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt or unreadable"):
        wmblocks.load_policy(str(old), recipe="dreamer_v3")
    policy = wmblocks.load_policy(run_dir)
    with pytest.raises(UserError, match="observation lacks"):
        policy.act({"image": np.zeros((3, 64, 64), np.uint8)})
    with pytest.raises(UserError, match="expected"):
        policy.act(np.zeros(5, np.float32))
    policy.act_batch({"observation": np.zeros((2, 4), np.float32)})
    with pytest.raises(UserError, match="call policy.reset"):
        policy.act(np.zeros(4, np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_acts_on_cuda(tmp_path_factory):
    run_dir, _ = trained(tmp_path_factory, "dreamer_v3", "Pendulum-v1")
    policy = wmblocks.load_policy(run_dir, device="cuda")
    assert next(policy.net.parameters()).is_cuda
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        action = policy.act(obs)
        assert env.action_space.contains(action)
        obs, *_ = env.step(action)
    assert policy.latent[0].is_cuda
