"""Sequence replay: torchrl's ReplayBuffer with a SliceSampler over on-disk storage."""

from __future__ import annotations

import json
import os
import shutil

import torch
from tensordict import TensorDict, TensorDictBase

from wmblocks.errors import UserError

STREAM = "_stream"
CHUNK = 256  # steps copied at a time when saving and loading


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

    ``save(path)`` / ``load(path)`` write and read the filled steps only, oldest first
    (for resuming): a checkpoint of a 1M-step buffer holding 10k steps copies 10k.
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
        # One stream id for everything: a column is one long trajectory, cut by torchrl
        # at the write cursor (per-lap ids would make the few newest steps of a wrapped
        # column a "trajectory" of their own, sampled as often as all the others).
        stream = torch.zeros(self.envs, dtype=torch.long)
        # torchrl's 2-D storage takes [envs, k] and lays it out as k steps of the grid.
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
        """Write the filled steps, oldest first, as memory-mapped tensors under ``path``
        (``rows/``) with ``meta.json``."""
        os.makedirs(path, exist_ok=True)
        n = min(self.added, self.per_env)
        if n:
            store = self.buffer.storage._storage  # [per_env, envs], memory-mapped
            start = self.added % self.per_env if self.added > self.per_env else 0
            rows = store[:n].memmap_like(prefix=os.path.join(path, "rows"))
            for a in range(0, n, CHUNK):
                b = min(a + CHUNK, n)
                rows[a:b] = store[(start + torch.arange(a, b)) % self.per_env]
        with open(os.path.join(path, "meta.json"), "w") as f:
            json.dump({"added": self.added, "steps": n, "envs": self.envs}, f)

    def load(self, path: str, added: int) -> None:
        """Read a buffer written by :meth:`save` into this (empty) one; ``added`` is
        the number of steps the saving buffer had seen."""
        meta_path = os.path.join(path, "meta.json")
        if not os.path.exists(meta_path):
            raise UserError(
                f"replay {path} was saved by an older wmblocks (before the 2-D replay of "
                "issue 14) or is incomplete; it cannot be resumed: start a new run"
            )
        with open(meta_path) as f:
            meta = json.load(f)
        if meta["envs"] != self.envs:
            raise UserError(f"replay {path} holds {meta['envs']} environments, not {self.envs}")
        if meta["steps"]:
            rows = TensorDict.load_memmap(os.path.join(path, "rows"))
            for a in range(0, meta["steps"], CHUNK):
                chunk = rows[a : min(a + CHUNK, meta["steps"])]
                self.buffer.extend(chunk.transpose(0, 1).contiguous())
        self.added = added
