"""What every adapter of :mod:`wmblocks.envs` shares, and the plain-gymnasium adapter.

The contract (see :func:`wmblocks.envs.make`):

- ``observation_space`` is a :class:`gymnasium.spaces.Dict` of Boxes: ``"image"``, uint8
  ``(C, 64, 64)`` channel-first, and/or ``"observation"``, float32 ``(K,)``.
- ``action_space`` is :class:`~gymnasium.spaces.Discrete` (actions are ints) or a 1-D
  :class:`~gymnasium.spaces.Box`.
- ``step`` repeats the action ``action_repeat`` times (fewer when the episode ends),
  sums the rewards and returns ``(obs, reward: float, terminated: bool, truncated: bool,
  info)``; ``info["frames"]`` counts the environment frames the call consumed (0 after
  ``reset``). Numbers under keys ``log_*`` are episode metrics (the loop logs the value
  of an episode's last step).
- ``reset(seed=s)`` makes everything after it deterministic; ``reset(seed=None)``
  continues the random stream, which the ``seed`` given to the constructor starts.
- ``render()`` returns the current frame as an HWC uint8 RGB array.

:class:`SuiteEnv` implements the repeat loop and the bookkeeping once; an adapter
provides one-frame hooks (``_reset_raw``, ``_act``, ``_observe``).
"""

from __future__ import annotations

import abc
import importlib
from typing import Any

import gymnasium as gym
import numpy as np

from wmblocks.errors import UserError

IMAGE = "image"
VECTOR = "observation"
IMAGE_SIZE = 64

EXTRA_NOTES = {
    "dmc": " (and for rendering the Debian packages libegl1 libegl-mesa0, or libosmesa6)",
}


def require(package: str, env_id: str, extra: str) -> Any:
    """Import ``package`` (a top-level package), or raise a :class:`UserError` that
    names the extra to install for ``env_id``.

    The top-level package is imported by name first so that a package hidden with
    ``sys.modules[package] = None`` counts as missing even when submodules are cached.
    """
    try:
        return importlib.import_module(package)
    except ImportError as e:
        note = EXTRA_NOTES.get(extra, "")
        raise UserError(
            f"{env_id} needs the {extra} extra: pip install -e '.[{extra}]'{note} "
            f"(importing {package!r} failed: {e})"
        ) from None


def image_space(channels: int) -> gym.spaces.Box:
    """The Box of a channel-first uint8 image ``(channels, 64, 64)``."""
    return gym.spaces.Box(0, 255, (channels, IMAGE_SIZE, IMAGE_SIZE), np.uint8)


def vector_space(size: int, low=-np.inf, high=np.inf) -> gym.spaces.Box:
    """The Box of a float32 vector ``(size,)``."""
    return gym.spaces.Box(
        np.broadcast_to(np.asarray(low, np.float32), (size,)),
        np.broadcast_to(np.asarray(high, np.float32), (size,)),
        (size,),
        np.float32,
    )


def resize_pil(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Resize an HWC uint8 image to ``size x size`` with PIL's bilinear filter (as the
    DreamerV3 reference's ``resize='pillow'``)."""
    from PIL import Image

    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def hwc_to_chw(image: np.ndarray) -> np.ndarray:
    """HWC to contiguous CHW."""
    return np.ascontiguousarray(np.transpose(image, (2, 0, 1)))


class SuiteEnv(gym.Env, abc.ABC):
    """Base class of the adapters: the action-repeat loop, frame counting, seeding
    bookkeeping and the episode-end guard.

    Subclasses set ``observation_space`` and ``action_space`` and implement:

    - ``_reset_raw(seed: int | None)``: start an episode; reseed everything first when
      ``seed`` is not None.
    - ``_act(action, index) -> (reward, terminated, truncated)``: advance one frame;
      ``index`` is the position within the current repeat (0 .. action_repeat - 1).
    - ``_observe() -> dict``: the observation after the last frame.
    - ``_frame() -> np.ndarray``: the current HWC uint8 frame for :meth:`render`.
    - optionally ``_episode_info() -> dict`` with ``log_*`` metrics, present with the
      same keys after ``reset`` and after every ``step``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, action_repeat: int):
        if int(action_repeat) < 1:
            raise UserError(f"action repeat must be >= 1, got {action_repeat}")
        self.action_repeat = int(action_repeat)
        self.render_mode = "rgb_array"
        self._needs_reset = True

    # -- gymnasium API -----------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode; ``seed`` reseeds every random source of the environment."""
        super().reset(seed=seed)
        self._reset_raw(None if seed is None else int(seed))
        self._needs_reset = False
        return self._observe(), {"frames": 0, **self._episode_info()}

    def step(self, action):
        """Apply ``action`` for ``action_repeat`` frames (fewer if the episode ends)."""
        if self._needs_reset:
            raise RuntimeError("step() called before reset() or after the episode ended")
        action = self._check_action(action)
        reward, terminated, truncated, frames = 0.0, False, False, 0
        for index in range(self.action_repeat):
            r, terminated, truncated = self._act(action, index)
            reward += float(r)
            frames += 1
            if terminated or truncated:
                break
        self._needs_reset = bool(terminated or truncated)
        info = {"frames": frames, **self._episode_info()}
        return self._observe(), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> np.ndarray:
        """The current frame, HWC uint8 RGB."""
        return self._frame()

    # -- helpers -----------------------------------------------------------------------

    def _check_action(self, action):
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            a = int(np.asarray(action).reshape(()))
            if not 0 <= a < space.n:
                raise ValueError(f"action {a} outside Discrete({space.n})")
            return a
        a = np.asarray(action, dtype=np.float64).reshape(space.shape)
        if not np.isfinite(a).all():
            raise ValueError(f"non-finite action {a}")
        return np.clip(a, space.low, space.high)

    def _episode_info(self) -> dict:
        return {}

    @abc.abstractmethod
    def _reset_raw(self, seed: int | None) -> None:
        """Start a new episode of the wrapped environment (reseeded when ``seed``)."""

    @abc.abstractmethod
    def _act(self, action, index: int) -> tuple[float, bool, bool]:
        """One frame of ``action``: ``(reward, terminated, truncated)``."""

    @abc.abstractmethod
    def _observe(self) -> dict[str, np.ndarray]:
        """The current observation dict, as the observation space says."""

    @abc.abstractmethod
    def _frame(self) -> np.ndarray:
        """The current frame, HWC uint8 RGB."""


# -- plain gymnasium ids ---------------------------------------------------------------


def _is_vector(space) -> bool:
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 1


def _is_image(space) -> bool:
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and space.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE)
    )


SUPPORTED_SPACES = (
    "a 1-D Box, a uint8 (64, 64, C) Box image, or a Dict of 1-D Boxes and at most one "
    "uint8 (64, 64, C) image"
)


class GymEnv(SuiteEnv):
    """A registered gymnasium environment, adapted to the contract.

    Observations: a 1-D Box becomes ``{"observation": float32}``; a uint8 ``(64, 64, C)``
    image becomes ``{"image": uint8 (C, 64, 64)}``; a Dict may mix 1-D Boxes (flattened
    and concatenated in sorted key order into ``"observation"``, as the dmc adapter
    does) and at most one such image. Anything else raises :class:`UserError`.
    Actions: Discrete (starting at 0) or a 1-D Box. ``terminated``/``truncated`` are the
    wrapped environment's (its registered TimeLimit truncates). Of the wrapped info,
    only numeric scalars under ``log_*`` keys are passed on.
    """

    def __init__(self, env_id: str, seed: int = 0, action_repeat: int = 1):
        super().__init__(action_repeat)
        self.env_id = env_id
        kwargs = _rgb_array_kwargs(env_id)
        try:
            self.env = gym.make(env_id, **kwargs)
        except (gym.error.Error, ImportError) as e:
            raise UserError(f"cannot make gymnasium environment {env_id!r}: {e}") from None
        space = self.env.observation_space
        parts = space.spaces if isinstance(space, gym.spaces.Dict) else {None: space}
        self._vector_keys, self._image_key = [], None
        lows, highs = [], []
        for key in sorted(parts, key=str):
            sub = parts[key]
            if _is_vector(sub):
                self._vector_keys.append(key)
                lows.append(np.asarray(sub.low, np.float32))
                highs.append(np.asarray(sub.high, np.float32))
            elif _is_image(sub) and self._image_key is None:
                self._image_key = key
                self._channels = sub.shape[2]
            else:
                self.env.close()
                raise UserError(
                    f"environment {env_id!r} has observation space {space}; supported are "
                    f"{SUPPORTED_SPACES}"
                )
        spaces = {}
        if self._image_key is not None:
            spaces[IMAGE] = image_space(self._channels)
        if self._vector_keys:
            low, high = np.concatenate(lows), np.concatenate(highs)
            spaces[VECTOR] = vector_space(low.size, low, high)
        self.observation_space = gym.spaces.Dict(spaces)
        act = self.env.action_space
        if isinstance(act, gym.spaces.Discrete) and int(act.start) == 0:
            self.action_space = gym.spaces.Discrete(int(act.n))
        elif _is_vector(act):
            self.action_space = act
        else:
            self.env.close()
            raise UserError(
                f"environment {env_id!r} has action space {act}; supported are Discrete "
                "(starting at 0) and 1-D Box"
            )
        self._seed = int(seed)
        self._obs = None
        self._log: dict[str, float] = {}

    def _reset_raw(self, seed):
        if seed is None and self._seed is not None:
            seed = self._seed
        self._seed = None
        self._obs, info = self.env.reset(seed=seed)
        self._log = _log_entries(info)

    def _act(self, action, index):
        self._obs, reward, terminated, truncated, info = self.env.step(action)
        self._log = _log_entries(info)
        return float(reward), bool(terminated), bool(truncated)

    def _check_action(self, action):
        action = super()._check_action(action)
        if isinstance(self.action_space, gym.spaces.Box):
            action = action.astype(self.action_space.dtype)
        return action

    def _observe(self):
        obs = self._obs
        parts = obs if isinstance(obs, dict) else {None: obs}
        out = {}
        if self._image_key is not None:
            out[IMAGE] = hwc_to_chw(np.asarray(parts[self._image_key], np.uint8))
        if self._vector_keys:
            out[VECTOR] = np.concatenate(
                [np.asarray(parts[k], np.float32).reshape(-1) for k in self._vector_keys]
            )
        return out

    def _episode_info(self):
        return dict(self._log)

    def _frame(self):
        if self.env.render_mode == "rgb_array":
            try:
                return np.asarray(self.env.render(), np.uint8)
            except gym.error.DependencyNotInstalled as e:
                raise UserError(f"cannot render {self.env_id!r}: {e}") from None
        if self._image_key is not None:
            return np.asarray(self._observe()[IMAGE]).transpose(1, 2, 0)
        raise UserError(f"environment {self.env_id!r} cannot render rgb_array frames")

    def close(self):
        """Close the wrapped environment."""
        self.env.close()


def _rgb_array_kwargs(env_id: str) -> dict:
    """``render_mode="rgb_array"`` if the registered environment supports it."""
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as e:
        from wmblocks.envs import SUITES

        raise UserError(
            f"unknown environment {env_id!r}: neither a wmblocks suite id "
            f"(SUITE/TASK with SUITE one of {', '.join(SUITES)}) nor a registered "
            f"gymnasium id ({e})"
        ) from None
    creator = spec.entry_point
    try:
        if isinstance(creator, str):
            creator = gym.envs.registration.load_env_creator(creator)
        modes = getattr(creator, "metadata", {}).get("render_modes") or []
    except Exception:  # noqa: BLE001 - a broken entry point is reported by gym.make
        modes = []
    return {"render_mode": "rgb_array"} if "rgb_array" in modes else {}


def _log_entries(info: dict) -> dict[str, float]:
    out = {}
    for key, value in info.items():
        if isinstance(key, str) and key.startswith("log_") and np.ndim(value) == 0:
            if isinstance(value, (int, float, np.number, bool, np.bool_)):
                out[key] = value
    return out
