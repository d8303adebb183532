"""Atari adapter on the Arcade Learning Environment (``atari100k/GAME``).

Protocol, after the DreamerV3 reference (danijar/dreamerv3 ``embodied/envs/atari.py``
with ``configs.yaml``'s ``atari100k`` settings):

- image 64x64 colour (``gray: False``), uint8 ``(3, 64, 64)`` under ``"image"``;
  the 210x160 screen is max-pooled over the last 2 frames of each step and resized
  with PIL's bilinear filter;
- frame skip (action repeat) 4, rewards summed, not clipped;
- sticky actions off (``repeat_action_probability`` 0), the minimal ("needed") action
  set, up to 30 random no-op frames after each reset (not counted in the cap, as in
  the reference), lives unused (an episode is a whole game);
- episode cap 108000 frames. The reference sets ``is_terminal = is_last``, so hitting
  the cap counts as terminal; we do the same (``terminated=True``) unless the adapter
  is built with ``cap_is_terminal=False``, which reports ``truncated`` instead.
- Seeding: a numpy generator seeded from ``seed`` draws the ALE ``random_seed`` (the ROM
  is reloaded to apply it) and the no-op counts; ``reset(seed=s)`` reseeds both.

Difference: when an episode ends before the last frames of a step, the reference pools
screens of the previous step only; we also capture the ending frame into the pool.
``GAME`` is an ale-py ROM id; hyphens are read as underscores (``ms-pacman``) and
underscores may be left out (``mspacman``, ``james_bond`` -> ``jamesbond``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from wmblocks.envs.common import IMAGE, SuiteEnv, hwc_to_chw, image_space, require, resize_pil
from wmblocks.errors import UserError

ATARI100K_GAMES = (
    "alien", "amidar", "assault", "asterix", "bank_heist", "battle_zone", "boxing",
    "breakout", "chopper_command", "crazy_climber", "demon_attack", "freeway", "frostbite",
    "gopher", "hero", "jamesbond", "kangaroo", "krull", "kung_fu_master", "ms_pacman",
    "pong", "private_eye", "qbert", "road_runner", "seaquest", "up_n_down",
)  # fmt: skip

GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114])


def rom_id(game: str, env_id: str | None = None) -> str:
    """The ale-py ROM id of ``game`` (``ms-pacman`` -> ``ms_pacman``); raises
    :class:`UserError` listing the ROM ids when there is none."""
    require("ale_py", env_id or f"atari100k/{game}", "atari")
    from ale_py import roms

    ids = roms.get_all_rom_ids()
    name = game.lower().replace("-", "_")
    if name in ids:
        return name
    squashed = {i.replace("_", ""): i for i in ids}
    if name.replace("_", "") in squashed:
        return squashed[name.replace("_", "")]
    raise UserError(
        f"unknown Atari game {game!r}; the Atari 100k games are "
        f"{', '.join(ATARI100K_GAMES)}; ale-py has these ROMs: {', '.join(sorted(ids))}"
    )


class AtariEnv(SuiteEnv):
    """An ALE game under the atari100k protocol of the module docstring.

    The action repeat of :class:`SuiteEnv` is the frame skip: every step runs
    ``frame_skip`` ALE frames and pools the last ``pooling`` screens.
    """

    def __init__(
        self,
        game: str,
        seed: int = 0,
        frame_skip: int = 4,
        noops: int = 30,
        sticky: float = 0.0,
        actions: str = "needed",
        length: int = 108000,
        pooling: int = 2,
        gray: bool = False,
        cap_is_terminal: bool = True,
        env_id: str | None = None,
    ):
        super().__init__(frame_skip)
        if actions not in ("needed", "all"):
            raise UserError(f"actions must be 'needed' or 'all', got {actions!r}")
        if pooling < 1:
            raise UserError(f"pooling must be >= 1, got {pooling}")
        self.env_id = env_id or f"atari100k/{game}"
        ale_py = require("ale_py", self.env_id, "atari")
        from ale_py import roms

        self.game = rom_id(game, self.env_id)
        self._rom = roms.get_rom_path(self.game)
        self.noops, self.length, self.pooling = int(noops), int(length), int(pooling)
        self.gray, self.cap_is_terminal = gray, cap_is_terminal
        self.ale = ale_py.ALEInterface()
        self.ale.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale.setFloat("repeat_action_probability", float(sticky))
        self._noop = ale_py.Action.NOOP
        self._seed_all(int(seed))
        action_set = (
            self.ale.getMinimalActionSet() if actions == "needed" else self.ale.getLegalActionSet()
        )
        self._actions = list(action_set)
        self.action_space = gym.spaces.Discrete(len(self._actions))
        self.observation_space = gym.spaces.Dict({IMAGE: image_space(1 if gray else 3)})
        height, width = self.ale.getScreenDims()
        self._screens = [np.zeros((height, width, 3), np.uint8) for _ in range(self.pooling)]
        self._newest = 0
        self._duration = 0

    def action_meanings(self) -> list[str]:
        """The ALE names of the actions, by index."""
        return [a.name for a in self._actions]

    def _seed_all(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self.ale.setInt("random_seed", int(self._rng.integers(0, 2**31)))
        self.ale.loadROM(str(self._rom))

    def _capture(self) -> None:
        self._newest = (self._newest + 1) % self.pooling
        self.ale.getScreenRGB(self._screens[self._newest])

    def _reset_raw(self, seed):
        if seed is not None:
            self._seed_all(seed)
        self.ale.reset_game()
        for _ in range(int(self._rng.integers(self.noops + 1))):
            self.ale.act(self._noop)
            if self.ale.game_over():
                self.ale.reset_game()
        self._capture()
        for screen in self._screens:
            np.copyto(screen, self._screens[self._newest])
        self._duration = 0

    def _act(self, action, index):
        reward = float(self.ale.act(self._actions[action]))
        self._duration += 1
        over = self.ale.game_over()
        capped = self._duration >= self.length
        if index >= self.action_repeat - self.pooling or over or capped:
            self._capture()
        if over:
            return reward, True, False
        if capped:
            return reward, self.cap_is_terminal, not self.cap_is_terminal
        return reward, False, False

    def _image(self) -> np.ndarray:
        image = resize_pil(np.max(np.stack(self._screens), axis=0))
        if self.gray:
            image = (image * GRAY_WEIGHTS).sum(-1).astype(np.uint8)[:, :, None]
        return image

    def _observe(self):
        return {IMAGE: hwc_to_chw(self._image())}

    def _frame(self):
        image = self._image()
        return np.repeat(image, 3, axis=2) if self.gray else image


def make_atari100k(game: str, seed: int = 0, frame_skip: int = 4) -> AtariEnv:
    """An ALE game with the DreamerV3 atari100k settings (see the module docstring)."""
    return AtariEnv(game, seed=seed, frame_skip=frame_skip, env_id=f"atari100k/{game}")
