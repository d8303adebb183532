"""Sequence replay: torchrl's ReplayBuffer with a SliceSampler over on-disk storage."""

from __future__ import annotations

import os
import shutil

import torch
from tensordict import TensorDict, TensorDictBase

STREAM = "_stream"


class SequenceReplay:
    """Stores one row per environment step and samples ``[batch, length]`` windows.

    Rows follow :mod:`wmblocks.keys` (observation, action, reward, is_first,
    is_terminal). Windows are contiguous in time and may cross episode boundaries,
    which ``is_first`` marks (the RSSM resets there), as in the reference
    implementations. Storage is a ``LazyMemmapStorage`` in ``directory``; each row gets
    a stream id that changes when the circular storage wraps, so no window spans the
    write cursor.

    ``save(path)`` / ``load(path)`` write and read the whole buffer (for resuming).
    """

    def __init__(self, capacity: int, directory: str, batch: int, length: int):
        from torchrl.data import LazyMemmapStorage, ReplayBuffer
        from torchrl.data.replay_buffers.samplers import SliceSampler

        self.capacity, self.batch, self.length = capacity, batch, length
        self.added = 0
        # The scratch directory is only the working copy (saved buffers live where
        # ``save`` puts them), so a previous process's scratch files are cleared.
        scratch = os.path.join(directory, "scratch")
        shutil.rmtree(scratch, ignore_errors=True)
        self.buffer = ReplayBuffer(
            storage=LazyMemmapStorage(capacity, scratch_dir=scratch),
            sampler=SliceSampler(slice_len=length, traj_key=STREAM, strict_length=True),
            batch_size=batch * length,
        )

    def __len__(self) -> int:
        return len(self.buffer)

    def add(self, row: dict[str, torch.Tensor]) -> None:
        lap = self.added // self.capacity
        self.buffer.add(TensorDict({**row, STREAM: torch.tensor(lap)}, []))
        self.added += 1

    def can_sample(self) -> bool:
        return len(self.buffer) >= self.length + 1

    def sample(self) -> TensorDictBase:
        """A ``[batch, length]`` TensorDict of consecutive steps."""
        return self.sample_indexed()[0]

    def sample_indexed(self) -> tuple[TensorDictBase, torch.Tensor]:
        """A ``[batch, length]`` window batch and the storage index ``[batch * length]``
        of its rows (for :meth:`write`)."""
        flat, info = self.buffer.sample(return_info=True)
        index = info["index"]
        index = index[0] if isinstance(index, tuple) else index
        return flat.exclude(STREAM).reshape(self.batch, self.length), index

    def write(self, index: torch.Tensor, rows: TensorDictBase) -> None:
        """Overwrite the keys of ``rows`` (``[batch, length]``, e.g. refreshed latent
        states) at the storage ``index`` returned by :meth:`sample_indexed`; other keys
        are left as stored."""
        self.buffer.storage._storage.update_at_(rows.reshape(-1).cpu(), index)

    def save(self, path: str) -> None:
        self.buffer.dumps(path)

    def load(self, path: str, added: int) -> None:
        self.buffer.loads(path)
        self.added = added
