"""Replay batches sampled in a background thread while the device trains on the last.

The training loop asks for the next batch (:meth:`Prefetcher.request`) only where
nothing will be added to the replay before it is used: right after a step's rows are
stored (the batch is gathered while the environments step), and between two updates
of one burst. Each batch is therefore the batch a synchronous ``sample`` at the time
of use would give (the replay has its own generator, which only the sampling thread
draws from), except for the keys an update writes back into replay (V3-2024's latent
context), which :meth:`~Prefetcher.take` reads again at the time of use. The results of
a run do not change; ``tests/train/test_prefetch.py`` checks batch by batch.

On CUDA the thread also copies the batch into pinned (page-locked) host memory, and
:meth:`~Prefetcher.take` issues the copy to the device without blocking: it is queued
on the stream after the update still running there, so neither the sampling, nor the
gather from the memory-mapped files, nor the pinning waits for the GPU or makes it wait.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch
from tensordict import TensorDictBase

from wmblocks.train.replay import SequenceReplay

Index = tuple[torch.Tensor, torch.Tensor]


def to_device(batch: TensorDictBase, device: torch.device) -> TensorDictBase:
    """A replay batch on ``device``. To CUDA through pinned memory with a non-blocking
    copy: the update that follows has no host sync, so the CPU samples and copies the
    next batch while the GPU still runs this one."""
    if device.type == "cuda":
        return _pinned(batch).to(device, non_blocking=True)
    return batch.to(device)


def _pinned(batch: TensorDictBase) -> TensorDictBase:
    """``batch`` in page-locked host memory (itself when it already is)."""
    leaves = batch.values(include_nested=True, leaves_only=True)
    return batch if all(v.is_pinned() for v in leaves) else batch.pin_memory()


class Prefetcher:
    """The next ``[batch, length]`` replay batch, sampled ahead by one worker thread.

    ``request()`` starts sampling (at most one batch is pending); ``take()`` returns
    ``(batch on device, storage index)``: the pending batch, or one sampled now when
    none was requested. ``refresh``: the keys an update writes back into replay
    (:meth:`SequenceReplay.write`), read again at ``take`` so that a batch gathered
    before that write sees it. A sampling error is raised by ``take``, with the
    worker's traceback.
    """

    def __init__(self, replay: SequenceReplay, device: torch.device, refresh: tuple[str, ...] = ()):
        self.replay, self.device, self.refresh = replay, device, tuple(refresh)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wmblocks-replay")
        self._pending: Future | None = None

    @property
    def pending(self) -> bool:
        """Whether a requested batch has not been taken yet."""
        return self._pending is not None

    def _sample(self) -> tuple[TensorDictBase, Index]:
        batch, index = self.replay.sample_indexed()
        return (_pinned(batch) if self.device.type == "cuda" else batch), index

    def request(self) -> Future:
        """Start sampling the next batch in the worker thread (unless one is pending);
        returns its future."""
        if self._pending is None:
            self._pending = self._pool.submit(self._sample)
        return self._pending

    def take(self) -> tuple[TensorDictBase, Index]:
        """The next batch on the device and its storage index (for write-back)."""
        future, self._pending = self._pending, None
        if future is None:
            batch, index = self._sample()
        else:
            batch, index = future.result()
            if self.refresh:  # written back by the updates since it was gathered
                fresh = self.replay.read(index, self.refresh)
                batch.update(_pinned(fresh) if self.device.type == "cuda" else fresh)
        return to_device(batch, self.device), index

    def close(self) -> None:
        """Wait for a pending batch (dropped) and stop the worker."""
        self._pending = None
        self._pool.shutdown(wait=True)
