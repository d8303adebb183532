"""Sequence replay: torchrl's ReplayBuffer with a SliceSampler over on-disk storage."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from wmblocks.errors import UserError

STREAM = "_stream"


class SequenceReplay:
    """Stores one row per environment and step, and samples ``[batch, length]`` windows.

    Rows follow :mod:`wmblocks.keys` (observation keys, action, reward, is_first,
    is_terminal, is_last). ``add`` takes one step of ``envs`` environments at once
    (tensors ``[envs, ...]``); the storage is a ``[capacity / envs, envs]`` grid (a
    torchrl ``LazyMemmapStorage`` with ``ndim=2``, memory-mapped files in ``directory``,
    so a million 64x64x3 images need disk, not RAM) and every window lies in one
    environment's column, contiguous in time. Windows may cross episode boundaries,
    which ``is_first`` marks (the RSSM resets there), as in the reference
    implementations. Each row gets a stream id that changes when the circular storage
    wraps; torchrl's sampler ends trajectories at the write cursor of a full storage, so
    no window spans it (one crossing the physical end of a column back to its start is
    contiguous in time and allowed). Values keep their dtype: images stay ``uint8``
    (the encoders convert them on the device).

    The storage files are the replay's only copy: a checkpoint does not copy them, it
    :meth:`flush`-es them and records :attr:`added` (the write position), and
    :meth:`reopen` attaches a new process to them at that position, so checkpoint time
    and disk use do not grow with the replay. Rows written after the checkpoint lie at
    or past the restored cursor: in a buffer that has not wrapped they are ignored and
    overwritten; in a wrapped one they have already replaced that many of the oldest
    rows, and count as the oldest rows from then on (real transitions, never sampled
    across the cursor).

    Sampling draws from the replay's own :attr:`generator` (seeded from ``seed``), never
    from torch's global one: the windows do not depend on how many random numbers the
    model drew, and a background thread (:class:`~wmblocks.train.prefetch.Prefetcher`)
    can sample while an update draws its own. A checkpoint keeps its state.
    """

    def __init__(
        self,
        capacity: int,
        directory: str,
        batch: int,
        length: int,
        envs: int = 1,
        seed: int | tuple[int, ...] = 0,
        *,
        _keep_files: bool = False,
    ):
        """A new, empty replay whose storage files go to ``directory``; files a previous
        buffer left there are removed first (:meth:`reopen` attaches to them instead).
        ``seed`` seeds :attr:`generator`: an int, or ints (the loop passes ``(seed,
        rank)``)."""
        from torchrl.data import LazyMemmapStorage, ReplayBuffer
        from torchrl.data.replay_buffers.samplers import SliceSampler

        self.per_env = max(capacity // envs, length + 1)
        self.capacity, self.envs = self.per_env * envs, envs
        self.batch, self.length = batch, length
        self.added = 0  # steps added (each one row per environment)
        self.directory = os.path.abspath(directory)
        # Its own stream, not torch.manual_seed(seed)'s (which initialises the model).
        seeds = [seed] if isinstance(seed, int) else list(seed)
        entropy = int(np.random.SeedSequence([*seeds, 0x5245504C]).generate_state(1)[0])
        self.generator = torch.Generator().manual_seed(entropy)
        if not _keep_files:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.buffer = ReplayBuffer(
            storage=LazyMemmapStorage(
                self.capacity, scratch_dir=self.directory, ndim=2, existsok=True
            ),
            sampler=SliceSampler(slice_len=length, traj_key=STREAM, strict_length=True),
            batch_size=batch * length,
            generator=self.generator,
        )

    @classmethod
    def reopen(
        cls,
        capacity: int,
        directory: str,
        batch: int,
        length: int,
        envs: int,
        added: int,
        seed: int | tuple[int, ...] = 0,
    ) -> SequenceReplay:
        """Attach to the storage files in ``directory`` as they stood after ``added``
        steps (a checkpoint's :attr:`added`), without copying them.

        Raises :class:`~wmblocks.errors.UserError` naming the problem when the files
        are missing, unreadable, or of another layout (capacity, environments). The
        :attr:`generator` starts from ``seed``: give it the saved state to continue."""
        replay = cls(capacity, directory, batch, length, envs, seed, _keep_files=True)
        if added == 0:  # nothing counted: files there (if any) are overwritten when used
            return replay
        _check_files(directory)  # before loading: a mapping silently re-extends a short file
        try:
            rows = TensorDict.load_memmap(directory)
        except Exception as e:  # missing meta files, truncated or foreign memmaps
            raise UserError(
                f"the replay files in {directory} are missing or corrupt ({type(e).__name__}: "
                f"{e}); the checkpoint needs the {min(added, replay.per_env)} x {envs} rows "
                "stored there: restore the directory from a copy or start a new run"
            ) from None
        if tuple(rows.batch_size) != (replay.per_env, envs):
            raise UserError(
                f"the replay in {directory} is laid out as {list(rows.batch_size)} "
                f"(steps per environment, environments), not [{replay.per_env}, {envs}]: "
                "it belongs to a run with another capacity or number of environments"
            )
        replay._attach(rows, added)
        return replay

    def _attach(self, rows: TensorDictBase, added: int) -> None:
        # What torchrl's own zero-copy ``ReplayBuffer.loads`` sets (storage, its length
        # and the writer's cursor), from our checkpointed count instead of its metadata
        # files; plus the last written step, which the sampler reads to end windows at
        # the cursor of a wrapped buffer. tests/train/test_train_pieces.py checks that a
        # reopened buffer samples exactly like the one that wrote it.
        storage, writer = self.buffer.storage, self.buffer._writer
        storage._storage = rows
        storage.initialized = True
        filled = min(added, self.per_env)
        storage._len = filled * self.envs
        writer._cursor = added % self.per_env
        storage._set_last_cursor((added - 1) % self.per_env)
        self.added = added

    def flush(self) -> None:
        """Write every storage file's pending pages to disk (``fsync``): what a
        checkpoint needs so that a machine crash, not only a killed process, keeps the
        rows it counts. Costs the pages written since the last flush, not the replay."""
        if not self.buffer.storage.initialized:
            return
        rows = self.buffer.storage._storage
        for value in rows.values(include_nested=True, leaves_only=True):
            fd = os.open(value.filename, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def __len__(self) -> int:
        return len(self.buffer)

    def add(self, rows: dict[str, torch.Tensor]) -> None:
        """Store one step of every environment: ``rows[key]`` is ``[envs, ...]``."""
        # One stream id for everything: a column is one long trajectory, cut by torchrl
        # at the write cursor (per-lap ids would make the few newest steps of a wrapped
        # column a "trajectory" of their own, sampled as often as all the others).
        self.extend({k: v.unsqueeze(1) for k, v in rows.items()})

    def extend(self, rows: dict[str, torch.Tensor]) -> None:
        """Store ``k`` consecutive steps of every environment at once: ``rows[key]`` is
        ``[envs, k, ...]`` (a recorded dataset, or a benchmark's synthetic fill)."""
        k = next(iter(rows.values())).shape[1]
        stream = torch.zeros(self.envs, k, dtype=torch.long)
        # torchrl's 2-D storage takes [envs, k] and lays it out as k steps of the grid.
        self.buffer.extend(TensorDict({**rows, STREAM: stream}, [self.envs, k]))
        self.added += k

    def can_sample(self) -> bool:
        return self.added >= self.length + 1

    def sample(self) -> TensorDictBase:
        """A ``[batch, length]`` TensorDict of consecutive steps of one environment each."""
        return self.sample_indexed()[0]

    def sample_indexed(self) -> tuple[TensorDictBase, tuple[torch.Tensor, torch.Tensor]]:
        """A ``[batch, length]`` window batch and the storage index of its rows (step and
        environment, each ``[batch * length]``; for :meth:`write`)."""
        flat, info = self.buffer.sample(return_info=True)
        return flat.exclude(STREAM).reshape(self.batch, self.length), info["index"]

    def read(self, index: tuple[torch.Tensor, torch.Tensor], names) -> TensorDictBase:
        """The stored values of the keys ``names`` at the storage ``index`` of
        :meth:`sample_indexed`, as a ``[batch, length]`` TensorDict."""
        rows = self.buffer.storage._storage.select(*names)[index]
        return rows.reshape(self.batch, self.length)

    def write(self, index: tuple[torch.Tensor, torch.Tensor], rows: TensorDictBase) -> None:
        """Overwrite the keys of ``rows`` (``[batch, length]``, e.g. refreshed latent
        states) at the storage ``index`` returned by :meth:`sample_indexed`; other keys
        are left as stored."""
        self.buffer.storage._storage.update_at_(rows.reshape(-1).cpu(), index)


def _check_files(directory: str) -> None:
    """Raise :class:`~wmblocks.errors.UserError` when a memory-mapped file that the
    storage's ``meta.json`` lists is missing or shorter than its shape needs."""
    meta_path = os.path.join(directory, "meta.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return  # reported by TensorDict.load_memmap, with its reason
    for key, entry in meta.items():
        if not isinstance(entry, dict) or "shape" not in entry or "dtype" not in entry:
            continue
        dtype = getattr(torch, str(entry["dtype"]).removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype):
            continue
        need = math.prod(entry["shape"]) * torch.empty((), dtype=dtype).element_size()
        path = os.path.join(directory, f"{key}.memmap")
        if not os.path.exists(path):
            raise UserError(f"the replay in {directory} lacks its {key!r} file ({path})")
        if os.path.getsize(path) < need:
            raise UserError(
                f"the replay file {path} is truncated: {os.path.getsize(path)} bytes where "
                f"its layout needs {need}; restore the run directory from a copy or start a "
                "new run"
            )
