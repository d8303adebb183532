"""Stateful wrapper around :mod:`wmblocks.functional.normalize` (DreamerV3 eq. 11-12)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wmblocks.distributed import all_gather_cat
from wmblocks.functional.normalize import percentile_ema, return_scale


class ReturnNormalizer(nn.Module):
    """Keeps the EMA of the 5th/95th return percentiles as buffers (saved in checkpoints).

    ``update(returns)`` takes R^lambda of any shape and returns the new scale
    ``max(limit, high - low)`` (a ``[]`` tensor on the buffers' device; no host sync).
    ``scale()`` reads it without updating. ``state()`` copies the EMA and
    ``restore_(state, skip)`` puts the copy back where ``skip`` (``[]`` bool) is true:
    an update skipped for a non-finite loss leaves no trace in the EMA.

    Data-parallel training (:mod:`wmblocks.distributed`): ``update`` takes the
    percentiles of every rank's returns, all-gathered ``[N n]``, as the reference's
    ``Moments`` all-gathers them across devices; every rank then holds the state a
    single process would hold on the global batch's returns.
    """

    def __init__(
        self,
        decay: float = 0.99,
        perc_low: float = 0.05,
        perc_high: float = 0.95,
        limit: float = 1.0,
    ):
        super().__init__()
        self.decay, self.perc_low, self.perc_high, self.limit = decay, perc_low, perc_high, limit
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))

    @torch.no_grad()
    def update(self, returns: Tensor) -> Tensor:
        returns = all_gather_cat(returns.detach().reshape(-1).to(self.low.dtype))
        low, high = percentile_ema(
            self.low, self.high, returns, self.decay, self.perc_low, self.perc_high
        )
        self.low.copy_(low)
        self.high.copy_(high)
        return self.scale()

    def state(self) -> tuple[Tensor, Tensor]:
        """A copy of the EMA ``(low, high)``, each ``[]``, for :meth:`restore_`."""
        return self.low.clone(), self.high.clone()

    @torch.no_grad()
    def restore_(self, state: tuple[Tensor, Tensor], skip: Tensor) -> None:
        """``(low, high) <- state`` where ``skip`` (``[]`` bool), on the device."""
        self.low.copy_(torch.where(skip, state[0], self.low))
        self.high.copy_(torch.where(skip, state[1], self.high))

    def scale(self) -> Tensor:
        return return_scale(self.low, self.high, self.limit)
