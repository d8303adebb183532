"""Recorded data for training without an environment (``recipes/world_model.py``).

Three sources, one layout (:mod:`wmblocks.keys`: row t holds o_t, the action a_t taken
at o_t, the reward r_t received on arriving at o_t, is_first, is_terminal, is_last):

- a previous run's replay (``RUN`` or ``RUN/replay``): the memory-mapped files every
  recipe writes, read where they lie (never copied, never written);
- a directory of ``.npz`` files, one array per key with time first, as the DreamerV3
  reference's replay chunks (``embodied/replay/chunk.py``: observation keys, ``action``
  taken at that observation, ``reward``, ``is_first``, ``is_last``, ``is_terminal``;
  discrete actions as indices or one-hot) or, with ``actions="previous"``, as the
  DreamerV1/V2 episode files, whose ``action`` at row t is the one that led to o_t;
- a Minari dataset (``minari:ID``, the ``minari`` extra), converted episode by episode.

A :class:`SequenceDataset` samples ``[B, T]`` windows of consecutive rows and holds a
validation split (two blocks of every stream, in time) that training never sees.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import os

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from wmblocks import keys
from wmblocks.errors import UserError

FLAGS = (keys.IS_FIRST, keys.IS_TERMINAL, keys.IS_LAST)
# Keys a row may hold that are not observations (the replay's stream id and the V3-2024
# acting latents included; the V2 reference's "discount" is derived from is_terminal).
NOT_OBS = {keys.ACTION, keys.REWARD, *FLAGS, keys.DETER, keys.STOCH, "_stream", "discount"}


@dataclasses.dataclass
class DataSpaces:
    """What a recipe's ``build`` reads of an environment, taken from data:
    ``obs_shapes`` ``{key: shape}``, ``action_space`` (the agent's: ``Discrete(A)`` or
    ``Box(-1, 1, (A,))``), ``action_dim`` and ``discrete``."""

    obs_shapes: dict[str, tuple[int, ...]]
    action_space: gym.Space

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, gym.spaces.Discrete)

    @property
    def action_dim(self) -> int:
        space = self.action_space
        return int(space.n) if self.discrete else int(np.prod(space.shape))

    @property
    def image_keys(self) -> list[str]:
        return [k for k, s in self.obs_shapes.items() if len(s) == 3]


@dataclasses.dataclass
class Stream:
    """One column of rows in time order: row i is ``rows[(offset + i) % len(rows)]``
    for ``i < count`` (a wrapped replay column starts at its write cursor)."""

    rows: TensorDictBase  # [N] (memory-mapped or in memory)
    offset: int
    count: int


class SequenceDataset:
    """Recorded streams of rows, sampled as ``[B, T]`` windows of consecutive rows.

    Validation: each stream is cut in time into ``2 k`` equal blocks, ``k = round(1 /
    val_fraction)``, and blocks ``k - 1`` and ``2 k - 1`` (the end of each half) are
    held out; a window lies inside one block, so training never sees a validation row,
    and validation spans early and late data. ``val_fraction = 0``: no split (the
    ``val`` windows are the training ones). Windows may cross episode boundaries
    (``is_first`` resets the RSSM), as replay windows do.

    Args:
        streams: the :class:`Stream` list.
        spaces: :class:`DataSpaces` of the rows.
        source: what the data was read from (named in errors and logs).
        val_fraction: share of every stream held out for validation.
    """

    def __init__(
        self, streams: list[Stream], spaces: DataSpaces, source: str, val_fraction: float = 0.1
    ):
        if not 0.0 <= val_fraction <= 0.5:
            raise UserError(f"--val-fraction must be in [0, 0.5], got {val_fraction}")
        self.streams, self.spaces, self.source = streams, spaces, source
        self.val_fraction = val_fraction
        self.steps = sum(s.count for s in streams)
        self.episodes = sum(int(_flag(s, keys.IS_LAST).sum()) for s in streams)

    def segments(self, split: str) -> list[tuple[int, int, int]]:
        """``(stream, first row, end row)`` of every block of ``split`` (``train`` or
        ``val``)."""
        if self.val_fraction == 0:
            return [(i, 0, s.count) for i, s in enumerate(self.streams)]
        k = max(1, round(1 / self.val_fraction))
        out = []
        for i, s in enumerate(self.streams):
            edges = [round(j * s.count / (2 * k)) for j in range(2 * k + 1)]
            for j in range(2 * k):
                if (j % k == k - 1) == (split == "val"):
                    out.append((i, edges[j], edges[j + 1]))
        return out

    def windows(self, length: int, split: str = "train") -> int:
        """How many ``length``-step windows the ``split`` holds."""
        return sum(max(0, b - a - length + 1) for _, a, b in self.segments(split))

    def sample(
        self,
        batch: int,
        length: int,
        split: str = "train",
        generator: torch.Generator | None = None,
    ) -> TensorDictBase:
        """``batch`` windows drawn uniformly among all windows of ``split``: a ``[batch,
        length]`` TensorDict on the CPU (images ``uint8``, everything else as stored)."""
        segments = self.segments(split)
        counts = torch.tensor(
            [max(0, b - a - length + 1) for _, a, b in segments], dtype=torch.float64
        )
        if counts.sum() == 0:
            longest = max((b - a for _, a, b in segments), default=0)
            raise UserError(
                f"{self.source}: no {length}-step window in its {split} split "
                f"({self.steps} steps in {len(self.streams)} streams, val fraction "
                f"{self.val_fraction}: blocks of at most {longest} rows); lower --length, "
                "raise --val-fraction, or record more data"
            )
        which = torch.multinomial(counts, batch, replacement=True, generator=generator)
        out = []
        for i in which.tolist():
            stream, lo, _ = segments[i]
            start = lo + int(torch.randint(int(counts[i]), (), generator=generator))
            out.append(_time_ordered(self.streams[stream], start, length))
        return torch.stack(out, 0)


def _time_ordered(stream: Stream, start: int, length: int) -> TensorDictBase:
    """Rows ``start .. start + length - 1`` of ``stream`` in time order, ``[length]``."""
    n = stream.rows.batch_size[0]
    index = (stream.offset + start + torch.arange(length)) % n
    # The recording agent's latents (V3-2024 replays) are its own, not data.
    return stream.rows[index].exclude("_stream", keys.DETER, keys.STOCH)


def _flag(stream: Stream, key: str) -> torch.Tensor:
    """One key of all of ``stream``'s rows (order ignored), read without the others."""
    column = stream.rows[key]
    if stream.count == column.shape[0]:
        return column
    index = (stream.offset + torch.arange(stream.count)) % column.shape[0]
    return column[index]


# --- The sources --------------------------------------------------------------------
def load_dataset(
    source: str, val_fraction: float = 0.1, actions: str = "taken", spaces: DataSpaces | None = None
) -> SequenceDataset:
    """The data at ``source``: ``minari:ID`` (a Minari dataset), a run directory or its
    ``replay/`` (:func:`load_replay`), or a directory of ``.npz`` files
    (:func:`load_npz`, ``actions`` as there). ``spaces``: those of the environment the
    data is for (a :class:`~wmblocks.train.envs.Envs`, or ``None`` to infer them from
    the data); the data must match them."""
    if source.startswith("minari:"):
        data = load_minari(source.removeprefix("minari:"), val_fraction)
    elif not os.path.isdir(source):
        raise UserError(
            f"--data {source}: no such directory (give a run directory, its replay/, a "
            "directory of .npz files, or minari:DATASET_ID)"
        )
    elif os.path.exists(os.path.join(source, "meta.json")) or os.path.isdir(
        os.path.join(source, "replay")
    ):
        data = load_replay(source, val_fraction)
    elif glob.glob(os.path.join(source, "*.npz")):
        data = load_npz(source, val_fraction, actions, spaces)
    else:
        raise UserError(
            f"--data {source}: neither a run directory (with replay/), a replay directory "
            "(with meta.json) nor a directory of .npz files"
        )
    if spaces is not None:
        check_spaces(data, spaces)
    return data


def check_spaces(data: SequenceDataset, spaces) -> None:
    """Raise a :class:`~wmblocks.errors.UserError` when the data's observation shapes or
    action size differ from those of ``spaces`` (an environment's)."""
    theirs = (dict(data.spaces.obs_shapes), data.spaces.action_dim, data.spaces.discrete)
    ours = ({k: tuple(v) for k, v in spaces.obs_shapes.items()}, spaces.action_dim, spaces.discrete)
    if theirs != ours:
        raise UserError(
            f"{data.source} does not fit the environment: the data has observations "
            f"{theirs[0]}, {theirs[1]} {'discrete' if theirs[2] else 'continuous'} actions; "
            f"the environment {ours[0]}, {ours[1]} {'discrete' if ours[2] else 'continuous'}"
        )


def load_replay(path: str, val_fraction: float = 0.1) -> SequenceDataset:
    """A recipe's replay, read in place: ``path`` is the run directory (its
    ``checkpoint.pt`` gives the rows written and the spaces, ``config.json`` the layout)
    or its ``replay/``. Every environment's column is one stream, in time order (a
    wrapped column starts at the write cursor); rows are read when sampled."""
    run_dir = (
        path
        if os.path.isdir(os.path.join(path, "replay"))
        else os.path.dirname(os.path.abspath(path))
    )
    directory = os.path.join(run_dir, "replay")
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.exists(ckpt_path):
        raise UserError(
            f"--data {path}: {ckpt_path} is missing; a replay is read up to the rows its "
            "run's last checkpoint counts"
        )
    from wmblocks.train.checkpoint import load_checkpoint
    from wmblocks.train.replay import _check_files

    ckpt = load_checkpoint(ckpt_path)
    added = int(ckpt["replay"]["added"])
    _check_files(directory)
    try:
        rows = TensorDict.load_memmap(directory)
    except Exception as e:
        raise UserError(f"the replay files in {directory} are unreadable ({e})") from None
    per_env, envs = rows.batch_size
    wrapped = added > per_env
    streams = [
        Stream(rows[:, c], added % per_env if wrapped else 0, min(added, per_env))
        for c in range(envs)
    ]
    space = ckpt["spaces"]
    action_space = (
        gym.spaces.Discrete(space["action_dim"])
        if space["discrete"]
        else gym.spaces.Box(-1.0, 1.0, (space["action_dim"],), np.float32)
    )
    obs = {k: tuple(v) for k, v in space["obs"].items()}
    return SequenceDataset(streams, DataSpaces(obs, action_space), directory, val_fraction)


def _chains(files: list[str]) -> list[list[str]]:
    """The reference's chunk files ``TIME-UUID-SUCC-LENGTH.npz`` linked into chains
    (a chunk's successor continues its stream); other names are one stream each, in
    name order (DreamerV1/V2 episodes: ``TIME-UUID-LENGTH.npz``)."""
    parts = {f: os.path.basename(f)[:-4].split("-") for f in files}
    if not all(len(p) == 4 for p in parts.values()):
        return [[f] for f in sorted(files)]
    by_uuid = {p[1]: f for f, p in parts.items()}
    successors = {parts[f][2] for f in files}
    chains = []
    for f in sorted(files):
        if parts[f][1] in successors:
            continue  # not the head of its chain
        chain = [f]
        while parts[chain[-1]][2] in by_uuid:
            chain.append(by_uuid[parts[chain[-1]][2]])
        chains.append(chain)
    return chains


def _images_chw(x: np.ndarray) -> np.ndarray:
    """``[T, H, W, C]`` uint8 images (the references' layout) as ``[T, C, H, W]``."""
    if x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] != x.shape[-1]:
        return np.ascontiguousarray(np.moveaxis(x, -1, 1))
    return x


def _agent_actions(
    action: np.ndarray, space: gym.Space | None, source: str
) -> tuple[np.ndarray, gym.Space]:
    """Recorded actions ``[T]`` (indices) or ``[T, A]`` in the agent's space: one-hot
    float32 for discrete actions, [-1, 1] for continuous ones (rescaled from ``space``'s
    bounds when it is a bounded Box; data without a space is taken to be in [-1, 1]
    already). One-hot data (rows of 0/1 summing to 1, or to 0 on final rows) counts as
    discrete."""
    if np.issubdtype(action.dtype, np.integer) or isinstance(space, gym.spaces.Discrete):
        index = action.astype(np.int64).reshape(len(action), -1)
        if index.shape[1] != 1:  # already one-hot
            index = index.argmax(-1)[:, None]
        n = int(space.n) if isinstance(space, gym.spaces.Discrete) else int(index.max()) + 1
        start = int(space.start) if isinstance(space, gym.spaces.Discrete) else 0
        onehot = np.eye(n, dtype=np.float32)[index[:, 0] - start]
        return onehot, gym.spaces.Discrete(n)
    action = action.astype(np.float32).reshape(len(action), -1)
    if (
        isinstance(space, gym.spaces.Box)
        and np.all(np.isfinite(space.low))
        and np.all(np.isfinite(space.high))
    ):
        low, high = space.low.reshape(-1), space.high.reshape(-1)
        action = 2.0 * (action - low) / (high - low) - 1.0
    elif space is None:
        binary = np.isin(action, (0.0, 1.0)).all() and np.isin(action.sum(-1), (0.0, 1.0)).all()
        if binary and action.shape[1] > 1:
            return action, gym.spaces.Discrete(action.shape[1])
    if np.abs(action).max(initial=0.0) > 1.0 + 1e-5:
        raise UserError(
            f"{source}: continuous actions outside [-1, 1] (max |a| = "
            f"{np.abs(action).max():.3g}) and no bounded action space to rescale them by"
        )
    return action, gym.spaces.Box(-1.0, 1.0, (action.shape[1],), np.float32)


def _joined(parts: list[TensorDict]) -> Stream:
    """Recorded streams (episodes, chunk chains) one after the other as one stream,
    as a replay column holds its episodes; where a part does not start an episode (a
    chunk chain cut mid-episode), ``is_first`` is set on its first row, so that no
    window carries a state across the join."""
    for part in parts:
        part[keys.IS_FIRST][0] = True
    rows = torch.cat(parts, 0)
    return Stream(rows, 0, rows.batch_size[0])


def _stream_of(arrays: dict[str, np.ndarray], source: str) -> TensorDict:
    """One stream's arrays (time first) as rows (flags bool, rewards and vectors
    float32, images uint8)."""
    n = len(arrays[keys.REWARD])
    out = {}
    for k, v in arrays.items():
        if len(v) != n:
            raise UserError(f"{source}: key {k!r} has {len(v)} rows, reward has {n}")
        t = torch.as_tensor(np.asarray(v))
        if k in FLAGS:
            t = t.reshape(n).bool()
        elif k == keys.REWARD:
            t = t.reshape(n).float()
        elif t.dtype != torch.uint8:
            t = t.float()
        out[k] = t
    return TensorDict(out, [n])


def load_npz(
    directory: str,
    val_fraction: float = 0.1,
    actions: str = "taken",
    spaces: DataSpaces | None = None,
) -> SequenceDataset:
    """A directory of ``.npz`` files, one array per key with time first (the module
    docstring's layout); ``actions``: ``taken`` (the action taken at o_t, the V3
    reference and wmblocks) or ``previous`` (the action that led to o_t, the V1/V2
    episode files; shifted here: a_t = action[t + 1], and 0 at an episode's last row).
    Keys other than actions, rewards and the flags are observations; ``is_last`` and
    ``is_terminal`` may be missing (episode files end with their last step: is_last
    there; is_terminal from ``discount == 0`` when present). Images ``[T, H, W, C]``
    become ``[T, C, H, W]``."""
    if actions not in ("taken", "previous"):
        raise UserError(f"--npz-actions must be taken or previous, got {actions!r}")
    files = glob.glob(os.path.join(directory, "*.npz"))
    action_space = getattr(spaces, "action_space", None)
    streams, space = [], None
    for chain in _chains(files):
        parts = []
        for f in chain:
            try:
                with np.load(f) as z:
                    parts.append({k: z[k] for k in z.files})
            except Exception as e:
                raise UserError(f"{f} is not a readable .npz file ({e})") from None
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        missing = [k for k in (keys.ACTION, keys.REWARD, keys.IS_FIRST) if k not in arrays]
        if missing:
            raise UserError(f"{chain[0]} lacks the keys {missing}; it has {sorted(arrays)}")
        n = len(arrays[keys.REWARD])
        first = arrays[keys.IS_FIRST].astype(bool).reshape(n)
        if keys.IS_LAST not in arrays:
            last = np.zeros(n, bool)
            last[:-1] = first[1:]
            last[-1] = True
            arrays[keys.IS_LAST] = last
        if keys.IS_TERMINAL not in arrays:
            discount = arrays.get("discount")
            terminal = (discount == 0) if discount is not None else np.zeros(n, bool)
            arrays[keys.IS_TERMINAL] = np.asarray(terminal).reshape(n) & arrays[keys.IS_LAST]
        action, space = _agent_actions(arrays[keys.ACTION], action_space, chain[0])
        if actions == "previous":
            action = np.concatenate([action[1:], np.zeros_like(action[:1])])
        action[arrays[keys.IS_LAST].astype(bool).reshape(n)] = 0.0  # no action at the end
        arrays[keys.ACTION] = action
        kept = {keys.ACTION, keys.REWARD, *FLAGS}
        arrays = {k: _images_chw(v) for k, v in arrays.items() if k in kept or k not in NOT_OBS}
        streams.append(_stream_of(arrays, chain[0]))
    obs = {k: tuple(v.shape[1:]) for k, v in streams[0].items() if k not in NOT_OBS}
    return SequenceDataset([_joined(streams)], DataSpaces(obs, space), directory, val_fraction)


def load_minari(dataset_id: str, val_fraction: float = 0.1) -> SequenceDataset:
    """A Minari dataset (``minari.load_dataset``, from ``MINARI_DATASETS_PATH`` or
    Minari's default directory; nothing is downloaded), one stream per episode:
    observations ``[T + 1]`` (a dict space gives one key each, a Box the key
    ``observation``), ``actions[t]`` taken at o_t, ``rewards[t - 1]`` received on
    arriving at o_t, ``terminations`` / ``truncations`` of the last step."""
    try:
        import minari
    except ImportError:
        raise UserError(
            "--data minari:...: the minari package is missing; pip install 'wmblocks[minari]'"
        ) from None
    try:
        data = minari.load_dataset(dataset_id)
    except Exception as e:
        raise UserError(
            f"minari dataset {dataset_id!r} cannot be loaded ({type(e).__name__}: {e}); "
            "list local ones with `minari list local`"
        ) from None
    streams, space = [], None
    for ep in data.iterate_episodes():
        n = len(ep.rewards) + 1
        obs = ep.observations if isinstance(ep.observations, dict) else {keys.OBS: ep.observations}
        action, space = _agent_actions(np.asarray(ep.actions), data.action_space, dataset_id)
        action = np.concatenate([action, np.zeros_like(action[:1])])
        reward = np.concatenate([[0.0], np.asarray(ep.rewards, np.float32)])
        flags = np.zeros(n, bool)
        first, last, terminal = flags.copy(), flags.copy(), flags.copy()
        first[0], last[-1], terminal[-1] = True, True, bool(ep.terminations[-1])
        arrays = {k: _images_chw(np.asarray(v)) for k, v in obs.items()}
        arrays.update(
            {
                keys.ACTION: action,
                keys.REWARD: reward,
                keys.IS_FIRST: first,
                keys.IS_LAST: last,
                keys.IS_TERMINAL: terminal,
            }
        )
        streams.append(_stream_of(arrays, dataset_id))
    if not streams:
        raise UserError(f"minari dataset {dataset_id!r} holds no episodes")
    shapes = {k: tuple(v.shape[1:]) for k, v in streams[0].items() if k not in NOT_OBS}
    spaces = DataSpaces(shapes, space)
    return SequenceDataset([_joined(streams)], spaces, f"minari:{dataset_id}", val_fraction)


def save_npz(data: SequenceDataset, directory: str) -> list[str]:
    """Write every episode of ``data`` to ``directory`` as ``.npz`` files in the
    ``actions="taken"`` layout of :func:`load_npz` (one file per stream cut at
    ``is_first``; images stay ``[T, C, H, W]`` uint8); returns the paths. A way to share
    a run's data without its replay files."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for s, stream in enumerate(data.streams):
        rows = _time_ordered(stream, 0, stream.count)
        starts = torch.nonzero(rows[keys.IS_FIRST]).flatten().tolist()
        bounds = sorted({0, *starts, stream.count})
        for e, (a, b) in enumerate(itertools.pairwise(bounds)):
            path = os.path.join(directory, f"stream{s:03d}-episode{e:06d}-{b - a}.npz")
            np.savez_compressed(path, **{k: v.numpy() for k, v in rows[a:b].items()})
            paths.append(path)
    return paths
