"""A trained agent, loaded from its run directory to act, without the training loop.

    policy = wmblocks.load_policy("runs/dreamer_v3")   # reads config.json, checkpoint.pt
    env = policy.make_env(seed=0)                      # the run's environment (optional)
    obs, _ = env.reset(seed=0)
    policy.reset()
    while True:
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
        if terminated or truncated:
            break

    policy.export("policy.pt2")                        # runs with plain torch, see below

:func:`load_policy` rebuilds the recipe's agent from the run's own recipe file (the
checkpoint records it), loads the world model's and the actor's weights and keeps only
what acting needs (:class:`ActingStep`: encoder, RSSM, actor); the decoder, the reward
and continue heads, the critics, the optimisers and the replay are dropped.

Acting is :meth:`~wmblocks.train.acting.LatentPolicy.step`, the loop's own acting step:
per environment step t,

    e_t = enc(o_t);  h_t = f(h_{t-1}, z_{t-1}, a_{t-1});  z_t ~ q(z_t | h_t, e_t)
    a_t = mode pi(a | [z_t, h_t])  (greedy)  or  a_t ~ pi(a | [z_t, h_t])

with (h, z, a) reset to the initial state and a zero action where ``is_first``. The
posterior latent z_t is sampled in both modes (as in training and in the loop's
evaluation), so seed torch (``torch.manual_seed``) for repeatable actions.

:meth:`Policy.export` writes that step with ``torch.export`` to one ``.pt2`` file that
needs only torch (no wmblocks, einops or tensordict) to run::

    import json, torch
    extra = {"wmblocks.json": ""}
    step = torch.export.load("policy.pt2", extra_files=extra).module()
    meta = json.loads(extra["wmblocks.json"])  # obs shapes, action space, sizes
    deter = torch.zeros(1, meta["deter"])      # any values: is_first resets them
    stoch = torch.zeros(1, meta["stoch"])
    action = torch.zeros(1, meta["action_dim"])
    is_first = torch.ones(1, dtype=torch.bool)
    obs = {"observation": torch.zeros(1, *meta["obs_shapes"]["observation"])}
    with torch.no_grad():
        deter, stoch, action = step(obs, is_first, deter, stoch, action)
    # next step: is_first = torch.zeros(1, dtype=torch.bool), the same (deter, stoch,
    # action) fed back; the environment's action is action.argmax(-1) (Discrete) or
    # low + (action + 1) / 2 * (high - low) (Box; meta["low"], meta["high"]).

See docs/using_a_trained_agent.md.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import os
import sys
from collections.abc import Mapping
from types import ModuleType, SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

import wmblocks
from wmblocks.errors import UserError
from wmblocks.nn.world_model import WorldModel
from wmblocks.presets import action_size
from wmblocks.train.acting import LatentPolicy
from wmblocks.train.checkpoint import NAME, load_checkpoint
from wmblocks.train.config import load_config
from wmblocks.train.envs import env_action, make_env
from wmblocks.train.loop import Agent, load_states, pick_device

# The repository's recipes/ folder (next to the wmblocks package in a source checkout):
# where a recipe named by the checkpoint, by ``recipe=`` or by the run directory's name
# is looked for when the recorded path is gone.
RECIPES_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(wmblocks.__file__))), "recipes"
)
META = "wmblocks.json"  # the metadata file inside an exported .pt2


class ActingStep(nn.Module):
    """The acting path as one stateless module: encoder, one RSSM filtering step, actor.

    ``forward(obs, is_first, deter, stoch, prev_action) -> (deter, stoch, action)``:

        obs          {key: [N, *shape]}: images uint8 [N, C, 64, 64], vectors float32 [N, K]
        is_first     [N] bool: o_t starts an episode (state and a_{t-1} are reset)
        deter        [N, D] h_{t-1};  stoch [N, Z] z_{t-1}
        prev_action  [N, A] a_{t-1}, in the agent's space (as returned last step)
        -> h_t [N, D], z_t ~ q(z_t | h_t, e_t) [N, Z], a_t [N, A]: one-hot for
           Discrete, in [-1, 1] for Box; the actor's mode if ``greedy``, else a sample

    It is :meth:`~wmblocks.train.acting.LatentPolicy.step` (no exploration noise), so it
    acts exactly as the training loop's evaluation does.
    """

    def __init__(
        self, wm: WorldModel, actor: nn.Module, action_dim: int, discrete: bool, greedy: bool
    ):
        super().__init__()
        self.encoder, self.rssm, self.actor = wm.encoder, wm.rssm, actor
        self.action_dim, self.discrete, self.greedy = action_dim, discrete, greedy
        # LatentPolicy reads only .encoder and .rssm of its world model: this module.
        self._policy = LatentPolicy(self, actor, action_dim, discrete)

    @property
    def obs_keys(self) -> list[str]:
        return self.encoder.keys

    def forward(
        self,
        obs: dict[str, Tensor],
        is_first: Tensor,
        deter: Tensor,
        stoch: Tensor,
        prev_action: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self._policy.step(obs, is_first, deter, stoch, prev_action, greedy=self.greedy)


class Policy:
    """A trained agent that acts from raw observations and keeps its own latent state.

    Made by :func:`load_policy`. Two conventions, one state:

    - ``act(obs)``: one environment. ``obs`` is what the environment returns, unbatched:
      a dict of arrays as :func:`wmblocks.envs.make` environments give (images uint8
      ``[C, 64, 64]``, vectors ``[K]``), or one array when the agent reads one key (a
      plain gymnasium ``Box`` environment). Returns the action in the environment's
      own space: an ``int`` for ``Discrete``, a float32 array within the ``Box`` bounds
      (the agent's [-1, 1] rescaled, as :meth:`wmblocks.train.envs.Envs.step` does).
    - ``act_batch(obs, is_first=None)``: N environments (a gymnasium vector env):
      ``obs`` a dict of ``[N, ...]`` arrays or tensors, ``is_first`` ``[N]`` bool (which
      environments start an episode; default: all on the first call after
      :meth:`reset`, none after). Returns ``[N]`` int64 or ``[N, A]`` float32 actions.

    ``reset()`` starts new episodes: the next call is ``is_first``. ``greedy`` takes
    the actor's mode, else samples it. Attributes: ``config`` (the run's recipe
    ``Config``), ``recipe`` (its name), ``steps`` (environment steps it was trained
    for), ``action_space``, ``obs_shapes``, ``device``, ``net`` (the
    :class:`ActingStep`).
    """

    def __init__(
        self,
        net: ActingStep,
        action_space: gym.Space,
        obs_shapes: Mapping[str, tuple[int, ...]],
        device: torch.device,
        *,
        config: Any = None,
        recipe: str = "",
        steps: int = 0,
        compile: bool = False,
    ):
        self.net = net.eval()
        self.action_space, self.device = action_space, device
        self.obs_shapes = {k: tuple(obs_shapes[k]) for k in net.obs_keys}
        self.config, self.recipe, self.steps = config, recipe, steps
        self.action_dim, self.discrete = action_size(action_space)
        self._latent = LatentPolicy(net, net.actor, self.action_dim, self.discrete, compile=compile)
        self._first = True

    @property
    def greedy(self) -> bool:
        return self.net.greedy

    @greedy.setter
    def greedy(self, value: bool) -> None:
        self.net.greedy = bool(value)

    @property
    def latent(self) -> tuple[Tensor, Tensor]:
        """``(h_t [N, D], z_t [N, Z])`` after the last call."""
        return self._latent.latent

    def reset(self) -> None:
        """Forget the latent state: the next ``act`` starts an episode."""
        self._latent.reset()
        self._first = True

    def make_env(self, seed: int = 0) -> gym.Env:
        """The run's environment (``config.env``, its action repeat and episode cut), as
        training made it: dict observations, the action space this policy acts in."""
        cfg = self.config
        return make_env(cfg.env, seed, cfg.action_repeat, cfg.episode_steps)

    def act(self, obs: Mapping[str, Any] | np.ndarray) -> int | np.ndarray:
        """The action for one environment's observation ``obs`` (see the class doc)."""
        if not isinstance(obs, Mapping):
            obs = self._one_key(obs)
        batch = {k: _as_array(v)[None] for k, v in obs.items()}
        action = self.act_batch(batch)[0]
        return int(action) if self.discrete else action

    @torch.no_grad()
    def act_batch(self, obs: Mapping[str, Any], is_first: Any = None) -> np.ndarray:
        """Actions ``[N]`` (Discrete) or ``[N, A]`` (Box) for N environments' ``obs``."""
        if not isinstance(obs, Mapping):
            obs = self._one_key(obs)
        x = self._tensors(obs)
        n = next(iter(x.values())).shape[0]
        state = self._latent.state
        if state is not None and state[0].shape[0] != n:
            raise UserError(
                f"the policy holds the state of {state[0].shape[0]} environments but got "
                f"observations of {n}; call policy.reset() before acting for another number"
            )
        if is_first is None:
            first = torch.full((n,), self._first, dtype=torch.bool, device=self.device)
        else:
            first = torch.as_tensor(np.asarray(is_first, bool).reshape(n), device=self.device)
        action = self._latent(x, first, greedy=self.greedy)
        self._first = False
        return self.env_action(action)

    def env_action(self, action: Tensor) -> np.ndarray:
        """Agent actions ``[N, A]`` (one-hot, or in [-1, 1]) in the environment's space:
        ``[N]`` int64 indices (plus the space's ``start``) or ``[N, A]`` float32 within
        the ``Box`` bounds."""
        return env_action(action, self.action_space)

    def _one_key(self, obs: Any) -> dict[str, Any]:
        if len(self.obs_shapes) != 1:
            raise UserError(
                f"this agent reads {len(self.obs_shapes)} observation keys "
                f"{sorted(self.obs_shapes)}: pass the observation as a dict of them"
            )
        return {next(iter(self.obs_shapes)): obs}

    def _tensors(self, obs: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{key: [N, *shape]}`` on the device: uint8 kept (images), else float32."""
        missing = [k for k in self.obs_shapes if k not in obs]
        if missing:
            raise UserError(
                f"observation lacks {missing}; this agent reads "
                f"{ {k: list(s) for k, s in self.obs_shapes.items()} } (got keys {sorted(obs)})"
            )
        out = {}
        for k, shape in self.obs_shapes.items():
            v = torch.as_tensor(_as_array(obs[k]))
            if tuple(v.shape[1:]) != shape or v.dim() != len(shape) + 1:
                raise UserError(
                    f"observation {k!r} has shape {list(v.shape)}, expected [N, "
                    f"{', '.join(map(str, shape))}] here (act() takes one environment's "
                    f"unbatched {list(shape)})"
                )
            out[k] = v.to(self.device, v.dtype if v.dtype == torch.uint8 else torch.float32)
        return out

    def export(self, path: str, *, greedy: bool | None = None) -> str:
        """Write the acting step (:class:`ActingStep`) with ``torch.export`` to ``path``
        (a ``.pt2`` file, ``torch.export.save``) that runs with plain torch, and return
        ``path``.

        The program's ``forward(obs, is_first, deter, stoch, prev_action) -> (deter,
        stoch, action)`` is :class:`ActingStep`'s, on CPU, with a dynamic batch size N;
        ``greedy`` (default: this policy's) takes the actor's mode, else samples it.
        Sampling exports as it is (``torch.rand``/``torch.randn`` on the global
        generator), so the posterior latent is sampled in both modes; with the same
        ``torch.manual_seed`` and inputs the file gives the actions of
        :meth:`act_batch`. The file carries ``wmblocks.json`` (read it with
        ``torch.export.load(path, extra_files={"wmblocks.json": ""})``): ``obs_shapes``,
        ``obs_dtypes``, ``action_dim``, ``discrete``, ``low``/``high`` (Box) or ``n``/
        ``start`` (Discrete), ``deter``, ``stoch``, ``greedy``, ``env``, ``recipe``,
        ``steps`` and the versions that wrote it. See the module doc for an example.
        """
        net = copy.deepcopy(self.net).cpu().eval()
        net.greedy = self.greedy if greedy is None else bool(greedy)
        example, dynamic = self._example(net, 2)
        with torch.no_grad():
            program = torch.export.export(net, example, dynamic_shapes=dynamic)
        meta = {
            "inputs": ["obs", "is_first", "deter", "stoch", "prev_action"],
            "outputs": ["deter", "stoch", "action"],
            "obs_shapes": {k: list(s) for k, s in self.obs_shapes.items()},
            "obs_dtypes": {k: str(example[0][k].dtype) for k in self.obs_shapes},
            "action_dim": self.action_dim,
            "discrete": self.discrete,
            "deter": net.rssm.deter,
            "stoch": net.rssm.stoch_dim,
            "greedy": net.greedy,
            "env": getattr(self.config, "env", ""),
            "recipe": self.recipe,
            "steps": self.steps,
            "wmblocks": wmblocks.__version__,
            "torch": torch.__version__,
        }
        if self.discrete:
            meta |= {"n": self.action_dim, "start": int(self.action_space.start)}
        else:
            meta |= {"low": self.action_space.low.tolist(), "high": self.action_space.high.tolist()}
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        torch.export.save(program, path, extra_files={META: json.dumps(meta)})
        return path

    def _example(self, net: ActingStep, n: int) -> tuple[tuple, dict]:
        """Example inputs of batch ``n`` on CPU, and the dynamic batch dimension."""
        obs = {
            k: torch.zeros(n, *s, dtype=torch.uint8 if len(s) == 3 else torch.float32)
            for k, s in self.obs_shapes.items()
        }
        deter, stoch = net.rssm.initial(n)
        deter, stoch = deter.detach().clone(), stoch.detach().clone()
        example = (
            obs,
            torch.ones(n, dtype=torch.bool),
            deter,
            stoch,
            deter.new_zeros(n, self.action_dim),
        )
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        dynamic = {
            "obs": {k: {0: batch} for k in obs},
            "is_first": {0: batch},
            "deter": {0: batch},
            "stoch": {0: batch},
            "prev_action": {0: batch},
        }
        return example, dynamic


def _as_array(x: Any) -> Any:
    return x if isinstance(x, Tensor) else np.asarray(x)


# --- Loading a run ------------------------------------------------------------------
@dataclasses.dataclass
class LoadedRun:
    """A run's recipe module, configuration, checkpoint and rebuilt agent (weights of
    every module loaded): what :func:`load_policy` keeps the acting part of, and what a
    tool that needs the whole world model (open-loop videos) uses."""

    recipe: ModuleType
    name: str
    config: Any
    checkpoint: dict
    agent: Agent
    action_space: gym.Space
    obs_shapes: dict[str, tuple[int, ...]]
    device: torch.device


_LOADED: dict[str, ModuleType] = {}


def import_recipe(path: str) -> ModuleType:
    """Import the recipe file ``path`` once (under a private module name)."""
    path = os.path.abspath(path)
    if path not in _LOADED:
        name = "_wmblocks_recipe_" + os.path.splitext(os.path.basename(path))[0]
        name += f"_{len(_LOADED)}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while being built
        spec.loader.exec_module(module)
        _LOADED[path] = module
    return _LOADED[path]


def _available() -> list[str]:
    if not os.path.isdir(RECIPES_DIR):
        return []
    return sorted(f[:-3] for f in os.listdir(RECIPES_DIR) if f.endswith(".py"))


def recipe_path(run_dir: str, ckpt: dict, recipe: str | None = None) -> tuple[str, str]:
    """``(name, file)`` of the recipe that trained the run: ``recipe`` when given (a
    name in recipes/ or a path to a ``.py`` file), else the file the checkpoint records,
    else its recorded name in recipes/, else the run directory's name's prefix
    (``dreamer_v3-...``, as benchmarks/learn.py names runs)."""
    if recipe is not None:
        if recipe.endswith(".py") or os.sep in recipe:
            if not os.path.isfile(recipe):
                raise UserError(f"recipe file {recipe} does not exist")
            return os.path.splitext(os.path.basename(recipe))[0], recipe
        candidates = [recipe]
    else:
        rec = ckpt.get("recipe") or {}
        if rec.get("path") and os.path.isfile(rec["path"]):
            return rec.get("name") or os.path.splitext(os.path.basename(rec["path"]))[0], rec[
                "path"
            ]
        base = os.path.basename(os.path.normpath(run_dir))
        guessed = sorted((r for r in _available() if base.startswith(r)), key=len, reverse=True)
        candidates = [rec["name"]] if rec.get("name") else guessed[:1]
    for name in candidates:
        path = os.path.join(RECIPES_DIR, f"{name}.py")
        if os.path.isfile(path):
            return name, path
    known = ", ".join(_available()) or "none found"
    if candidates:
        raise UserError(
            f"unknown recipe {candidates[0]!r} for {run_dir} (recipes in {RECIPES_DIR}: "
            f"{known}); pass recipe= a recipe name or the path of its .py file"
        )
    raise UserError(
        f"cannot tell which recipe trained {run_dir} (its checkpoint does not record it); "
        f"pass recipe= one of: {known}, or the path of the recipe's .py file"
    )


def load_run(
    run_dir: str,
    device: str | torch.device = "cpu",
    recipe: str | None = None,
    checkpoint: str = NAME,
) -> LoadedRun:
    """Rebuild the agent of the run in ``run_dir`` on ``device`` (``auto``: CUDA when
    available) and load every module's weights from ``run_dir/checkpoint``; optimisers,
    counters and replay are not restored. A missing run, checkpoint or recipe, or a
    checkpoint that does not fit the recipe, is a :class:`~wmblocks.errors.UserError`."""
    if not os.path.isdir(run_dir):
        raise UserError(f"no run directory {run_dir} (give the --logdir of a trained run)")
    ckpt_path = os.path.join(run_dir, checkpoint)
    if not os.path.exists(ckpt_path):
        raise UserError(
            f"{run_dir} has no {checkpoint}: the run has not saved a checkpoint yet "
            "(it writes one every --save-every steps and at its end)"
        )
    ckpt = load_checkpoint(ckpt_path)
    name, path = recipe_path(run_dir, ckpt, recipe)
    module = import_recipe(path)
    config_path = os.path.join(run_dir, "config.json")
    if os.path.exists(config_path) or "config" not in ckpt:
        cfg = load_config(module.Config, config_path)
    else:
        names = {f.name for f in dataclasses.fields(module.Config)}
        cfg = module.Config(**{k: v for k, v in ckpt["config"].items() if k in names})
    # Built for acting: the update is never called, so nothing is compiled.
    cfg = dataclasses.replace(cfg, compile="off")
    dev = pick_device(str(device))
    probe = make_env(cfg.env, 0, cfg.action_repeat, cfg.episode_steps)
    try:
        space = probe.observation_space
        obs_shapes = {k: tuple(s.shape) for k, s in space.spaces.items()}
        action_space = probe.action_space
    finally:
        probe.close()
    action_dim, discrete = action_size(action_space)
    env = SimpleNamespace(
        obs_shapes=obs_shapes,
        action_space=action_space,
        action_dim=action_dim,
        discrete=discrete,
        image_keys=[k for k, s in obs_shapes.items() if len(s) == 3],
    )
    agent = module.build(cfg, env, dev)
    load_states(agent.modules, ckpt["modules"], ckpt_path)
    return LoadedRun(module, name, cfg, ckpt, agent, action_space, obs_shapes, dev)


def load_policy(
    run_dir: str,
    device: str | torch.device = "cpu",
    recipe: str | None = None,
    greedy: bool | None = None,
    *,
    checkpoint: str = NAME,
    compile: bool = False,
) -> Policy:
    """The trained policy of the run in ``run_dir`` (a recipe's ``--logdir``), ready to
    act (:class:`Policy`: ``reset()``, ``act(obs)``, ``act_batch``, ``export``).

    Args:
        run_dir: holds ``config.json`` and ``checkpoint.pt``.
        device: ``cpu``, ``cuda``, ``cuda:1``, or ``auto`` (CUDA when available).
        recipe: the recipe that trained it, a name (``dreamer_v3``) or a ``.py`` path;
            default: the file the checkpoint records (see :func:`recipe_path`).
        greedy: act with the actor's mode (True) or sample it (False); default: as the
            run evaluated (its ``--eval-mode``: ``mode`` is greedy; V3 samples).
        checkpoint: the file in ``run_dir`` (e.g. ``checkpoint_5000.pt`` kept by
            ``--keep``).
        compile: ``torch.compile`` the acting step (as the loop's ``--compile``).

    Only the encoder, the RSSM and the actor are kept; the rest of the agent the
    recipe builds (decoder, heads, critics, optimisers) is dropped after loading.
    Raises :class:`~wmblocks.errors.UserError` for a missing run directory or
    checkpoint, a corrupt or foreign checkpoint, or an unknown recipe.
    """
    run = load_run(run_dir, device, recipe, checkpoint)
    cfg = run.config
    if greedy is None:
        greedy = getattr(cfg, "eval_mode", "mode") == "mode"
    action_dim, discrete = action_size(run.action_space)
    net = ActingStep(run.agent.wm, run.agent.actor, action_dim, discrete, bool(greedy))
    for p in net.parameters():
        p.requires_grad_(False)
    return Policy(
        net,
        run.action_space,
        run.obs_shapes,
        run.device,
        config=cfg,
        recipe=run.name,
        steps=int(run.checkpoint["count"]["steps"]),
        compile=compile,
    )


def export_policy(
    run_dir: str, path: str, *, recipe: str | None = None, greedy: bool | None = None
) -> str:
    """``load_policy(run_dir, "cpu", recipe, greedy).export(path)``: the run's acting
    step as one ``.pt2`` file that plain torch runs (see :meth:`Policy.export`)."""
    return load_policy(run_dir, "cpu", recipe, greedy).export(path)
