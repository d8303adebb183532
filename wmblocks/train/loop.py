"""The training loop the three recipes share: collect, replay, train at the train ratio,
log, evaluate, checkpoint, resume, plot.

A recipe declares a configuration (a :class:`LoopConfig` subclass adding its own
options) and a ``build(cfg, env, device) -> Agent`` that assembles its version's blocks
and one training update; :func:`run` does everything else::

    @dataclasses.dataclass
    class Config(LoopConfig):
        horizon: int = option(15, "imagination horizon")

    def build(cfg, env, device) -> Agent:
        ...
        return Agent(wm, actor, update, modules={...}, optimizers={...}, title="...")

    run(Config, build, name="dreamer_vX", description=__doc__)

Data-parallel (``torchrun --nproc-per-node N recipes/...``, docs/scaling.md): every
rank collects from its own environments into its own replay and trains on its own
batch, with the gradients averaged (:mod:`wmblocks.distributed`); the step
counts, ``--steps`` and every ``--*-every`` are global (summed over the ranks), and
rank 0 writes everything but the other ranks' replays.

Data layout (:mod:`wmblocks.keys`): the replay row t holds o_t, the action a_t taken at
o_t, the reward r_t received on arriving at o_t, is_first and is_terminal. The final
observation of an episode is stored too (with a zero action), so terminal steps train
the continue/discount heads.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from typing import ClassVar

import torch
from tensordict import TensorDictBase
from torch import Tensor, nn

from wmblocks import distributed, keys
from wmblocks.errors import UserError
from wmblocks.nn.world_model import WorldModel
from wmblocks.optim import ClippedOptimizer
from wmblocks.train.acting import LatentPolicy
from wmblocks.train.checkpoint import (
    NAME,
    load_checkpoint,
    rng_state,
    rotate_checkpoints,
    set_rng_state,
)
from wmblocks.train.config import (
    given_options,
    load_config,
    option,
    parse_config,
    save_config,
)
from wmblocks.train.envs import Envs, video_frame
from wmblocks.train.guards import SkippedUpdates
from wmblocks.train.logging import MetricsLog, Progress, plot_returns
from wmblocks.train.monitor import DeviceMonitor
from wmblocks.train.prefetch import Prefetcher
from wmblocks.train.replay import SequenceReplay
from wmblocks.train.speed import tune_host_allocator, use_compile
from wmblocks.train.video import open_loop, write_video


@dataclasses.dataclass
class LoopConfig:
    """Options every recipe has. Subclasses add their own fields and may redeclare a
    field to change its default (``env``, ``batch``, ``logdir``, ...)."""

    env: str = option(
        "CartPole-v1",
        "SUITE/TASK (dmc/walker-walk, dmc-vision/cartpole-balance, atari100k/pong, "
        "crafter/reward, minatar/breakout; see docs/suites/) or a gymnasium id with 1-D "
        "Box observations (or a dict of them and 64x64 images)",
    )
    suite: str = option(
        "",
        "apply a suite's reference settings (size, train ratio, batch, length, steps; "
        "flags given explicitly still win)",
        choices=["", "dmc-proprio", "dmc-vision", "atari100k", "crafter"],
    )
    envs: int = option(1, "parallel environments (one subprocess each when > 1)")
    episode_steps: int = option(
        0, "cut episodes (truncated) after this many agent steps (0: the environment's limit)"
    )
    seed: int = option(0, "random seed (environment, networks, sampling)")
    device: str = option("auto", "cpu, cuda, or auto (cuda when available)")
    compile: str = option(
        "auto",
        "torch.compile the update's losses (and their backward) and the acting step: on, "
        "off, or auto (on for CUDA; on a CPU the first compile costs about a minute)",
        choices=["auto", "on", "off"],
    )
    precision: str = option(
        "auto",
        "autocast of the update's forward: bf16 (float32 master weights; KL, twohot and "
        "normaliser maths in float32), fp32, or auto (bf16 on CUDA, fp32 on CPU)",
        choices=["auto", "fp32", "bf16"],
    )
    steps: int = option(30_000, "total environment steps (frames: action repeats count)")
    action_repeat: int = option(
        0,
        "environment frames per agent action, rewards summed (0: the suite's default: "
        "dmc 2, atari100k 4, others 1)",
    )
    batch: int = option(16, "replay sequences per update (B)")
    length: int = option(64, "steps per replay sequence (T)")
    train_ratio: float = option(
        512.0,
        "replayed steps trained on per agent step (summed over --envs; action repeats "
        "do not count, as the references); updates per agent step = train_ratio / "
        "(batch * length)",
    )
    prefill: int = option(
        1000, "environment steps collected (by the untrained agent) before the first update"
    )
    capacity: int = option(1_000_000, "replay capacity in steps")
    logdir: str = option(
        "runs/dreamer", "run directory (config, metrics, plot, checkpoint, replay)"
    )
    eval_every: int = option(2500, "environment steps between evaluations (0: only at the end)")
    eval_episodes: int = option(5, "episodes per evaluation")
    eval_mode: str = option(
        "sample",
        "how evaluation acts: sample the policy (the V3 reference) or take its mode",
        choices=["sample", "mode"],
    )
    video: bool = option(
        True,
        "pixel environments: write each evaluation's first episode and an open-loop "
        "prediction of the world model as videos (run directory, videos/)",
    )
    sanitize: bool = option(
        False,
        "replace NaN / inf in environment observations and rewards (NaN -> 0, inf -> the "
        "float32 limits, clipped to the observation space) and count them (env/sanitized) "
        "instead of stopping with an error naming the environment, step and key",
    )
    max_skipped_in_row: int = option(
        100,
        "stop the run (keeping the last checkpoint) after this many updates in a row with "
        "a non-finite loss or gradient; each such update is skipped and counted "
        "(train/skipped_updates); 0: never stop",
    )
    log_every: int = option(1000, "environment steps between metric lines")
    save_every: int = option(10_000, "environment steps between checkpoints (and at the end)")
    keep: int = option(
        1,
        "checkpoints kept: checkpoint.pt and the keep - 1 before it (checkpoint_<steps>.pt); "
        "the replay is never copied, whatever the number",
    )
    deterministic: bool = option(
        False,
        "deterministic algorithms (torch.use_deterministic_algorithms; on CUDA also a fixed "
        "cuBLAS workspace): with a fixed seed "
        "on CPU, the same run twice gives identical metrics",
    )
    resume: bool = option(
        False,
        "continue the run in --logdir from its checkpoint, with its saved options except "
        "those given on this command line (e.g. --steps to extend it)",
    )

    # Options a run cannot change on --resume (replay layout, environment); each recipe
    # adds its network sizes.
    fixed_on_resume: ClassVar[tuple[str, ...]] = ("env", "envs", "action_repeat", "capacity")
    # Bounds checked when the options are parsed or loaded (wmblocks.train.config.check);
    # recipes add theirs.
    minimums: ClassVar[dict[str, int]] = {
        "envs": 1,
        "episode_steps": 0,
        "steps": 1,
        "action_repeat": 0,
        "batch": 1,
        "length": 1,
        "prefill": 0,
        "capacity": 1,
        "eval_every": 0,
        "eval_episodes": 1,
        "log_every": 1,
        "save_every": 0,
        "keep": 1,
        "max_skipped_in_row": 0,
    }
    positive: ClassVar[tuple[str, ...]] = ("train_ratio",)


@dataclasses.dataclass
class Agent:
    """What a recipe's ``build`` hands to the loop.

    Attributes:
        wm: the world model (filters observations while acting).
        actor: maps features ``[N, F]`` to an action distribution.
        update: one training update on a replay batch ``[B, T]`` (already on the
            device): losses, backward, optimiser steps, target updates; returns
            metrics as detached tensors (read only every ``log_every`` steps), with
            ``train/skipped`` (``[]`` 0/1: the steps were skipped for a non-finite loss
            or gradient, see :func:`wmblocks.optim.step_if_finite`), which the loop
            counts (:class:`~wmblocks.train.guards.SkippedUpdates`).
        modules: every module whose state a checkpoint must keep, by name.
        optimizers: every optimiser, by name.
        title: the plot title.
        noise: Gaussian exploration noise on continuous actions while collecting
            (V1: 0.3); evaluation never adds it.
        replay_context: steps of stored latent state each replayed chunk starts from
            (V3-2024: 1; see :func:`~wmblocks.nn.world_model.split_context`). With 1, the
            loop stores the acting posterior (``deter``, ``stoch``) with every step,
            samples ``length + 1`` steps, and after each update writes the batch's
            ``deter`` / ``stoch`` (which ``update`` refreshes in place, see
            :func:`~wmblocks.nn.world_model.refresh_context_`) back into replay.
        world_model_loss: the world model's part of ``update``'s loss alone, ``batch [B,
            T] -> (loss [], metrics)`` (forward only): what ``recipes/world_model.py``
            trains when it trains no behaviour (see :mod:`wmblocks.train.offline`).
        world_model_optimizers: the names in ``optimizers`` that step the world model
            (V3-2024's one optimiser for everything: ``("all",)``).
    """

    wm: WorldModel
    actor: nn.Module
    update: Callable[[TensorDictBase], dict[str, Tensor]]
    modules: dict[str, nn.Module]
    optimizers: dict[str, ClippedOptimizer]
    title: str = "Dreamer"
    noise: float = 0.0
    replay_context: int = 0
    world_model_loss: Callable[[TensorDictBase], tuple[Tensor, dict[str, Tensor]]] | None = None
    world_model_optimizers: tuple[str, ...] = ("model",)


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate(
    agent: Agent,
    env: Envs,
    episodes: int,
    device: torch.device,
    mode: str = "sample",
    frames: list | None = None,
    compile: bool = False,
    seed: int | None = None,
) -> float:
    """Mean return over ``episodes`` episodes of ``env`` (its first environment),
    sampling the policy (``mode="sample"``, as the V3 reference evaluates) or acting
    with its mode (``"mode"``, as V1 and V2); no exploration noise either way. With a
    list as ``frames``, the first episode's observations are appended to it as RGB
    frames (pixel environments; see :func:`~wmblocks.train.envs.video_frame`).
    ``compile``: the acting step as one compiled call (see :class:`LatentPolicy`).
    ``seed``: reseed the environment first (see :meth:`Envs.reset`)."""
    policy = LatentPolicy(agent.wm, agent.actor, env.action_dim, env.discrete, compile=compile)
    image = env.image_keys[0] if env.image_keys else None
    returns, total, row = [], 0.0, env.reset(seed=seed)
    while len(returns) < episodes:
        if frames is not None and image is not None and not returns:
            frames.append(video_frame(row[image][0]))
        if row[keys.IS_LAST][0]:
            returns.append(total)
            total = 0.0
        obs = {k: row[k].to(device) for k in env.obs_shapes}
        action = policy(obs, row[keys.IS_FIRST].to(device), greedy=mode == "mode")
        row = env.step(action.cpu())
        total += float(row[keys.REWARD][0])
    return sum(returns) / len(returns)


def load_states(objects: dict, states: dict, path: str) -> None:
    """``objects[name].load_state_dict(states[name])`` for every name in ``objects``
    (modules or optimisers); a mismatch raises one error naming the checkpoint ``path``."""
    try:
        for name, obj in objects.items():
            obj.load_state_dict(states[name])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(
            f"checkpoint {path} does not match this recipe's agent "
            f"({type(e).__name__}: {str(e)[:300]}); was it written by another recipe "
            "or version?"
        ) from None


def recipe_of(config_cls: type) -> dict:
    """``{"name", "path"}`` of the recipe file that defines ``config_cls`` (e.g.
    ``dreamer_v3``, ``/.../recipes/dreamer_v3.py``): what a checkpoint records so that
    :func:`wmblocks.load_policy` can rebuild the agent without being told."""
    module = sys.modules.get(config_cls.__module__)
    path = os.path.abspath(getattr(module, "__file__", "") or "")
    return {"name": os.path.splitext(os.path.basename(path))[0], "path": path}


def spaces_of(env: Envs) -> dict:
    """The observation shapes and action space a run is trained with (a checkpoint
    keeps them; a resume on an environment whose spaces changed is refused)."""
    return {
        "obs": {k: list(v) for k, v in env.obs_shapes.items()},
        "action_dim": env.action_dim,
        "discrete": env.discrete,
    }


def _acting_latents(policy: LatentPolicy) -> dict:
    """The replay-context keys of a row: the posterior the policy acted from."""
    deter, stoch = policy.latent
    return {keys.DETER: deter.cpu(), keys.STOCH: stoch.cpu()}


def _replay_dir(run_dir: str) -> str:
    """``run_dir/replay`` for rank 0 (a single process), ``run_dir/replay_rank<r>`` for
    the other ranks of a data-parallel run."""
    r = distributed.rank()
    return os.path.join(run_dir, "replay" if r == 0 else f"replay_rank{r}")


def _own_state(ckpt: dict, path: str) -> dict:
    """This rank's ``{"added", "rng"}`` in ``ckpt`` (its replay's write position and its
    generators), which must have been written by as many ranks as this run has: a
    :class:`~wmblocks.errors.UserError` otherwise."""
    saved, world = ckpt.get("world_size", 1), distributed.world_size()
    if saved != world:
        how = "python" if saved == 1 else f"torchrun --nproc-per-node {saved}"
        raise UserError(
            f"checkpoint {path} was written by {saved} process(es), this run has {world}: "
            f"each rank resumes its own replay and generators, so resume it with {how} "
            "(or start a new run in another --logdir)"
        )
    if "ranks" in ckpt:
        return ckpt["ranks"][distributed.rank()]
    return {"added": ckpt["replay"]["added"], "rng": ckpt["rng"]}


class _Silent:
    """The metrics log and progress line of ranks > 0: nothing is written or shown
    (rank 0 writes the run's metrics and shows its progress)."""

    def __init__(self) -> None:
        self.eval: float | None = None
        self.extras: dict[str, float] = {}

    def write(self, *args, **kwargs) -> None:
        pass

    episode = update = close = write


def _crossed(before: int, after: int, every: int) -> bool:
    """Whether the step count passed a multiple of ``every`` going from before to after
    (an action repeat advances it by several frames at once)."""
    return every > 0 and before // every != after // every


def resumed_config(saved: LoopConfig, cfg: LoopConfig, given: set[str] | None) -> LoopConfig:
    """The configuration of a resumed run: the ``saved`` one, with the options ``given``
    on the command line taken from ``cfg`` (``None``: those where ``cfg`` differs from
    the class defaults). Changing an option of ``fixed_on_resume`` is a
    :class:`~wmblocks.errors.UserError` naming it and both values."""
    if given is None:
        given = {
            f.name
            for f in dataclasses.fields(cfg)
            if f.default is not dataclasses.MISSING and getattr(cfg, f.name) != f.default
        }
    given = set(given) - {"resume", "logdir"}
    fixed = [
        k
        for k in type(saved).fixed_on_resume
        if k in given and getattr(cfg, k) != getattr(saved, k)
    ]
    if fixed:
        changes = ", ".join(
            f"--{k.replace('_', '-')} {getattr(cfg, k)!r} (the run has {getattr(saved, k)!r})"
            for k in fixed
        )
        raise UserError(
            f"cannot change on --resume: {changes}; drop the flag, or start a new run in "
            "another --logdir"
        )
    return dataclasses.replace(saved, **{k: getattr(cfg, k) for k in given}, resume=True)


class Trainer:
    """Owns the run directory, the environments, the replay and the counters of one run.

    ``Trainer(Config, cfg, build)`` starts a new run or, with ``cfg.resume``, restores
    one (modules, optimisers, counters, RNG and replay) from ``logdir``; :meth:`train`
    runs to ``cfg.steps`` environment steps. An existing run is never overwritten.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it first joins the process group
    (:func:`~wmblocks.distributed.init_from_env`); rank r's environments are
    seeded ``seed + r * envs + i`` (rank 0's as a single process's), its replay is
    :func:`_replay_dir`, the modules start as rank 0's and ranks r > 0 reseed torch
    after the build (:func:`~wmblocks.distributed.reseed_rank`).
    """

    def __init__(
        self,
        config_cls: type,
        cfg: LoopConfig,
        build: Callable[..., Agent],
        given: set[str] | None = None,
    ):
        run_dir = cfg.logdir
        self.ckpt_path = os.path.join(run_dir, NAME)
        ckpt = None
        if cfg.resume:
            ckpt = load_checkpoint(self.ckpt_path)
            trained_by, this = ckpt.get("recipe", {}).get("name"), recipe_of(config_cls)["name"]
            if trained_by and this and trained_by != this:
                raise UserError(
                    f"{run_dir} was trained by {trained_by}, not {this}: its checkpoint "
                    f"does not match this recipe; resume it with recipes/{trained_by}.py"
                )
            saved = load_config(config_cls, os.path.join(run_dir, "config.json"))
            cfg = resumed_config(saved, cfg, given)
        elif os.path.exists(self.ckpt_path):
            raise UserError(
                f"{run_dir} already holds a run; pass --resume to continue it, or choose "
                "another --logdir"
            )
        self.cfg, self.run_dir = cfg, run_dir
        tune_host_allocator()
        try:
            os.makedirs(run_dir, exist_ok=True)
        except OSError as e:
            raise UserError(
                f"cannot write to --logdir {run_dir} ({e.strerror or e}): choose a directory "
                "this user can write to"
            ) from None
        if not os.access(run_dir, os.W_OK):
            raise UserError(f"cannot write to --logdir {run_dir} (read-only)")
        if cfg.deterministic:  # cuBLAS needs a fixed workspace to be deterministic
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(cfg.deterministic)
        self.device = distributed.init_from_env(pick_device(cfg.device))
        own = _own_state(ckpt, self.ckpt_path) if ckpt is not None else None
        torch.manual_seed(cfg.seed)
        self.env = Envs(
            cfg.env,
            cfg.seed + distributed.rank() * cfg.envs,  # all N * envs seeds distinct
            cfg.envs,
            cfg.action_repeat,
            episode_steps=cfg.episode_steps,
            sanitize=cfg.sanitize,
        )
        self.eval_env = None  # rank 0 evaluates
        if distributed.is_main():
            self.eval_env = Envs(
                cfg.env,
                cfg.seed + 10_000,
                1,
                cfg.action_repeat,
                parallel=False,
                episode_steps=cfg.episode_steps,
                sanitize=cfg.sanitize,
            )
        self.agent = build(cfg, self.env, self.device)
        distributed.broadcast_modules(self.agent.modules.values())
        distributed.reseed_rank(cfg.seed)
        length = cfg.length + self.agent.replay_context
        if cfg.capacity // cfg.envs < length + 1:
            raise UserError(
                f"--capacity {cfg.capacity} holds {cfg.capacity // cfg.envs} steps per "
                f"environment (--envs {cfg.envs}), fewer than a sequence needs: {length + 1} "
                f"(--length {cfg.length}{' + 1 context step' if self.agent.replay_context else ''}"
                " + 1); raise --capacity or lower --length"
            )
        if ckpt is not None and ckpt.get("spaces", spaces_of(self.env)) != spaces_of(self.env):
            raise UserError(
                f"the environment {cfg.env} no longer has the spaces this run was trained "
                f"with: {ckpt['spaces']} then, {spaces_of(self.env)} now (another version "
                "of the environment?); the run cannot continue on it"
            )
        replay = (_replay_dir(run_dir), cfg.batch, length)
        self.count = {"steps": 0, "updates": 0, "episodes": 0, "credit": 0.0, "seconds": 0.0}
        seed = (cfg.seed, distributed.rank())
        if ckpt is None:
            self.replay = SequenceReplay(cfg.capacity, *replay, envs=cfg.envs, seed=seed)
        else:
            self.replay = SequenceReplay.reopen(
                cfg.capacity, *replay, envs=cfg.envs, added=own["added"], seed=seed
            )
            self._restore(ckpt, own["rng"])
        # Batches gathered in a thread while the environments step or the last update
        # runs; the latents each update writes back are read again when taken.
        refresh = (keys.DETER, keys.STOCH) if self.agent.replay_context else ()
        self.prefetch = Prefetcher(self.replay, self.device, refresh)
        # Written once every check has passed: a refused resume changes no file.
        try:
            if distributed.is_main():
                save_config(cfg, os.path.join(run_dir, "config.json"))
        except OSError as e:
            raise UserError(f"cannot write to --logdir {run_dir} ({e.strerror or e})") from None

    def _restore(self, ckpt: dict, rng: dict) -> None:
        load_states(self.agent.modules, ckpt["modules"], self.ckpt_path)
        load_states(self.agent.optimizers, ckpt["optimizers"], self.ckpt_path)
        self.count = dict(ckpt["count"])
        set_rng_state(rng)
        if "replay" in rng:  # the replay's own sampling generator (absent before 0.3)
            self.replay.generator.set_state(rng["replay"])

    def checkpoint(self) -> None:
        """Flush the replay's files, then write the state with the replay's write
        position (atomically, keeping ``--keep`` checkpoints): nothing is copied, and a
        crash at any point leaves a loadable checkpoint whose rows are all on disk.

        Data-parallel: every rank flushes its replay, then rank 0 gathers each rank's
        write position and generators (after all flushes) and writes them as ``ranks``
        (a list by rank) with ``world_size``; the modules and optimisers are the same
        on every rank."""
        self.replay.flush()
        generators = {**rng_state(), "replay": self.replay.generator.get_state()}
        ranks = distributed.gather_objects({"added": self.replay.added, "rng": generators})
        if ranks is None:  # ranks > 0: rank 0 writes
            return
        per_rank = {"world_size": len(ranks), "ranks": ranks} if len(ranks) > 1 else {}
        rotate_checkpoints(
            self.run_dir,
            {
                "modules": {n: m.state_dict() for n, m in self.agent.modules.items()},
                "optimizers": {n: o.state_dict() for n, o in self.agent.optimizers.items()},
                "count": dict(self.count),
                "rng": ranks[0]["rng"],
                "replay": {"added": ranks[0]["added"]},
                "config": dataclasses.asdict(self.cfg),
                "recipe": recipe_of(type(self.cfg)),
                "spaces": spaces_of(self.env),
                **per_rank,
            },
            self.cfg.keep,
        )

    def train(self) -> None:
        """Act in every environment, store, train ``train_ratio / (batch * length)``
        updates per agent step once ``prefill`` environment steps are collected, log,
        evaluate (videos for pixel environments), save; plot at the end.

        Data-parallel: ``count`` is global (the frames and episodes of every rank,
        summed after each step of the environments, which every rank takes in
        lockstep), so every decision (updates, logs, checkpoints, the end) falls at the
        same step on every rank and their collectives line up. Each rank does
        ``train_ratio / (batch * length)`` updates per agent step of its own; rank 0
        logs (the metrics averaged over the ranks, its own environments' episodes),
        evaluates and plots."""
        cfg, env, agent, count = self.cfg, self.env, self.agent, self.count
        prefetch, main = self.prefetch, distributed.is_main()
        policy = LatentPolicy(
            agent.wm,
            agent.actor,
            env.action_dim,
            env.discrete,
            agent.noise,
            compile=use_compile(cfg.compile, self.device),
        )
        log: MetricsLog | _Silent = _Silent()
        progress: Progress | _Silent = _Silent()
        # Also closed by close(), should training stop with an error.
        monitor = self.monitor = DeviceMonitor(self.device if main else torch.device("cpu"))
        if monitor.note:
            print(f"train: {monitor.note}", file=sys.stderr, flush=True)
        if main:
            log = MetricsLog(self.run_dir, resume_step=count["steps"] if cfg.resume else None)
            progress = Progress(cfg.steps, start=count["steps"])
        metrics: dict[str, Tensor] = {}
        # Updates skipped for non-finite values, counted on the device (read when logging).
        skips = SkippedUpdates(
            self.device, cfg.max_skipped_in_row, count.get("skipped_updates", 0), self.ckpt_path
        )
        per_update = cfg.train_ratio / (cfg.batch * cfg.length)
        # Seeded by the step count: a resumed run and one that went on without stopping
        # (but restarted its episodes there) see the same environments.
        row = env.reset(seed=env.seed + count["steps"])
        episode_return, episode_length = torch.zeros(env.n), torch.zeros(env.n, dtype=torch.long)
        # Training seconds, summed over resumed segments (pauses between them excluded).
        seconds0, start = count.get("seconds", 0.0), time.time()

        def seconds() -> float:
            return seconds0 + time.time() - start

        while count["steps"] < cfg.steps:
            obs = {k: row[k].to(self.device) for k in env.obs_shapes}
            action = policy(obs, row[keys.IS_FIRST].to(self.device)).cpu()
            # No action is taken at an episode's final observation (the env resets).
            action = action * (~row[keys.IS_LAST]).unsqueeze(-1)
            latents = _acting_latents(policy) if agent.replay_context else {}
            self.replay.add({**row, keys.ACTION: action, **latents})
            if (
                count["steps"] >= cfg.prefill
                and self.replay.can_sample()
                and count["credit"] + per_update * env.n >= 1.0
            ):  # this step trains: its first batch is gathered while the envs step
                prefetch.request()
            row = env.step(action)
            before = count["steps"]
            frames, episodes = distributed.sum_ints(env.frames, int(row[keys.IS_LAST].sum()))
            count["steps"] += frames
            count["episodes"] += episodes
            episode_return += row[keys.REWARD]
            episode_length += (~row[keys.IS_FIRST]).long()
            for i in torch.nonzero(row[keys.IS_LAST]).flatten().tolist():
                extra = {f"episode/{k}": v for k, v in env.episode_logs.get(i, {}).items()}
                log.write(
                    count["steps"],
                    {
                        "episode/return": float(episode_return[i]),
                        "episode/length": int(episode_length[i]),
                        **extra,
                    },
                )
                progress.episode(float(episode_return[i]))
                unlocked = [v for k, v in extra.items() if k.startswith("episode/achievement_")]
                if unlocked:  # Crafter: achievements unlocked in the last episode
                    progress.extras["achievements"] = sum(v > 0 for v in unlocked)
                episode_return[i], episode_length[i] = 0.0, 0
            if count["steps"] >= cfg.prefill and self.replay.can_sample():
                count["credit"] += per_update * env.n
                while count["credit"] >= 1.0:
                    batch, index = prefetch.take()
                    if count["credit"] >= 2.0:  # another update follows: gather its batch
                        prefetch.request()
                    metrics = agent.update(batch)
                    skips.add(metrics)
                    if agent.replay_context:
                        self.replay.write(index, batch.select(keys.DETER, keys.STOCH))
                    count["updates"] += 1
                    count["credit"] -= 1.0
            steps = count["steps"]
            if _crossed(before, steps, cfg.log_every) and metrics:
                # Stops here (UserError) after --max-skipped-in-row skipped updates.
                count["skipped_updates"] = skips.read(steps, count["updates"])
                sanitized = {}
                if cfg.sanitize:
                    sanitized["env/sanitized"] = distributed.sum_ints(env.sanitized)[0]
                gpu = monitor.read()  # CUDA: utilisation since the last line, memory
                if "gpu/util_percent" in gpu:
                    progress.extras["GPU%"] = gpu["gpu/util_percent"]
                if gpu:
                    progress.extras["GPU GB"] = gpu["gpu/peak_memory_gb"]
                log.write(
                    steps,
                    {
                        **{k: float(v) for k, v in distributed.mean_metrics(metrics).items()},
                        "train/skipped_updates": count["skipped_updates"],
                        **sanitized,
                        **gpu,
                        "updates": count["updates"],
                        "time/elapsed_s": seconds(),
                    },
                )
            if main and (_crossed(before, steps, cfg.eval_every) or steps >= cfg.steps):
                progress.eval = self.evaluate(steps)
                log.write(steps, {"eval/return": progress.eval, "time/elapsed_s": seconds()})
            if _crossed(before, steps, cfg.save_every) or steps >= cfg.steps:
                # No checkpoint after a run of skipped updates: the last one is kept.
                count["skipped_updates"] = skips.read(steps, count["updates"])
                count["seconds"] = seconds()
                self.checkpoint()
            progress.update(steps, count["updates"])
        progress.update(count["steps"], count["updates"], force=True)
        progress.close()
        monitor.close()
        log.close()
        if main:
            plot_returns(
                os.path.join(self.run_dir, "metrics.jsonl"),
                os.path.join(self.run_dir, "returns.png"),
                f"{agent.title} on {cfg.env}",
            )

    def evaluate(self, steps: int) -> float:
        """The evaluation return; for pixel environments (with ``video``) also
        ``videos/eval_<steps>.mp4`` (the first episode) and ``videos/openloop_<steps>.mp4``
        (:func:`~wmblocks.train.video.open_loop` on a replayed batch)."""
        cfg, agent = self.cfg, self.agent
        record = cfg.video and bool(self.eval_env.image_keys)
        frames: list | None = [] if record else None
        ret = evaluate(
            agent,
            self.eval_env,
            cfg.eval_episodes,
            self.device,
            cfg.eval_mode,
            frames,
            compile=use_compile(cfg.compile, self.device),
            seed=cfg.seed + 10_000 + steps,  # the same episodes, resumed or not
        )
        if record:
            videos = os.path.join(self.run_dir, "videos")
            write_video(os.path.join(videos, f"eval_{steps}.mp4"), frames)
            if self.replay.can_sample():
                batch = self.replay.sample().to(self.device)
                key = self.eval_env.image_keys[0]
                write_video(
                    os.path.join(videos, f"openloop_{steps}.mp4"), open_loop(agent.wm, batch, key)
                )
        return ret

    def close(self) -> None:
        if getattr(self, "monitor", None) is not None:
            self.monitor.close()
        self.prefetch.close()
        self.env.close()
        if self.eval_env is not None:
            self.eval_env.close()


def run(
    config_cls: type,
    build: Callable[..., Agent],
    *,
    name: str,
    description: str = "",
    argv: list[str] | None = None,
    suites: dict[str, dict] | None = None,
) -> None:
    """Command-line entry of a recipe: parse ``config_cls`` from ``argv``, build the
    agent, train. Errors a user can act on (:class:`~wmblocks.errors.UserError`: bad
    environment id, unknown preset, an existing run, a corrupt checkpoint) print one
    line naming the problem and exit with status 2; any other exception is a bug and
    keeps its traceback. ``suites``: the recipe's reference settings per benchmark
    suite, chosen with ``--suite`` (see :func:`~wmblocks.train.config.parse_config`)
    and printed at start. Under ``torchrun``, every rank runs this; the process group
    (joined by :class:`Trainer`) is left at the end."""
    try:
        cfg = parse_config(config_cls, argv, description, suites)
        given = given_options(config_cls, argv)
        if cfg.suite:
            preset = ", ".join(f"{k}={v}" for k, v in (suites or {})[cfg.suite].items())
            print(f"{name}: --suite {cfg.suite}: {preset} (explicit flags win)", flush=True)
        trainer = Trainer(config_cls, cfg, build, given)
        try:
            trainer.train()
        finally:
            trainer.close()
    except UserError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        distributed.shutdown()
