"""Crafter adapter (``crafter/reward``, ``crafter/noreward``).

Protocol, after the DreamerV3 reference (danijar/dreamerv3 ``embodied/envs/crafter.py``,
``configs.yaml``: ``crafter: {size: [64, 64]}``) and Crafter's own defaults:

- image 64x64 RGB, uint8 ``(3, 64, 64)`` under ``"image"``; 17 discrete actions;
- action repeat 1; episodes last at most 10000 steps (Crafter's ``length``);
- ``terminated`` when the player dies (Crafter's ``info['discount'] == 0``), otherwise
  ``truncated`` when Crafter reports the episode done (the step limit);
- ``crafter/noreward`` returns reward 0 (the unsupervised setting);
- ``info`` on every step (and after reset) holds ``log_achievement_<name>`` for all 22
  achievements: 1 if unlocked at least once this episode, else 0, and
  ``log_true_return``: the episode's summed Crafter reward, counted even for
  ``noreward``. Crafter's score over many episodes is :func:`score`.
- Seeding: Crafter generates each world at reset from ``hash((seed, episode))``; the
  environment is rebuilt with ``crafter.Env(seed=s)`` on ``reset(seed=s)``.

Difference: the reference logs the achievement *counts* (``logs: False`` by default) and
a per-step ``log_reward``; we log per-episode unlock flags and the summed true reward,
because our loop logs the value of an episode's last step.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from wmblocks.envs.common import IMAGE, IMAGE_SIZE, SuiteEnv, hwc_to_chw, image_space, require
from wmblocks.errors import UserError

TASKS = ("reward", "noreward")


def achievements() -> list[str]:
    """Crafter's 22 achievement names (needs the crafter package)."""
    require("crafter", "crafter/reward", "crafter")
    import crafter

    return list(crafter.constants.achievements)


def score(unlocked) -> float:
    """Crafter's score in percent: ``exp(mean_i ln(1 + s_i)) - 1`` over the achievements'
    success rates ``s_i`` in percent (Hafner 2021, "Benchmarking the Spectrum of Agent
    Capabilities"). ``unlocked``: array ``[episodes, 22]`` of 0/1 (or success rates
    per achievement when 1-D, in [0, 1])."""
    unlocked = np.asarray(unlocked, np.float64)
    rates = unlocked.mean(0) if unlocked.ndim == 2 else unlocked
    return float(np.exp(np.mean(np.log(1.0 + 100.0 * rates))) - 1.0)


class CrafterEnv(SuiteEnv):
    """Crafter with the protocol of the module docstring."""

    def __init__(
        self,
        reward: bool = True,
        seed: int = 0,
        action_repeat: int = 1,
        length: int = 10000,
        env_id: str | None = None,
    ):
        super().__init__(action_repeat)
        self.env_id = env_id or ("crafter/reward" if reward else "crafter/noreward")
        self._crafter = require("crafter", self.env_id, "crafter")
        self.reward, self.length = bool(reward), int(length)
        self._names = list(self._crafter.constants.achievements)
        self._build(int(seed))
        self.observation_space = gym.spaces.Dict({IMAGE: image_space(3)})
        self.action_space = gym.spaces.Discrete(int(self.env.action_space.n))
        self._image = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        self._unlocked = dict.fromkeys(self._names, 0)
        self._true_return = 0.0

    def _build(self, seed: int) -> None:
        self.env = self._crafter.Env(
            size=(IMAGE_SIZE, IMAGE_SIZE), reward=self.reward, length=self.length, seed=seed
        )

    @property
    def action_names(self) -> list[str]:
        """Crafter's action names, by index."""
        return list(self._crafter.constants.actions)

    def _reset_raw(self, seed):
        if seed is not None:
            self._build(seed)
        self._image = self.env.reset()
        self._unlocked = dict.fromkeys(self._names, 0)
        self._true_return = 0.0

    def _act(self, action, index):
        self._image, reward, done, info = self.env.step(action)
        self._true_return += float(info["reward"])
        for name, count in info["achievements"].items():
            if count > 0:
                self._unlocked[name] = 1
        terminated = float(info["discount"]) == 0.0
        return float(reward), terminated, bool(done) and not terminated

    def _observe(self):
        return {IMAGE: hwc_to_chw(np.asarray(self._image, np.uint8))}

    def _episode_info(self):
        info = {f"log_achievement_{k}": int(v) for k, v in self._unlocked.items()}
        info["log_true_return"] = float(self._true_return)
        return info

    def _frame(self):
        return np.asarray(self._image, np.uint8)


def make_crafter(task: str, seed: int = 0, action_repeat: int = 1) -> CrafterEnv:
    """``task`` is ``reward`` or ``noreward``."""
    if task not in TASKS:
        raise UserError(f"unknown Crafter task {task!r}; the tasks are {', '.join(TASKS)}")
    return CrafterEnv(
        reward=task == "reward", seed=seed, action_repeat=action_repeat, env_id=f"crafter/{task}"
    )
