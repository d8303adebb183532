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
    return gym.wrappers.TimeLimit(env, episode_steps) if episode_steps > 0 else env


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
    """

    def __init__(
        self,
        env_id: str,
        seed: int = 0,
        n: int = 1,
        action_repeat: int = 0,
        parallel: bool | None = None,
        episode_steps: int = 0,
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
        if not self.discrete:
            self._low = self.action_space.low.astype(np.float32)
            self._high = self.action_space.high.astype(np.float32)
        self.frames = 0
        self.episode_logs: dict[int, dict[str, float]] = {}
        self._last = np.zeros(n, bool)
        self._seeded = False

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

    def reset(self) -> dict[str, Tensor]:
        """Start a new episode in every environment (seeded on the first call)."""
        obs, _ = self.env.reset(seed=None if self._seeded else self.seed)
        self._seeded = True
        self.frames, self.episode_logs = 0, {}
        self._last = np.zeros(self.n, bool)
        zeros = np.zeros(self.n, bool)
        return self._rows(obs, np.zeros(self.n, np.float32), zeros, zeros, np.ones(self.n, bool))

    def step(self, action: Tensor) -> dict[str, Tensor]:
        """One step of every environment with ``action [n, A]``; see the class doc."""
        if self.discrete:
            env_action = action.argmax(-1).cpu().numpy()
        else:
            a = action.clamp(-1.0, 1.0).cpu().numpy().astype(np.float32)
            env_action = (a + 1.0) / 2.0 * (self._high - self._low) + self._low
        obs, reward, terminated, truncated, info = self.env.step(env_action)
        first = self._last  # these environments reset on this step (NEXT_STEP autoreset)
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
        return self._rows(obs, reward, terminated, truncated, first)

    def random_action(self) -> Tensor:
        """A uniformly random agent-space action ``[n, A]``."""
        if self.discrete:
            index = torch.randint(self.action_dim, (self.n,))
            return torch.nn.functional.one_hot(index, self.action_dim).float()
        return torch.rand(self.n, self.action_dim) * 2.0 - 1.0

    def close(self) -> None:
        self.env.close()


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
