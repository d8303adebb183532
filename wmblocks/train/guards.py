"""Non-finite updates: counted on the device, read where the loop reads its metrics.

A recipe's update skips its optimiser steps when the loss or a gradient is not finite
(:func:`wmblocks.optim.step_if_finite`) and reports ``train/skipped`` (``[]`` 0 or 1).
:class:`SkippedUpdates` sums those flags and the current run of them without a host
sync; the loop reads the counts every ``log_every`` steps (as ``train/skipped_updates``)
and before each checkpoint, and stops the run once ``--max-skipped-in-row`` updates in
a row were skipped, before writing another checkpoint.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from wmblocks.errors import UserError

SKIPPED = "train/skipped"  # the update's metric: 1 when its steps were skipped


class SkippedUpdates:
    """Counts of skipped updates, kept as ``[]`` int64 tensors on ``device``.

    ``add(metrics)`` after every update, with s = ``metrics["train/skipped"]`` (0/1):

        total  <- total + s
        streak <- (streak + s) * s        skips in a row: +1, or 0 after a good update

    (device ops only; updates without the metric count as good ones). ``read(step,
    updates)`` reads both on the host (one sync: call it where the metrics are read
    anyway) and returns ``total``; when ``limit > 0`` and ``streak >= limit`` it raises a
    :class:`~wmblocks.errors.UserError` instead, naming the streak, the step and
    ``checkpoint`` (the last one written, which the caller then leaves as it is).
    ``total`` starts from ``total`` (a resumed run's count).
    """

    def __init__(
        self, device: torch.device, limit: int, total: int = 0, checkpoint: str = ""
    ) -> None:
        self.total = torch.full((), int(total), dtype=torch.int64, device=device)
        self.streak = torch.zeros((), dtype=torch.int64, device=device)
        self.limit, self.checkpoint = int(limit), checkpoint

    def add(self, metrics: dict[str, Tensor]) -> None:
        s = metrics.get(SKIPPED)
        if s is None:
            self.streak = torch.zeros_like(self.streak)
            return
        s = s.to(self.total.dtype)
        self.total = self.total + s
        self.streak = (self.streak + s) * s

    def read(self, step: int, updates: int) -> int:
        total, streak = torch.stack([self.total, self.streak]).tolist()
        if self.limit > 0 and streak >= self.limit:
            raise UserError(stop_message(streak, step, updates, self.checkpoint))
        return int(total)


def stop_message(streak: int, step: int, updates: int, checkpoint: str) -> str:
    """The one line a run stops with after ``streak`` skipped updates in a row."""
    if checkpoint and os.path.exists(checkpoint):
        kept = f"the last checkpoint, {checkpoint}, is kept as it was (none is written after)"
    else:
        kept = "no checkpoint had been written yet"
    return (
        f"the last {streak} updates in a row had a non-finite loss or gradient and were "
        f"skipped (at step {step}, update {updates}); stopping: {kept}. Check the "
        "environment's observations and rewards, or lower the learning rate, then "
        "--resume; --max-skipped-in-row sets the limit (0: never stop)"
    )
