"""Offline training: the recorded-data sources, the validation split, the open-loop
errors, the world-model-only update and recipes/world_model.py end to end."""

import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from tests.recipes.common import ROOT
from wmblocks import presets
from wmblocks.errors import UserError
from wmblocks.train.checkpoint import save_checkpoint
from wmblocks.train.datasets import load_dataset, load_minari, load_npz, load_replay, save_npz
from wmblocks.train.offline import initial_context, world_model_update
from wmblocks.train.policy import RECIPES_DIR, import_recipe
from wmblocks.train.replay import SequenceReplay
from wmblocks.train.wm_eval import mean_errors, open_loop_errors

WORLD_MODEL = os.path.join(ROOT, "recipes", "world_model.py")


def _episode(n, seed, image=False, terminal=True):
    """One recorded episode of ``n`` rows in the V3 layout; observation[t] = t + 100 *
    seed (so rows can be told apart), discrete actions as indices."""
    rng = np.random.default_rng(seed)
    rows = {
        "observation": (np.arange(n, dtype=np.float32)[:, None] + 100 * seed).repeat(3, 1),
        "action": rng.integers(0, 2, n),
        "reward": np.arange(n, dtype=np.float32),
        "is_first": np.arange(n) == 0,
        "is_last": np.arange(n) == n - 1,
        "is_terminal": (np.arange(n) == n - 1) & terminal,
    }
    if image:
        rows["image"] = rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    return rows


def _write(directory, name, rows):
    os.makedirs(directory, exist_ok=True)
    np.savez(os.path.join(directory, name), **rows)


def test_npz_taken_layout_images_and_actions(tmp_path):
    eps = [_episode(6, 0, image=True), _episode(5, 1, image=True, terminal=False)]
    for i, ep in enumerate(eps):
        _write(tmp_path, f"ep{i}.npz", ep)
    data = load_npz(str(tmp_path), val_fraction=0.0)
    assert data.steps == 11 and data.episodes == 2 and len(data.streams) == 1
    assert data.spaces.obs_shapes == {"observation": (3,), "image": (3, 64, 64)}
    assert data.spaces.discrete and data.spaces.action_dim == 2
    rows = data.streams[0].rows
    np.testing.assert_array_equal(rows["image"][0].numpy(), np.moveaxis(eps[0]["image"][0], -1, 0))
    action = rows["action"].numpy()
    # One-hot of the index taken at o_t; zero at each episode's last row.
    assert action[0, eps[0]["action"][0]] == 1 and action[0].sum() == 1
    assert action[5].sum() == 0 and action[10].sum() == 0
    assert rows["is_terminal"].tolist() == [False] * 5 + [True] + [False] * 5
    assert rows["reward"][6] == 0 and rows["is_first"][6]


def test_npz_previous_actions_and_missing_flags(tmp_path):
    """V1/V2 episode files: the action at row t led to o_t; is_last / is_terminal are
    derived (episode end; discount 0)."""
    ep = _episode(4, 0)
    ep["action"] = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]  # one-hot, row 0 is padding
    ep["discount"] = np.array([1, 1, 1, 0], np.float32)
    del ep["is_last"], ep["is_terminal"]
    _write(tmp_path, "20200101T000000-abc-4.npz", ep)
    data = load_npz(str(tmp_path), val_fraction=0.0, actions="previous")
    rows = data.streams[0].rows
    assert rows["action"].argmax(-1)[:3].tolist() == [1, 0, 1]  # a_t = action[t + 1]
    assert rows["action"][3].sum() == 0
    assert rows["is_last"].tolist() == [False, False, False, True]
    assert rows["is_terminal"].tolist() == [False, False, False, True]
    assert "discount" not in rows.keys()


def test_npz_chunk_chains_join_in_stream_order(tmp_path):
    """Reference chunk files TIME-UUID-SUCC-LENGTH.npz: a chain continues one stream
    (no reset between its chunks); another chain starts with is_first."""
    ep = _episode(10, 0)
    first = {k: v[:6] for k, v in ep.items()}
    second = {k: v[6:] for k, v in ep.items()}
    other = {k: v[3:8] for k, v in _episode(10, 1).items()}  # starts mid-episode
    _write(tmp_path, "1-aaa-bbb-6.npz", first)
    _write(tmp_path, "3-bbb-000-4.npz", second)
    _write(tmp_path, "2-ccc-000-5.npz", other)
    rows = load_npz(str(tmp_path), val_fraction=0.0).streams[0].rows
    assert rows["observation"][:, 0].tolist() == [*range(10), *range(103, 108)]
    assert rows["is_first"].nonzero().flatten().tolist() == [0, 10]


def _fake_run(run_dir, per_env, envs, steps):
    """A run directory whose replay got ``steps`` steps of ``envs`` environments
    (observation = 1000 * env + step) and a checkpoint that counts them."""
    replay = SequenceReplay(per_env * envs, os.path.join(run_dir, "replay"), 2, 4, envs=envs)
    for t in range(steps):
        obs = torch.tensor([[1000.0 * e + t] * 3 for e in range(envs)])
        replay.add(
            {
                "observation": obs,
                "action": torch.nn.functional.one_hot(torch.tensor([t % 2] * envs), 2).float(),
                "reward": torch.ones(envs),
                "is_first": torch.full((envs,), t % 7 == 0),
                "is_terminal": torch.zeros(envs, dtype=torch.bool),
                "is_last": torch.full((envs,), t % 7 == 6),
            }
        )
    replay.flush()
    save_checkpoint(
        os.path.join(run_dir, "checkpoint.pt"),
        {
            "count": {"steps": steps},
            "replay": {"added": replay.added},
            "spaces": {"obs": {"observation": [3]}, "action_dim": 2, "discrete": True},
        },
    )


def test_replay_read_in_time_order_after_wrapping(tmp_path):
    run = str(tmp_path / "run")
    _fake_run(run, per_env=20, envs=2, steps=30)
    files = {
        f: os.path.getmtime(os.path.join(run, "replay", f)) for f in os.listdir(run + "/replay")
    }
    data = load_replay(run, val_fraction=0.0)
    assert len(data.streams) == 2 and data.steps == 40
    window = data.sample(8, 20)
    for row in window["observation"][:, :, 0]:
        env = int(row[0]) // 1000
        assert row.tolist() == [1000.0 * env + t for t in range(10, 30)]  # the last 20, in order
    assert load_dataset(run + "/replay", 0.0).steps == 40
    assert files == {f: os.path.getmtime(os.path.join(run, "replay", f)) for f in files}


def test_validation_blocks_never_overlap_training(tmp_path):
    run = str(tmp_path / "run")
    _fake_run(run, per_env=200, envs=1, steps=200)
    data = load_replay(run, val_fraction=0.1)
    val = {t for _, a, b in data.segments("val") for t in range(a, b)}
    train = {t for _, a, b in data.segments("train") for t in range(a, b)}
    assert not val & train and val | train == set(range(200)) and len(val) == 20
    for split, rows in (("train", train), ("val", val)):
        starts = data.sample(64, 5, split)["observation"][:, :, 0]
        assert {int(t) for t in starts.flatten()} <= rows


def test_minari_episodes_convert(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = gym.make("CartPole-v1")
    buffers = []
    for ep in range(3):
        obs, _ = env.reset(seed=ep)
        o, a, r, te, tr = [obs], [], [], [], []
        done = False
        while not done:
            act = env.action_space.sample()
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs), a.append(act), r.append(rew), te.append(term), tr.append(trunc)
            done = term or trunc
        buffers.append(
            EpisodeBuffer(
                id=ep,
                observations=np.array(o),
                actions=np.array(a),
                rewards=np.array(r),
                terminations=np.array(te),
                truncations=np.array(tr),
                infos={},
            )
        )
    minari.create_dataset_from_buffers("cartpole/test-v0", buffers, env=env)
    data = load_minari("cartpole/test-v0", val_fraction=0.0)
    rows = data.streams[0].rows
    n0 = len(buffers[0].rewards) + 1
    assert data.steps == sum(len(b.rewards) + 1 for b in buffers) and data.episodes == 3
    np.testing.assert_allclose(rows["observation"][:n0].numpy(), buffers[0].observations)
    assert rows["action"][: n0 - 1].argmax(-1).tolist() == buffers[0].actions.tolist()
    assert rows["action"][n0 - 1].sum() == 0 and rows["reward"][0] == 0
    assert rows["reward"][1:n0].tolist() == buffers[0].rewards.tolist()
    assert bool(rows["is_terminal"][n0 - 1]) == bool(buffers[0].terminations[-1])
    assert rows["is_first"][n0] and rows["is_last"][n0 - 1]
    with pytest.raises(UserError, match="cannot be loaded"):
        load_minari("cartpole/nothing-v0")


def test_open_loop_errors_skip_predictions_past_an_episode_start():
    torch.manual_seed(0)
    wm = presets.world_model_v3({"observation": (3,)}, 2, "debug")
    b, t, context = 3, 10, 4
    batch = TensorDict(
        {
            "observation": torch.randn(b, t, 3),
            "action": torch.nn.functional.one_hot(torch.randint(0, 2, (b, t)), 2).float(),
            "reward": torch.randn(b, t),
            "is_first": torch.zeros(b, t, dtype=torch.bool),
            "is_terminal": torch.zeros(b, t, dtype=torch.bool),
        },
        [b, t],
    )
    batch["is_first"][1, context + 2] = True  # sample 1: a new episode at horizon 3
    batch["is_first"][2, 1] = True  # inside the context: counts everywhere
    errors = open_loop_errors(wm, batch, context)
    assert set(errors) == {"obs/observation", "reward", "cont", "kl"}
    total, count = errors["obs/observation"]
    assert count.tolist() == [3, 3, 2, 2, 2, 2]
    means = mean_errors([errors, errors])
    assert all(len(v) == t - context and np.isfinite(v).all() for v in means.values())
    assert min(means["kl"]) >= 0
    single = open_loop_errors(wm, batch[:1], context)  # sample 0 alone: no reset
    assert single["obs/observation"][1].tolist() == [1] * (t - context)


@pytest.mark.parametrize("recipe", ["dreamer_v3", "dreamer_v1"])
def test_world_model_update_trains_only_the_world_model(recipe):
    from wmblocks.train.config import parse_config

    module = import_recipe(os.path.join(RECIPES_DIR, f"{recipe}.py"))
    small = ["--size", "debug"] if recipe == "dreamer_v3" else ["--units", "16", "--deter", "16"]
    cfg = parse_config(module.Config, [*small, "--batch", "2", "--length", "8"])
    from wmblocks.train.datasets import DataSpaces

    space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    agent = module.build(cfg, DataSpaces({"observation": (3,)}, space), torch.device("cpu"))
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in agent.modules.items()}
    update = world_model_update(agent, "fp32", torch.device("cpu"))
    t = cfg.length + agent.replay_context
    batch = TensorDict(
        {
            "observation": torch.randn(2, t, 3),
            "action": torch.rand(2, t, 1) * 2 - 1,
            "reward": torch.randn(2, t),
            "is_first": torch.zeros(2, t, dtype=torch.bool),
            "is_terminal": torch.zeros(2, t, dtype=torch.bool),
            "is_last": torch.zeros(2, t, dtype=torch.bool),
        },
        [2, t],
    )
    for _ in range(3):  # LaProp's warm-up starts at lr 0
        metrics = update(initial_context(batch.clone(), agent))
    assert float(metrics["train/skipped"]) == 0 and any(k.startswith("wm/") for k in metrics)
    for name, module_ in agent.modules.items():
        same = [torch.equal(a, p) for a, p in zip(before[name], module_.parameters(), strict=True)]
        if name in ("actor", "critic", "slow"):
            assert all(same), name
        elif name == "wm":
            assert not all(same)


def _world_model(*args):
    """recipes/world_model.py in this process (no interpreter start-up per call), on one
    thread as the recipe tests' subprocesses (tiny models: more threads only contend)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import_recipe(WORLD_MODEL).main(list(args))
    finally:
        torch.set_num_threads(threads)


def _cartpole_npz(directory, episodes=40):
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(0)
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        o, a, r, term, done = [obs], [], [0.0], False, False
        while not done:
            act = int(rng.integers(2))
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs), a.append(act), r.append(rew)
            done = term or trunc
        a.append(0)
        n = len(o)
        _write(
            directory,
            f"ep{ep:03d}.npz",
            {
                "observation": np.array(o, np.float32),
                "action": np.array(a),
                "reward": np.array(r, np.float32),
                "is_first": np.arange(n) == 0,
                "is_last": np.arange(n) == n - 1,
                "is_terminal": (np.arange(n) == n - 1) & term,
            },
        )


def test_world_model_recipe_learns_resumes_and_trains_a_policy(tmp_path):
    import json

    data, run = str(tmp_path / "data"), str(tmp_path / "run")
    _cartpole_npz(data)
    tiny = ["--", "--size", "debug", "--batch", "8", "--length", "16"]
    common = ["--data", data, "--logdir", run, "--eval-every", "100", "--val-batches", "4"]
    _world_model(*common, "--updates", "100", "--log-every", "50", *tiny)
    curves = [json.loads(line) for line in open(os.path.join(run, "openloop.jsonl"))]
    assert [c["step"] for c in curves] == [0, 100]
    untrained, trained = (c["errors"]["obs/observation"] for c in curves)
    assert trained[0] < 0.7 * untrained[0]  # one step ahead: learning (0.93 -> 0.49)
    assert os.path.exists(os.path.join(run, "openloop.png"))
    # Resume: continues the count, keeps the options.
    _world_model("--logdir", run, "--resume", "--updates", "120")
    steps = [json.loads(line)["step"] for line in open(os.path.join(run, "metrics.jsonl"))]
    assert steps[-1] == 120 and steps.count(100) == 2  # log and evaluation rows at 100
    # An existing run is not overwritten.
    with pytest.raises(UserError, match="already holds a run"):
        _world_model(*common, "--updates", "10", *tiny)
    # Offline Dreamer: behaviour too, evaluated in the environment; then loadable.
    policy_run = str(tmp_path / "policy")
    _world_model(
        "--data", data, "--logdir", policy_run, "--behavior", "--env", "CartPole-v1",
        "--updates", "20", "--eval-every", "20", "--eval-episodes", "1", "--val-batches", "1",
        *tiny,
    )  # fmt: skip
    rows = [json.loads(line) for line in open(os.path.join(policy_run, "metrics.jsonl"))]
    assert any("eval/return" in r and r["step"] == 20 for r in rows)
    from wmblocks import load_policy

    policy = load_policy(policy_run)
    assert policy.act(np.zeros(4, np.float32)) in (0, 1)


def test_world_model_recipe_bad_data(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        _world_model("--data", str(tmp_path / "nothing"), "--logdir", str(tmp_path / "r"))
    data = str(tmp_path / "data")
    _write(data, "ep.npz", _episode(30, 0))
    with pytest.raises(UserError, match="does not fit the environment"):
        _world_model("--data", data, "--env", "Pendulum-v1", "--logdir", str(tmp_path / "r2"))
    save_npz(load_npz(data, 0.0), str(tmp_path / "copy"))
    again = load_npz(str(tmp_path / "copy"), 0.0).streams[0].rows
    original = load_npz(data, 0.0).streams[0].rows
    assert all(torch.equal(again[k], original[k]) for k in original.keys())
