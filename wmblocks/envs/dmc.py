"""DeepMind Control Suite adapter (``dmc/``, ``dmc-vision/``, ``dmc-both/``).

Protocol, after the DreamerV3 reference (danijar/dreamerv3 ``embodied/envs/dmc.py`` and
``configs.yaml``: ``dmc: {size: [64, 64], proprio, image, camera: -1}``):

- ``dmc/TASK``: proprioception only. All dm_control observation arrays, flattened and
  concatenated in sorted key order into one float32 vector ``"observation"``; this is
  what the reference's encoder does with the separate vector keys (it concatenates
  every vector input into one MLP input).
- ``dmc-vision/TASK``: ``"image"`` only, uint8 ``(3, 64, 64)``, rendered with
  ``physics.render(64, 64, camera_id=camera)`` where the camera is the reference's
  default (-1: 2 for quadruped, 0 otherwise).
- ``dmc-both/TASK``: both keys.
- Action: dm_control's Box bounds (``[-1, 1]`` for the suite); actions are clipped to
  them. Action repeat: 2 by default, as the DreamerV3 paper (the 2024 reference
  config uses 1); rewards summed.
- Episodes end after dm_control's time limit (1000 frames) => ``truncated``; a step
  with discount 0 (no suite task has one) would be ``terminated``.
- Seeding: the dm_control task's random state (``task.random``) is seeded at
  construction and reseeded by ``reset(seed=s)``.

``TASK`` is written ``domain-task`` with hyphens: ``walker-walk``,
``ball-in-cup-catch`` (-> ``ball_in_cup``, ``catch``), ``cartpole-swingup-sparse``
(-> ``cartpole``, ``swingup_sparse``). The reference's short domain ``cup`` is accepted.
``MUJOCO_GL`` defaults to ``egl`` (set before dm_control is imported).
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from wmblocks.envs.common import (
    IMAGE,
    IMAGE_SIZE,
    VECTOR,
    SuiteEnv,
    hwc_to_chw,
    image_space,
    require,
    vector_space,
)
from wmblocks.errors import UserError

DEFAULT_CAMERAS = {"quadruped": 2}
DOMAIN_ALIASES = {"cup": "ball_in_cup"}


def _suite(env_id: str):
    os.environ.setdefault("MUJOCO_GL", "egl")
    require("dm_control", env_id, "dmc")
    from dm_control import suite

    return suite


def parse_task(task: str, all_tasks) -> tuple[str, str]:
    """``"ball-in-cup-catch"`` -> ``("ball_in_cup", "catch")`` given dm_control's
    ``(domain, task)`` pairs; raises :class:`UserError` naming the known domains, or the
    domain's tasks."""
    name = task.replace("-", "_")
    domains = sorted({d for d, _ in all_tasks} | set(DOMAIN_ALIASES))
    matches = [d for d in domains if name.lower().startswith(d.lower() + "_")]
    if not matches:
        raise UserError(
            f"unknown dm_control domain in task {task!r}; write domain-task, e.g. "
            f"walker-walk; domains: {', '.join(d.replace('_', '-') for d in domains)}"
        )
    domain = max(matches, key=len)
    rest = name[len(domain) + 1 :]
    domain = DOMAIN_ALIASES.get(domain, domain)
    tasks = sorted(t for d, t in all_tasks if d == domain)
    if rest not in tasks:
        raise UserError(
            f"unknown dm_control task {rest!r} of domain {domain!r} (from {task!r}); its "
            f"tasks: {', '.join(t.replace('_', '-') for t in tasks)}"
        )
    return domain, rest


class DMCEnv(SuiteEnv):
    """A dm_control suite task with proprio and/or image observations (see the module
    docstring for the protocol)."""

    def __init__(
        self,
        domain: str,
        task: str,
        seed: int = 0,
        action_repeat: int = 2,
        proprio: bool = True,
        image: bool = False,
        camera: int = -1,
        env_id: str | None = None,
    ):
        super().__init__(action_repeat)
        if not (proprio or image):
            raise UserError("a dmc environment needs proprio or image observations (or both)")
        env_id = env_id or f"dmc/{domain}-{task}"
        suite = _suite(env_id)
        self.env = suite.load(domain, task, task_kwargs={"random": int(seed)})
        self.proprio, self.image = proprio, image
        self.camera = DEFAULT_CAMERAS.get(domain, 0) if camera == -1 else camera
        spec = self.env.observation_spec()
        self._keys = sorted(spec)
        size = sum(int(np.prod(spec[k].shape)) for k in self._keys)
        spaces = {}
        if image:
            spaces[IMAGE] = image_space(3)
        if proprio:
            spaces[VECTOR] = vector_space(size)
        self.observation_space = gym.spaces.Dict(spaces)
        act = self.env.action_spec()
        self.action_space = gym.spaces.Box(
            np.asarray(act.minimum, np.float32).reshape(act.shape),
            np.asarray(act.maximum, np.float32).reshape(act.shape),
            act.shape,
            np.float32,
        )
        self._ts = None

    def _reset_raw(self, seed):
        if seed is not None:
            self.env.task.random.seed(seed)
        self._ts = self.env.reset()

    def _act(self, action, index):
        self._ts = self.env.step(action)
        reward = float(self._ts.reward or 0.0)
        if self._ts.last():
            terminal = self._ts.discount is not None and float(self._ts.discount) == 0.0
            return reward, terminal, not terminal
        return reward, False, False

    def _observe(self):
        out = {}
        if self.image:
            out[IMAGE] = hwc_to_chw(self._frame())
        if self.proprio:
            obs = self._ts.observation
            out[VECTOR] = np.concatenate(
                [np.asarray(obs[k], np.float32).reshape(-1) for k in self._keys]
            )
        return out

    def _frame(self):
        return self.env.physics.render(IMAGE_SIZE, IMAGE_SIZE, camera_id=self.camera)

    def close(self):
        """Close dm_control's environment (and its rendering context)."""
        self.env.close()


def make_dmc(suite_name: str, task: str, seed: int = 0, action_repeat: int = 2) -> DMCEnv:
    """``suite_name`` in ``dmc`` (proprio), ``dmc-vision`` (image), ``dmc-both``;
    ``task`` as ``walker-walk``."""
    env_id = f"{suite_name}/{task}"
    suite = _suite(env_id)
    domain, name = parse_task(task, suite.ALL_TASKS)
    return DMCEnv(
        domain,
        name,
        seed=seed,
        action_repeat=action_repeat,
        proprio=suite_name in ("dmc", "dmc-both"),
        image=suite_name in ("dmc-vision", "dmc-both"),
        env_id=env_id,
    )
