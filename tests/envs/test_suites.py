"""The environment adapters of wmblocks.envs against the contract of wmblocks.envs.make:
spaces and dtypes, frame counting under action repeat, termination vs truncation,
determinism under a seed, the missing-extra and unknown-id errors, and suite details
(Crafter's achievement keys, MinAtar's upsampled grid, Atari's max-pool).

Each suite is skipped (with the reason) when its package is not installed; dmc image
tests are skipped when rendering fails. Kept short: the whole file runs in well under a
minute on 2 cores."""

from __future__ import annotations

import functools
import os
import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import wmblocks.envs as envs
from wmblocks.errors import UserError

# -- helpers ------------------------------------------------------------------------------


def need(package: str, extra: str):
    """Skip the calling test unless ``package`` imports."""
    return pytest.importorskip(
        package, reason=f"{package} not installed (pip install -e '.[{extra}]')"
    )


def check_contract(env: gym.Env, obs: dict, info: dict) -> None:
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    assert set(space.spaces) <= {"image", "observation"} and space.spaces
    assert set(obs) == set(space.spaces)
    for key, sub in space.spaces.items():
        assert isinstance(sub, gym.spaces.Box)
        if key == "image":
            assert sub.dtype == np.uint8 and sub.shape[1:] == (64, 64) and len(sub.shape) == 3
        else:
            assert sub.dtype == np.float32 and len(sub.shape) == 1
        assert isinstance(obs[key], np.ndarray)
        assert obs[key].dtype == sub.dtype and obs[key].shape == sub.shape, key
    assert space.contains(obs)
    act = env.action_space
    assert isinstance(act, gym.spaces.Discrete) or (
        isinstance(act, gym.spaces.Box) and len(act.shape) == 1
    )
    assert isinstance(info["frames"], int)


def actions(env: gym.Env, n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return [int(rng.integers(space.n)) for _ in range(n)]
    return [rng.uniform(space.low, space.high).astype(np.float32) for _ in range(n)]


def rollout(env: gym.Env, seed: int | None, acts: list) -> list:
    """reset(seed) then the actions (resetting with seed=None at episode ends); the
    trajectory as a list of (obs, reward, terminated, truncated, frames)."""
    obs, info = env.reset(seed=seed)
    check_contract(env, obs, info)
    assert info["frames"] == 0
    traj = [(obs, 0.0, False, False, 0)]
    for a in acts:
        obs, reward, terminated, truncated, info = env.step(a)
        assert isinstance(reward, float)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        check_contract(env, obs, info)
        traj.append((obs, reward, terminated, truncated, info["frames"]))
        if terminated or truncated:
            obs, info = env.reset()
            traj.append((obs, 0.0, False, False, 0))
    return traj


def same(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for (o1, *r1), (o2, *r2) in zip(a, b, strict=True):
        if r1 != r2 or set(o1) != set(o2):
            return False
        if any(not np.array_equal(o1[k], o2[k]) for k in o1):
            return False
    return True


def check_determinism(env_id: str, steps: int, **kw) -> None:
    """Envs made with different seeds agree after reset(seed=s); another s differs."""
    a = envs.make(env_id, seed=1, **kw)
    b = envs.make(env_id, seed=2, **kw)
    acts = actions(a, steps)
    ta = rollout(a, 11, acts)
    tb = rollout(b, 11, acts)
    assert same(ta, tb), f"{env_id}: same seed, different trajectories"
    tc = rollout(b, 12, acts)
    assert not same(ta, tc), f"{env_id}: different seeds, same trajectory"
    a.close()
    b.close()


def check_make_seed(env_id: str, steps: int, **kw) -> None:
    """Without reset seeds, the seed given to make fixes the stream across episodes, and
    reset(seed=None) continues it (the second episode does not repeat the first)."""
    acts = actions(envs.make(env_id, **kw), steps)

    def two_episodes(seed):
        env = envs.make(env_id, seed=seed, **kw)
        return rollout(env, None, acts), rollout(env, None, acts)

    a1, a2 = two_episodes(5)
    b1, b2 = two_episodes(5)
    assert same(a1, b1) and same(a2, b2), f"{env_id}: same make seed, different trajectories"
    assert not same(a1, a2), f"{env_id}: reset(seed=None) repeated the episode"
    c1, _ = two_episodes(6)
    assert not same(a1, c1), f"{env_id}: different make seeds, same trajectory"


# -- suite-independent -----------------------------------------------------------------


def test_default_action_repeat():
    assert envs.default_action_repeat("dmc/walker-walk") == 2
    assert envs.default_action_repeat("dmc-vision/walker-walk") == 2
    assert envs.default_action_repeat("dmc-both/walker-walk") == 2
    assert envs.default_action_repeat("atari100k/pong") == 4
    assert envs.default_action_repeat("crafter/reward") == 1
    assert envs.default_action_repeat("minatar/breakout") == 1
    assert envs.default_action_repeat("CartPole-v1") == 1


def test_import_is_cheap():
    code = (
        "import sys, wmblocks.envs; "
        "print([m for m in ('dm_control', 'ale_py', 'crafter', 'minatar', 'mujoco') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "env_id, match",
    [
        ("atari/pong", "atari100k"),  # unknown suite: lists ours
        ("NoSuchEnv-v0", "NoSuchEnv"),
        ("dmc/", "no task"),
        ("crafter/hard", "reward, noreward"),
        ("minatar/pacman", "breakout"),
    ],
)
def test_unknown_ids(env_id, match):
    if env_id.startswith("minatar"):
        need("minatar", "minatar")
    if env_id.startswith("crafter"):
        need("crafter", "crafter")
    with pytest.raises(UserError, match=match):
        envs.make(env_id)


def test_bad_action_repeat():
    with pytest.raises(UserError, match="action repeat"):
        envs.make("CartPole-v1", action_repeat=-1)


@pytest.mark.parametrize(
    "env_id, package, extra",
    [
        ("dmc/walker-walk", "dm_control", "dmc"),
        ("dmc-vision/walker-walk", "dm_control", "dmc"),
        ("atari100k/pong", "ale_py", "atari"),
        ("crafter/reward", "crafter", "crafter"),
        ("minatar/breakout", "minatar", "minatar"),
    ],
)
def test_missing_extra(monkeypatch, env_id, package, extra):
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(UserError) as e:
        envs.make(env_id)
    msg = str(e.value)
    assert env_id in msg and f"the {extra} extra" in msg and f"pip install -e '.[{extra}]'" in msg
    if extra == "dmc":
        assert "libegl1" in msg and "libosmesa6" in msg


# -- plain gymnasium ids -----------------------------------------------------------------


def test_gymnasium_cartpole():
    env = envs.make("CartPole-v1", seed=0)
    assert set(env.observation_space.spaces) == {"observation"}
    assert env.observation_space["observation"].shape == (4,)
    assert env.action_space == gym.spaces.Discrete(2)
    traj = rollout(env, 0, actions(env, 30))
    assert all(f == 1 for *_, f in traj[1:] if f)
    check_determinism("CartPole-v1", 30)
    check_make_seed("CartPole-v1", 30)


def test_gymnasium_repeat_sums_rewards():
    env = envs.make("CartPole-v1", seed=0, action_repeat=3)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(0)
    assert info["frames"] == 3 and reward == 3.0 and not (terminated or truncated)


def test_gymnasium_unsupported_space():
    with pytest.raises(UserError, match="Discrete.*supported are"):
        envs.make("FrozenLake-v1")


class _DictEnv(gym.Env):
    observation_space = gym.spaces.Dict(
        {
            "vel": gym.spaces.Box(-10, 10, (3,), np.float64),
            "cam": gym.spaces.Box(0, 255, (64, 64, 1), np.uint8),
            "pos": gym.spaces.Box(-10, 10, (2,), np.float32),
        }
    )
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def _obs(self):
        cam = np.zeros((64, 64, 1), np.uint8)
        cam[1, 2, 0] = 7
        return {"vel": np.array([3.0, 4.0, 5.0]), "cam": cam, "pos": np.array([1, 2], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def step(self, action):
        return self._obs(), 1.0, False, False, {"log_x": 2.0, "other": [1, 2]}


def test_gymnasium_dict_observation():
    gym.register("WmblocksTestDict-v0", entry_point=_DictEnv)
    env = envs.make("WmblocksTestDict-v0")
    assert env.observation_space["image"].shape == (1, 64, 64)
    obs, info = env.reset(seed=0)
    check_contract(env, obs, info)
    np.testing.assert_array_equal(obs["observation"], [1, 2, 3, 4, 5])  # pos, vel: sorted
    assert obs["image"][0, 1, 2] == 7 and obs["image"].sum() == 7
    _, _, _, _, info = env.step(np.zeros(2))
    assert info == {"frames": 1, "log_x": 2.0}


def test_step_after_end_raises():
    env = envs.make("CartPole-v1")
    with pytest.raises(RuntimeError):
        env.step(0)


# -- dmc ------------------------------------------------------------------------------


def test_dmc_proprio():
    need("dm_control", "dmc")
    env = envs.make("dmc/walker-walk", seed=0)
    from dm_control import suite

    spec = suite.load("walker", "walk").observation_spec()
    size = sum(int(np.prod(v.shape)) for v in spec.values())
    assert set(env.observation_space.spaces) == {"observation"}
    assert env.observation_space["observation"].shape == (size,) == (24,)
    assert env.action_space.shape == (6,)
    np.testing.assert_array_equal(env.action_space.low, -1)
    traj = rollout(env, 0, actions(env, 20))
    assert [f for *_, f in traj[1:]] == [2] * 20
    # sorted key order: height (1), orientations (14), velocity (9)
    obs = traj[-1][0]["observation"]
    ts = env.env.physics
    np.testing.assert_allclose(obs[0], ts.torso_height(), rtol=1e-6)
    np.testing.assert_allclose(obs[1:15], ts.orientations(), rtol=1e-6)


def test_dmc_truncates_at_1000_frames():
    need("dm_control", "dmc")
    env = envs.make("dmc/cartpole-balance", seed=0, action_repeat=8)
    env.reset(seed=0)
    frames, done = 0, False
    for a in actions(env, 125):
        assert not done
        _, _, terminated, truncated, info = env.step(a)
        frames += info["frames"]
        assert not terminated
        done = truncated
    assert done and frames == 1000


def test_dmc_determinism():
    need("dm_control", "dmc")
    check_determinism("dmc/walker-walk", 20)
    check_make_seed("dmc/walker-walk", 5)


@pytest.mark.parametrize(
    "task, expected",
    [
        ("walker-walk", ("walker", "walk")),
        ("ball-in-cup-catch", ("ball_in_cup", "catch")),
        ("cup-catch", ("ball_in_cup", "catch")),
        ("cartpole-swingup-sparse", ("cartpole", "swingup_sparse")),
        ("point-mass-easy", ("point_mass", "easy")),
        ("humanoid-CMU-run", ("humanoid_CMU", "run")),
        ("reacher-easy", ("reacher", "easy")),
    ],
)
def test_dmc_task_names(task, expected):
    need("dm_control", "dmc")
    from dm_control import suite

    from wmblocks.envs.dmc import parse_task

    assert parse_task(task, suite.ALL_TASKS) == expected


def test_dmc_unknown_task_and_domain():
    need("dm_control", "dmc")
    with pytest.raises(UserError, match="stand, walk, run|run, stand, walk"):
        envs.make("dmc/walker-fly")
    with pytest.raises(UserError, match="domains:.*walker"):
        envs.make("dmc/robot-walk")


@pytest.fixture(scope="module")
def dmc_rendering():
    need("dm_control", "dmc")
    try:
        env = envs.make("dmc-vision/cartpole-balance", seed=0)
        env.reset(seed=0)
        frame = env.render()
    except Exception as e:  # noqa: BLE001 - any rendering failure means: skip
        pytest.skip(
            f"dm_control rendering failed (MUJOCO_GL={os.environ.get('MUJOCO_GL')}; needs "
            f"libegl1 libegl-mesa0 or libosmesa6): {type(e).__name__}: {e}"
        )
    return env, frame


def test_dmc_vision(dmc_rendering):
    env, frame = dmc_rendering
    assert set(env.observation_space.spaces) == {"image"}
    assert env.observation_space["image"].shape == (3, 64, 64)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8 and frame.std() > 0
    traj = rollout(env, 3, actions(env, 5))
    obs = traj[-1][0]["image"]
    np.testing.assert_array_equal(obs, env.render().transpose(2, 0, 1))
    assert env.camera == 0
    check_determinism("dmc-vision/cartpole-balance", 5)


def test_dmc_both(dmc_rendering):
    env = envs.make("dmc-both/reacher-easy", seed=0)
    assert set(env.observation_space.spaces) == {"image", "observation"}
    rollout(env, 0, actions(env, 3))


def test_dmc_quadruped_camera():
    need("dm_control", "dmc")
    assert envs.make("dmc-vision/quadruped-walk").camera == 2  # the reference's default
    assert envs.make("dmc-vision/walker-walk").camera == 0


# -- atari100k --------------------------------------------------------------------------


def test_atari_spaces_and_frames():
    need("ale_py", "atari")
    env = envs.make("atari100k/pong", seed=0)
    assert set(env.observation_space.spaces) == {"image"}
    assert env.observation_space["image"].shape == (3, 64, 64)
    assert env.action_space == gym.spaces.Discrete(6)  # pong's minimal action set
    traj = rollout(env, 0, actions(env, 30))
    assert [f for *_, f in traj[1:]] == [4] * 30
    assert env.ale.getFloat("repeat_action_probability") == 0.0
    assert env.render().shape == (64, 64, 3)
    env2 = envs.make("atari100k/pong", seed=0, action_repeat=2)
    assert [f for *_, f in rollout(env2, 0, actions(env2, 5))[1:]] == [2] * 5


def test_atari_max_pool_of_last_two_frames():
    need("ale_py", "atari")
    from PIL import Image

    skip4 = envs.make("atari100k/breakout", seed=0)
    skip1 = envs.make("atari100k/breakout", seed=0, action_repeat=1)
    skip4.reset(seed=5)
    skip1.reset(seed=5)
    for step in range(3):
        a = 1 if step == 0 else 2  # FIRE, then RIGHT
        obs = skip4.step(a)[0]
        screens = []
        for _ in range(4):
            skip1.step(a)
            screens.append(skip1.ale.getScreenRGB())
        pooled = np.maximum(screens[-1], screens[-2])
        expected = np.asarray(Image.fromarray(pooled).resize((64, 64), Image.BILINEAR))
        np.testing.assert_array_equal(obs["image"], expected.transpose(2, 0, 1))
        assert not np.array_equal(screens[-1], screens[-2]) or step == 0


def test_atari_cap_counts_as_terminal():
    need("ale_py", "atari")
    from wmblocks.envs.atari import AtariEnv

    for cap_is_terminal in (True, False):
        env = AtariEnv("pong", length=10, cap_is_terminal=cap_is_terminal)
        env.reset(seed=0)
        out = [env.step(0) for _ in range(3)]
        assert [o[4]["frames"] for o in out] == [4, 4, 2]
        assert not any(o[2] or o[3] for o in out[:2])
        assert out[2][2] is cap_is_terminal and out[2][3] is (not cap_is_terminal)


def test_atari_determinism():
    need("ale_py", "atari")
    check_determinism("atari100k/pong", 60)
    check_make_seed("atari100k/pong", 30)


def test_atari_game_names():
    need("ale_py", "atari")
    from wmblocks.envs.atari import rom_id

    assert rom_id("ms-pacman") == rom_id("ms_pacman") == rom_id("mspacman") == "ms_pacman"
    assert rom_id("james_bond") == "jamesbond"
    with pytest.raises(UserError, match="Atari 100k games.*pong"):
        envs.make("atari100k/pacman3000")


# -- crafter --------------------------------------------------------------------------


def test_crafter():
    crafter = need("crafter", "crafter")
    names = list(crafter.constants.achievements)
    assert len(names) == 22
    keys = {f"log_achievement_{n}" for n in names} | {"log_true_return"}
    env = envs.make("crafter/reward", seed=1)
    assert set(env.observation_space.spaces) == {"image"}
    assert env.observation_space["image"].shape == (3, 64, 64)
    assert env.action_space == gym.spaces.Discrete(17)
    obs, info = env.reset(seed=11)
    assert set(info) == keys | {"frames"}
    acts = actions(env, 15)
    traj = [(obs, 0.0, False, False, 0)]
    for a in acts:
        obs, reward, terminated, truncated, info = env.step(a)
        check_contract(env, obs, info)
        assert set(info) == keys | {"frames"} and info["frames"] == 1
        assert all(type(info[k]) is int and info[k] in (0, 1) for k in keys - {"log_true_return"})
        traj.append((obs, reward, terminated, truncated, 1))
    np.testing.assert_array_equal(env.render(), obs["image"].transpose(1, 2, 0))
    # determinism: another env made with another seed, reset with the same seed
    other = envs.make("crafter/reward", seed=2)
    assert same(traj, rollout(other, 11, acts))
    first, _ = other.reset(seed=12)
    assert not np.array_equal(first["image"], traj[0][0]["image"])


class _FakeCrafter:
    """Stands in for crafter.Env to drive the end-of-episode logic."""

    def __init__(self, steps):
        self.steps = list(steps)

    def reset(self):
        return np.zeros((64, 64, 3), np.uint8)

    def step(self, action):
        done, discount, wood = self.steps.pop(0)
        info = {"discount": discount, "reward": 0.5, "achievements": {"collect_wood": wood}}
        return np.zeros((64, 64, 3), np.uint8), 0.5, done, info


@pytest.mark.parametrize("discount, terminated", [(0.0, True), (1.0, False)])
def test_crafter_terminal_vs_truncated(discount, terminated):
    need("crafter", "crafter")
    from wmblocks.envs.crafter import CrafterEnv

    env = CrafterEnv(seed=0)
    env.env = _FakeCrafter([(False, 1.0, 0), (False, 1.0, 2), (True, discount, 2)])
    env._reset_raw(None)
    env._needs_reset = False
    for _ in range(2):
        _, _, te, tr, info = env.step(0)
        assert not (te or tr)
    assert info["log_achievement_collect_wood"] == 1 and info["log_achievement_eat_cow"] == 0
    _, _, te, tr, info = env.step(0)
    assert (te, tr) == (terminated, not terminated)
    assert info["log_true_return"] == 1.5


def test_crafter_score():
    need("crafter", "crafter")
    from wmblocks.envs.crafter import score

    assert score(np.zeros((4, 22))) == 0.0
    assert score(np.ones((4, 22))) == pytest.approx(100.0)
    rates = np.zeros(22)
    rates[0] = 1.0
    assert score(rates) == pytest.approx(np.exp(np.log(101) / 22) - 1)


# -- minatar --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "game, channels, n_actions",
    [
        ("breakout", 4, 3),
        ("asterix", 4, 5),
        ("freeway", 7, 3),
        ("seaquest", 10, 6),
        ("space-invaders", 6, 4),
        ("space_invaders", 6, 4),
    ],
)
def test_minatar_spaces(game, channels, n_actions):
    need("minatar", "minatar")
    env = envs.make(f"minatar/{game}", seed=0)
    assert env.observation_space["image"].shape == (channels, 64, 64)
    assert env.action_space == gym.spaces.Discrete(n_actions)
    rollout(env, 0, actions(env, 10))


def test_minatar_image_is_the_upsampled_grid():
    need("minatar", "minatar")
    from PIL import Image

    env = envs.make("minatar/seaquest", seed=0)
    env.reset(seed=0)
    for a in actions(env, 40):
        obs, _, te, tr, _ = env.step(a)
        if te or tr:
            obs, _ = env.reset()
    grid = env.grid()
    assert grid.shape == (10, 10, 10) and grid.dtype == bool and grid.any()
    image = obs["image"]
    assert set(np.unique(image)) <= {0, 255}
    for c in range(grid.shape[2]):
        expected = Image.fromarray(grid[:, :, c].astype(np.uint8) * 255).resize(
            (64, 64), Image.NEAREST
        )
        np.testing.assert_array_equal(image[c], np.asarray(expected))
    # every cell covers 6 or 7 pixels per side
    assert image[:, ::8, ::8].astype(bool).sum() <= grid.sum() * 4
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame.any(-1), image.any(0))


def test_minatar_repeat_and_time_limit():
    need("minatar", "minatar")
    from wmblocks.envs.minatar import MinAtarEnv

    env = envs.make("minatar/freeway", seed=0, action_repeat=3)
    traj = rollout(env, 0, actions(env, 5))
    assert [f for *_, f in traj[1:]] == [3] * 5
    env = MinAtarEnv("freeway", length=5)
    env.reset(seed=0)
    out = [env.step(0) for _ in range(5)]
    assert [o[3] for o in out] == [False] * 4 + [True] and not any(o[2] for o in out)
    assert MinAtarEnv("breakout").length == 10000


def test_minatar_determinism():
    need("minatar", "minatar")
    check_determinism("minatar/breakout", 60)
    check_make_seed("minatar/breakout", 60)


def test_minatar_async_vector_env():
    need("minatar", "minatar")
    fns = [
        functools.partial(envs.make, "minatar/breakout", seed=i, action_repeat=0) for i in (0, 1)
    ]
    pickle.loads(pickle.dumps(fns[0]))().close()
    vec = gym.vector.AsyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    try:
        obs, info = vec.reset(seed=0)
        assert obs["image"].shape == (2, 4, 64, 64) and obs["image"].dtype == np.uint8
        for _ in range(20):
            obs, reward, terminated, truncated, info = vec.step(np.array([1, 2]))
            assert reward.shape == (2,) and terminated.dtype == bool
            assert list(info["frames"]) in ([1, 1], [0, 1], [1, 0], [0, 0])
    finally:
        vec.close()
