"""N environments stepping in lockstep, speaking Dreamer rows (:mod:`wmblocks.keys`).

The environments come from :func:`wmblocks.envs.make` (the benchmark suites and any
gymnasium id) and run in gymnasium's vector envs: ``SyncVectorEnv`` in this process,
or ``AsyncVectorEnv`` with one subprocess per environment (``parallel``). Gymnasium's
``NEXT_STEP`` autoreset is exactly the Dreamer layout: the step that ends an episode
returns its final observation (stored with its own row, so terminal steps train the
continue head), and the next step of that environment ignores the action and returns
the first observation of a new episode.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from wmblocks import keys
from wmblocks.errors import UserError
from wmblocks.presets import action_size


def make_env(env_id: str, seed: int, action_repeat: int, episode_steps: int = 0) -> gym.Env:
    """:func:`wmblocks.envs.make`, episodes cut (truncated) after ``episode_steps``
    agent steps when > 0 (gymnasium's ``TimeLimit``). Module-level, so subprocesses can
    build it from a pickled ``functools.partial``."""
    from wmblocks.envs import make

    env = make(env_id, seed=seed, action_repeat=action_repeat)
    env = gym.wrappers.TimeLimit(env, episode_steps) if episode_steps > 0 else env
    return CheckShapes(env, env_id)


class CheckShapes(gym.Wrapper):
    """Raise :class:`~wmblocks.errors.UserError` when an observation's shape is not
    the one its observation space declares (naming the environment, the key, both
    shapes and the episode step), before gymnasium's vector env fails to stack it."""

    def __init__(self, env: gym.Env, env_id: str):
        super().__init__(env)
        self.env_id, self.t = env_id, 0

    def _check(self, obs):
        space = self.observation_space
        items = obs.items() if isinstance(space, gym.spaces.Dict) else [("observation", obs)]
        spaces = space.spaces if isinstance(space, gym.spaces.Dict) else {"observation": space}
        for key, value in items:
            want = spaces[key].shape if key in spaces else None
            if want is not None and np.shape(value) != tuple(want):
                raise UserError(
                    f"environment {self.env_id!r} returned {key!r} of shape "
                    f"{list(np.shape(value))} at step {self.t} of its episode, but its "
                    f"observation space has shape {list(want)}: observation shapes must "
                    "not change"
                )
        return obs

    def reset(self, **kwargs):
        self.t = 0
        obs, info = self.env.reset(**kwargs)
        return self._check(obs), info

    def step(self, action):
        self.t += 1
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._check(obs), reward, terminated, truncated, info


class Envs:
    """``n`` copies of one environment behind a gymnasium vector env.

    ``reset()`` and ``step(action [n, A])`` return one row per environment, a dict of
    ``[n, ...]`` tensors: every observation key (images ``uint8 [n, C, 64, 64]``,
    vectors ``float32 [n, K]``), ``reward`` (received on arriving at this observation;
    0 when ``is_first``), ``is_first``, ``is_terminal`` and ``is_last``. Actions are in
    the agent's space: one-hot ``[n, A]`` for Discrete, ``[-1, 1]^A`` for Box (rescaled
    here to the Box bounds). The action of an environment whose row was ``is_last`` is
    ignored (that environment resets).

    After each call, ``frames`` is the number of environment frames it consumed, over
    all environments (action repeats count; reset rows none), and ``episode_logs[i]``
    holds the ``log_*`` values an environment reported on the step that ended its
    episode (Crafter's achievements, for example), names without the prefix.

    Environment i is made with seed ``seed + i``, and reset with it; ``parallel=True``
    gives the same rows as ``parallel=False`` for the same seed. ``episode_steps > 0``
    truncates episodes after that many agent steps.

    Non-finite values: a NaN or inf in a float observation or the reward raises a
    :class:`~wmblocks.errors.UserError` naming the environment, its step and the key,
    before the row reaches anyone (the replay). With ``sanitize``, such values are
    replaced instead (:func:`finite_values`: NaN -> 0, +-inf -> the float32 limits,
    clipped to the observation space's bounds) and counted in ``sanitized`` (values
    replaced since construction). ``step_count`` counts the calls of :meth:`step`.
    """

    def __init__(
        self,
        env_id: str,
        seed: int = 0,
        n: int = 1,
        action_repeat: int = 0,
        parallel: bool | None = None,
        episode_steps: int = 0,
        sanitize: bool = False,
    ):
        if n < 1:
            raise UserError(f"--envs must be >= 1, got {n}")
        self.env_id, self.n, self.seed = env_id, n, seed
        parallel = n > 1 if parallel is None else parallel
        fns = [
            functools.partial(make_env, env_id, seed + i, action_repeat, episode_steps)
            for i in range(n)
        ]
        vector = gym.vector.AsyncVectorEnv if parallel else gym.vector.SyncVectorEnv
        self.env = vector(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        space = self.env.single_observation_space
        self.obs_shapes = {k: tuple(s.shape) for k, s in space.spaces.items()}
        self.action_space = self.env.single_action_space
        self.action_dim, self.discrete = action_size(self.action_space)
        self.frames = 0
        self.episode_logs: dict[int, dict[str, float]] = {}
        self._last = np.zeros(n, bool)
        self._seeded = False
        self.sanitize, self.sanitized, self.step_count = sanitize, 0, 0
        self._episode_step = np.zeros(n, int)  # steps since each environment's reset

    @property
    def image_keys(self) -> list[str]:
        """The observation keys that hold images ``[C, H, W]``."""
        return [k for k, s in self.obs_shapes.items() if len(s) == 3]

    def _rows(self, obs, reward, terminated, truncated, first) -> dict[str, Tensor]:
        row = {k: torch.as_tensor(np.asarray(v)) for k, v in obs.items()}
        for k, v in row.items():
            if v.dtype != torch.uint8:
                row[k] = v.to(torch.float32)
        row[keys.REWARD] = torch.as_tensor(np.asarray(reward, np.float32))
        row[keys.IS_FIRST] = torch.as_tensor(np.asarray(first, bool))
        row[keys.IS_TERMINAL] = torch.as_tensor(np.asarray(terminated, bool))
        row[keys.IS_LAST] = torch.as_tensor(np.asarray(terminated, bool) | truncated)
        return row

    def reset(self, seed: int | None = None) -> dict[str, Tensor]:
        """Start a new episode in every environment: seeded with ``seed`` when given
        (environment i with ``seed + i``), else with the constructor's seed on the
        first call and unseeded after it."""
        if seed is None and not self._seeded:
            seed = self.seed
        obs, _ = self.env.reset(seed=seed)
        self._seeded = True
        self.frames, self.episode_logs = 0, {}
        self._last = np.zeros(self.n, bool)
        self._episode_step = np.zeros(self.n, int)
        zeros = np.zeros(self.n, bool)
        row = self._rows(obs, np.zeros(self.n, np.float32), zeros, zeros, np.ones(self.n, bool))
        return self._finite(row, "on reset")

    def step(self, action: Tensor) -> dict[str, Tensor]:
        """One step of every environment with ``action [n, A]``; see the class doc."""
        obs, reward, terminated, truncated, info = self.env.step(
            env_action(action, self.action_space)
        )
        first = self._last  # these environments reset on this step (NEXT_STEP autoreset)
        self.step_count += 1
        self._episode_step = np.where(first, 0, self._episode_step + 1)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        self._last = terminated | truncated
        frames = np.asarray(info.get("frames", np.ones(self.n, int)))
        mask = np.asarray(info.get("_frames", ~first))
        self.frames = int(frames[mask & ~first].sum())
        self.episode_logs = {
            i: {
                k[4:]: float(info[k][i])
                for k in info
                if k.startswith("log_") and np.asarray(info.get("_" + k, True)).flat[i]
            }
            for i in np.flatnonzero(self._last)
        }
        row = self._rows(obs, reward, terminated, truncated, first)
        return self._finite(row, f"at its step {self.step_count}")

    def _finite(self, row: dict[str, Tensor], when: str) -> dict[str, Tensor]:
        """``row`` with every float value finite: a non-finite one raises (naming the
        environment, ``when``, the episode step and the key) or, with ``sanitize``, is
        replaced and counted. A few cheap host checks per row (CPU tensors)."""
        space = self.env.single_observation_space
        for key, value in row.items():
            if not value.is_floating_point():
                continue
            bad = ~torch.isfinite(value)
            if not bad.any():
                continue
            if not self.sanitize:
                raise self._nonfinite_error(key, value, bad, when)
            bounds = None
            if key in space.spaces and hasattr(space[key], "low"):
                bounds = (torch.as_tensor(space[key].low), torch.as_tensor(space[key].high))
            row[key] = finite_values(value, bad, bounds)
            self.sanitized += int(bad.sum())
        return row

    def _nonfinite_error(self, key: str, value: Tensor, bad: Tensor, when: str) -> UserError:
        i = int(torch.nonzero(bad.reshape(self.n, -1).any(1))[0, 0])  # the first such env
        first = float(value[i][bad[i]].reshape(-1)[0])
        return UserError(
            f"environment {self.env_id!r} (#{i} of {self.n}, seed {self.seed + i}) returned "
            f"{first} in {key!r} {when} (step {int(self._episode_step[i])} of its episode); "
            "stopped before it reaches the replay. Fix the environment, or pass --sanitize "
            "to replace NaN by 0 and inf by the float32 limits (counted as env/sanitized)"
        )

    def random_action(self) -> Tensor:
        """A uniformly random agent-space action ``[n, A]``."""
        if self.discrete:
            index = torch.randint(self.action_dim, (self.n,))
            return torch.nn.functional.one_hot(index, self.action_dim).float()
        return torch.rand(self.n, self.action_dim) * 2.0 - 1.0

    def close(self) -> None:
        self.env.close()


def env_action(action: Tensor, space: gym.Space) -> np.ndarray:
    """Agent actions ``[N, A]`` in the environment's own ``space``: for ``Discrete``, the
    one-hot's index plus the space's ``start``, ``[N]`` int64; for ``Box``, [-1, 1]
    (clamped) rescaled to ``[low, high]``, ``[N, A]`` float32 (clipped to the bounds
    against rounding)."""
    if isinstance(space, gym.spaces.Discrete):
        return action.argmax(-1).cpu().numpy().astype(np.int64) + int(space.start)
    low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    a = action.clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)
    return np.clip((a + 1.0) / 2.0 * (high - low) + low, low, high)


def finite_values(x: Tensor, bad: Tensor, bounds: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``x`` with its ``bad`` (non-finite) entries replaced: NaN -> 0, +inf -> the
    dtype's largest finite value, -inf -> its lowest (``torch.nan_to_num``), then
    clipped to ``bounds = (low, high)`` (an observation space's Box, shapes broadcast
    to ``x``; infinite bounds clip nothing). Entries not ``bad`` are left as they are,
    even outside the bounds."""
    fixed = torch.nan_to_num(x, nan=0.0)
    if bounds is not None:
        low, high = (b.to(x.dtype) for b in bounds)
        fixed = torch.maximum(torch.minimum(fixed, high), low)
    return torch.where(bad, fixed, x)


def video_frame(image: Tensor | np.ndarray) -> np.ndarray:
    """An observation image ``[C, H, W]`` (uint8) as an RGB frame ``[H, W, 3]`` uint8:
    RGB as it is, one channel as grey, other channel counts (MinAtar's object grids)
    coloured with a fixed palette, one colour per channel."""
    x = np.asarray(image)
    c = x.shape[0]
    if c == 3:
        return np.ascontiguousarray(x.transpose(1, 2, 0))
    if c == 1:
        return np.repeat(x.transpose(1, 2, 0), 3, -1)
    hues = np.linspace(0.0, 1.0, c, endpoint=False)
    palette = np.stack([_hue_rgb(h) for h in hues])  # [C, 3]
    weights = x.astype(np.float32) / 255.0  # [C, H, W]
    rgb = np.einsum("chw,cd->hwd", weights, palette)
    return np.clip(rgb * 255.0, 0, 255).astype(np.uint8)


def _hue_rgb(h: float) -> np.ndarray:
    """A saturated RGB colour in [0, 1]^3 for hue ``h`` in [0, 1)."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
