"""Environments through torchrl's gymnasium wrapper, checked and adapted to the
Dreamer data layout (:mod:`wmblocks.keys`)."""

from __future__ import annotations

import gymnasium as gym
import torch
from torch import Tensor

from wmblocks import keys
from wmblocks.errors import UserError
from wmblocks.presets import action_size


def _check_observation_space(env_id: str, space) -> tuple[int, ...]:
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return tuple(space.shape)
    raise UserError(
        f"environment {env_id!r} has observation space {space}; the recipes support "
        "1-D Box observations (image observations come with a later version)"
    )


class Env:
    """A gymnasium environment behind torchrl's ``GymWrapper``, speaking Dreamer rows.

    ``reset()`` and ``step(action)`` return one step's row: ``observation``
    ``[K]``, ``reward`` (received on arriving here; 0 after reset), ``is_first``,
    ``is_terminal``, and ``is_last`` (terminated or truncated). Actions are given in
    the agent's space: one-hot ``[A]`` for Discrete, ``[-1, 1]^A`` for Box (rescaled
    here to the Box bounds).

    ``action_repeat`` k: each ``step`` applies the action for k environment frames
    (fewer if the episode ends) and returns the summed reward (V1 and V2 use 2 on DMC,
    4 on Atari); ``frames`` holds how many frames the last ``step`` took.
    """

    def __init__(self, env_id: str, seed: int = 0, action_repeat: int = 1):
        if action_repeat < 1:
            raise UserError(f"action repeat must be >= 1, got {action_repeat}")
        self.action_repeat, self.frames = action_repeat, 0
        from torchrl.envs import GymWrapper

        try:
            raw = gym.make(env_id)
        except gym.error.Error as e:
            raise UserError(f"cannot make gymnasium environment {env_id!r}: {e}") from None
        self.env_id = env_id
        self.obs_shape = _check_observation_space(env_id, raw.observation_space)
        self.action_space = raw.action_space
        self.action_dim, self.discrete = action_size(raw.action_space)
        if not self.discrete:
            self._low = torch.as_tensor(raw.action_space.low, dtype=torch.float32)
            self._high = torch.as_tensor(raw.action_space.high, dtype=torch.float32)
        self.env = GymWrapper(raw)
        self.env.set_seed(seed)
        self._td = None

    @property
    def obs_shapes(self) -> dict[str, tuple[int, ...]]:
        return {keys.OBS: self.obs_shape}

    def _row(self, td, reward: float, first: bool) -> dict[str, Tensor]:
        terminated = bool(td["terminated"].item())
        return {
            keys.OBS: td["observation"].to(torch.float32),
            keys.REWARD: torch.tensor(reward, dtype=torch.float32),
            keys.IS_FIRST: torch.tensor(first),
            keys.IS_TERMINAL: torch.tensor(terminated),
            "is_last": torch.tensor(terminated or bool(td["truncated"].item())),
        }

    def reset(self) -> dict[str, Tensor]:
        self._td = self.env.reset()
        return self._row(self._td, 0.0, True)

    def step(self, action: Tensor) -> dict[str, Tensor]:
        if self.discrete:
            env_action = action.round().to(torch.int64)
        else:
            env_action = (action.clamp(-1.0, 1.0) + 1.0) / 2.0 * (
                self._high - self._low
            ) + self._low
        reward, nxt, self.frames = 0.0, self._td, 0
        for _ in range(self.action_repeat):
            td = nxt.clone(False)
            td["action"] = env_action
            nxt = self.env.step(td)["next"]
            reward += float(nxt["reward"].item())
            self.frames += 1
            if nxt["terminated"].item() or nxt["truncated"].item():
                break
        self._td = nxt
        return self._row(nxt, reward, False)

    def random_action(self) -> Tensor:
        if self.discrete:
            index = torch.randint(self.action_dim, ())
            return torch.nn.functional.one_hot(index, self.action_dim).float()
        return torch.rand(self.action_dim) * 2.0 - 1.0

    def close(self) -> None:
        self.env.close()
