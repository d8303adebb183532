"""Sequence replay: torchrl's ReplayBuffer with a SliceSampler over on-disk storage."""

from __future__ import annotations

import os
import shutil

import torch
from tensordict import TensorDict, TensorDictBase

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
    wraps, so no window spans the write cursor. Values keep their dtype: images stay
    ``uint8`` (the encoders convert them on the device).

    ``save(path)`` / ``load(path)`` write and read the whole buffer (for resuming).
    """

    def __init__(self, capacity: int, directory: str, batch: int, length: int, envs: int = 1):
        from torchrl.data import LazyMemmapStorage, ReplayBuffer
        from torchrl.data.replay_buffers.samplers import SliceSampler

        self.per_env = max(capacity // envs, length + 1)
        self.capacity, self.envs = self.per_env * envs, envs
        self.batch, self.length = batch, length
        self.added = 0  # steps added (each one row per environment)
        # The scratch directory is only the working copy (saved buffers live where
        # ``save`` puts them), so a previous process's scratch files are cleared.
        scratch = os.path.join(directory, "scratch")
        shutil.rmtree(scratch, ignore_errors=True)
        self.buffer = ReplayBuffer(
            storage=LazyMemmapStorage(self.capacity, scratch_dir=scratch, ndim=2),
            sampler=SliceSampler(slice_len=length, traj_key=STREAM, strict_length=True),
            batch_size=batch * length,
        )

    def __len__(self) -> int:
        return len(self.buffer)

    def add(self, rows: dict[str, torch.Tensor]) -> None:
        """Store one step of every environment: ``rows[key]`` is ``[envs, ...]``."""
        lap = self.added // self.per_env
        stream = torch.full((self.envs,), lap)
        # torchrl's 2-D storage takes [envs, 1] and lays it out as one step of the grid.
        self.buffer.extend(TensorDict({**rows, STREAM: stream}, [self.envs]).unsqueeze(1))
        self.added += 1

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

    def write(self, index: tuple[torch.Tensor, torch.Tensor], rows: TensorDictBase) -> None:
        """Overwrite the keys of ``rows`` (``[batch, length]``, e.g. refreshed latent
        states) at the storage ``index`` returned by :meth:`sample_indexed`; other keys
        are left as stored."""
        self.buffer.storage._storage.update_at_(rows.reshape(-1).cpu(), index)

    def save(self, path: str) -> None:
        self.buffer.dumps(path)

    def load(self, path: str, added: int) -> None:
        self.buffer.loads(path)
        self.added = added
