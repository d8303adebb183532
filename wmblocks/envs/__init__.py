"""Environment adapters for the benchmark suites of the Dreamer papers.

``make(env_id, seed, action_repeat)`` returns a plain :class:`gymnasium.Env` that
follows the DreamerV3 reference protocol (danijar/dreamerv3, ``embodied/envs`` and the
``env:`` section of ``dreamerv3/configs.yaml``) for:

    dmc/TASK          DeepMind Control, proprio: {"observation": float32 [K]}
    dmc-vision/TASK   DeepMind Control, pixels:  {"image": uint8 [3, 64, 64]}
    dmc-both/TASK     both keys
    atari100k/GAME    ALE, 64x64 colour, frame skip 4 with max-pool, no sticky actions
    crafter/reward    Crafter (and crafter/noreward), {"image": uint8 [3, 64, 64]}
    minatar/GAME      MinAtar, the 10x10xC grid upsampled to uint8 [C, 64, 64]

and any other id is made with ``gymnasium.make``. Every environment:

- has a Dict ``observation_space`` of Boxes (``"image"`` uint8 CHW, ``"observation"``
  float32 1-D) and a Discrete or 1-D Box ``action_space``;
- repeats actions (``action_repeat``; 0 means the suite's default, see
  :func:`default_action_repeat`), summing rewards and stopping early when the episode
  ends; ``info["frames"]`` is the number of environment frames a step consumed (0 after
  reset);
- reports ``terminated`` (terminal state, no bootstrap) apart from ``truncated`` (time
  limit); Atari100k follows the reference in counting its frame cap as terminal;
- is deterministic after ``reset(seed=s)``; ``info`` holds only small numbers, with
  episode metrics under ``log_*`` keys (Crafter's achievements);
- renders the current frame as HWC uint8 RGB.

The suite packages are optional extras (``pip install -e '.[dmc]'``, ``atari``,
``crafter``, ``minatar``) and are imported only when an environment of the suite is made.
Set-up, the reference protocol and published scores per suite: ``docs/suites/``.
"""

from __future__ import annotations

from wmblocks.errors import UserError

SUITES = ("dmc", "dmc-vision", "dmc-both", "atari100k", "crafter", "minatar")

_DEFAULT_REPEAT = {
    "dmc": 2,
    "dmc-vision": 2,
    "dmc-both": 2,
    "atari100k": 4,
    "crafter": 1,
    "minatar": 1,
}

__all__ = ["SUITES", "default_action_repeat", "make", "split_env_id"]


def split_env_id(env_id: str) -> tuple[str | None, str]:
    """``"SUITE/TASK"`` -> ``(SUITE, TASK)`` for a wmblocks suite, else
    ``(None, env_id)`` (a gymnasium id, which may contain a namespace ``NS/Name-v0``)."""
    if not isinstance(env_id, str) or not env_id:
        raise UserError(f"environment id must be a non-empty string, got {env_id!r}")
    suite, sep, task = env_id.partition("/")
    if sep and suite in SUITES:
        if not task:
            raise UserError(f"environment id {env_id!r} names suite {suite!r} but no task")
        return suite, task
    return None, env_id


def default_action_repeat(env_id: str) -> int:
    """The action repeat ``make(env_id, action_repeat=0)`` uses: 2 for the dmc suites
    (DreamerV3 paper), 4 for atari100k (the ALE frame skip), 1 for crafter, minatar and
    gymnasium ids."""
    suite, _ = split_env_id(env_id)
    return _DEFAULT_REPEAT.get(suite, 1)


def make(env_id: str, seed: int = 0, action_repeat: int = 0):
    """Make the environment ``env_id``, seeded with ``seed``.

    ``env_id`` is ``SUITE/TASK`` with SUITE one of :data:`SUITES` (``dmc/walker-walk``,
    ``dmc-vision/cartpole-balance``, ``atari100k/pong``, ``crafter/reward``,
    ``minatar/breakout``) or a registered gymnasium id (``CartPole-v1``).
    ``action_repeat`` 0 picks :func:`default_action_repeat`; k >= 1 repeats each action
    k frames (for atari100k, k is the frame skip).

    Raises :class:`~wmblocks.errors.UserError` for an unknown suite, task or gymnasium
    id, an unsupported space, or a missing optional package (naming the extra).
    The call is picklable through ``functools.partial(make, env_id, seed=...,
    action_repeat=...)``, as ``gymnasium.vector.AsyncVectorEnv`` needs.
    """
    suite, task = split_env_id(env_id)
    action_repeat = int(action_repeat)
    if action_repeat < 0:
        raise UserError(f"action repeat must be >= 0 (0: the suite default), got {action_repeat}")
    repeat = action_repeat or default_action_repeat(env_id)
    seed = int(seed)
    if suite is None:
        from wmblocks.envs.common import GymEnv

        return GymEnv(env_id, seed=seed, action_repeat=repeat)
    if suite.startswith("dmc"):
        from wmblocks.envs.dmc import make_dmc

        return make_dmc(suite, task, seed=seed, action_repeat=repeat)
    if suite == "atari100k":
        from wmblocks.envs.atari import make_atari100k

        return make_atari100k(task, seed=seed, frame_skip=repeat)
    if suite == "crafter":
        from wmblocks.envs.crafter import make_crafter

        return make_crafter(task, seed=seed, action_repeat=repeat)
    from wmblocks.envs.minatar import make_minatar

    return make_minatar(task, seed=seed, action_repeat=repeat)
