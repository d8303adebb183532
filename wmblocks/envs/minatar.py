"""MinAtar adapter (``minatar/GAME``: breakout, asterix, freeway, seaquest,
space_invaders).

No Dreamer paper evaluates MinAtar, so there is no DreamerV3 reference protocol; we
keep MinAtar's own defaults (Young & Tian 2019, the ``minatar`` package):

- the 10x10xC boolean grid (C: 4 breakout, 4 asterix, 7 freeway, 10 seaquest,
  6 space_invaders) is upsampled by nearest neighbour (pixel centres: pixel ``y`` reads
  cell ``floor((y + 0.5) * 10 / 64)``) to a uint8 image ``(C, 64, 64)`` with values
  0/255 under ``"image"``, so the image encoders of the recipes apply unchanged;
- sticky actions with probability 0.1 (MinAtar's default), difficulty ramping on,
  the game's minimal action set;
- action repeat 1; an episode ends ``terminated`` on the game's terminal state, and
  ``truncated`` after 10000 frames (our choice: MinAtar has no time limit of its own,
  and a cap keeps a good agent's episodes finite);
- seeding: MinAtar's one numpy RandomState (game and sticky actions) is seeded at
  construction and reseeded by ``reset(seed=s)``, which also clears the sticky
  action memory.

``render()`` colours the channels with a fixed palette (black background).
"""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np

from wmblocks.envs.common import IMAGE, IMAGE_SIZE, SuiteEnv, image_space, require
from wmblocks.errors import UserError

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
GRID = 10

# One colour per channel, in channel order (up to 10 channels: seaquest).
PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
    ],
    np.uint8,
)

_CELL = ((np.arange(IMAGE_SIZE) + 0.5) * GRID / IMAGE_SIZE).astype(np.int64)


def upsample(grid: np.ndarray) -> np.ndarray:
    """The ``(10, 10, C)`` boolean grid as a ``(C, 64, 64)`` uint8 image of 0/255 (nearest
    neighbour)."""
    image = np.asarray(grid, bool)[_CELL][:, _CELL]
    return np.ascontiguousarray(np.transpose(image, (2, 0, 1))).astype(np.uint8) * np.uint8(255)


def colorize(grid: np.ndarray) -> np.ndarray:
    """An HWC uint8 RGB picture of the grid: the colour of the highest set channel."""
    grid = np.asarray(grid, bool)
    channels = grid.shape[-1]
    index = np.max(grid * np.arange(1, channels + 1), axis=-1)
    colours = np.concatenate([np.zeros((1, 3), np.uint8), PALETTE[:channels]])
    return colours[index][_CELL][:, _CELL]


def _import_minatar(env_id: str):
    # minatar logs a warning at import when matplotlib/seaborn (only used for its own
    # display) are missing; keep that noise out.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        return require("minatar", env_id, "minatar")
    finally:
        logging.disable(previous)


class MinAtarEnv(SuiteEnv):
    """A MinAtar game with the protocol of the module docstring."""

    def __init__(
        self,
        game: str,
        seed: int = 0,
        action_repeat: int = 1,
        sticky: float = 0.1,
        length: int = 10000,
        ramping: bool = True,
        env_id: str | None = None,
    ):
        super().__init__(action_repeat)
        self.env_id = env_id or f"minatar/{game}"
        minatar = _import_minatar(self.env_id)
        if game not in GAMES:
            raise UserError(f"unknown MinAtar game {game!r}; the games are {', '.join(GAMES)}")
        self.game = minatar.Environment(
            env_name=game, sticky_action_prob=float(sticky), difficulty_ramping=ramping
        )
        self.game.seed(int(seed))
        self.length = int(length)
        self._actions = list(self.game.minimal_action_set())
        self.action_space = gym.spaces.Discrete(len(self._actions))
        self.channels = int(self.game.state_shape()[2])
        self.observation_space = gym.spaces.Dict({IMAGE: image_space(self.channels)})
        self._frames = 0

    def grid(self) -> np.ndarray:
        """The raw MinAtar state: a ``(10, 10, C)`` boolean grid."""
        return np.asarray(self.game.state(), bool)

    def _reset_raw(self, seed):
        if seed is not None:
            self.game.seed(seed)
            self.game.last_action = 0
        self.game.reset()
        self._frames = 0

    def _act(self, action, index):
        reward, terminal = self.game.act(self._actions[action])
        self._frames += 1
        if terminal:
            return float(reward), True, False
        return float(reward), False, self._frames >= self.length

    def _observe(self):
        return {IMAGE: upsample(self.grid())}

    def _frame(self):
        return colorize(self.grid())


def make_minatar(game: str, seed: int = 0, action_repeat: int = 1) -> MinAtarEnv:
    """``game`` in :data:`GAMES` (hyphens read as underscores: ``space-invaders``)."""
    name = game.lower().replace("-", "_")
    return MinAtarEnv(name, seed=seed, action_repeat=action_repeat, env_id=f"minatar/{game}")
