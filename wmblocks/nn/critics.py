"""Critics v(s_t) on features ``[..., F]`` and their slow copies."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from wmblocks.dists import UnitNormal
from wmblocks.nn.heads import ScalarHead, TwoHotHead


class MSECritic(ScalarHead):
    """DreamerV1/V2 critic: one output read as ``dist`` (V1: unit Gaussian,
    :class:`~wmblocks.dists.UnitNormal`; V2: squared error, :class:`~wmblocks.dists.MSE`).
    ``forward(feat [..., F])`` returns the distribution, batch shape ``[...]``."""

    def __init__(
        self,
        feat_dim: int,
        *,
        units: int = 400,
        layers: int = 3,
        norm: str = "none",
        act: str = "elu",
        dist: Callable[..., object] = UnitNormal,
    ):
        super().__init__(feat_dim, units=units, layers=layers, norm=norm, act=act, dist=dist)


class TwoHotCritic(TwoHotHead):
    """DreamerV3 critic: a :class:`~wmblocks.nn.heads.TwoHotHead` (255 bins kept as a
    buffer, zero-initialised output so it predicts exactly 0 at the start); ``dist``
    picks the twohot convention (``TwoHotSymlog`` for 2024, ``TwoHotSymlog2023``).
    ``forward(feat [..., F])`` returns the distribution, batch shape ``[...]``."""


@torch.no_grad()
def ema_update_(
    target: nn.Module, source: nn.Module, rate: float, skip: Tensor | None = None
) -> None:
    """``target <- (1 - rate) target + rate source`` for every parameter (rate 1 copies).

    ``skip`` (``[]`` bool, an update skipped for a non-finite loss): the rate becomes
    ``rate * (1 - skip)``, so a skipped update leaves ``target`` exactly as it was,
    decided on the device (no host sync)."""
    tgt = [p for p in target.parameters()]
    src = [p.detach() for p in source.parameters()]
    if skip is not None and tgt:
        weight = (~skip).to(tgt[0].dtype) * rate  # [] rate, or 0 when skipped
        torch._foreach_lerp_(tgt, src, [weight] * len(tgt))
    elif rate == 1.0:
        torch._foreach_copy_(tgt, src)
    else:
        torch._foreach_lerp_(tgt, src, rate)


class SlowCritic(nn.Module):
    """A frozen copy of a critic, moved toward it by :meth:`update`.

    Args:
        critic: the critic to follow (copied at construction).
        rate: EMA rate per update (V3: 0.02; V2: 1, a hard copy).
        every: update every this many calls (V3: 1; V2: 100).

    ``forward`` evaluates the copy; it has no trainable parameters. The call counter is
    a Python int (no host sync) saved in the state dict. ``update(critic, skip)`` with a
    true ``skip`` (``[]`` bool tensor) leaves the copy as it is (:func:`ema_update_`);
    the call still counts (V2: a skipped 100th call postpones the copy to the 200th).
    """

    def __init__(self, critic: nn.Module, rate: float, every: int = 1):
        super().__init__()
        self.critic = copy.deepcopy(critic).requires_grad_(False)
        self.rate, self.every = rate, every
        self.calls = 0

    def forward(self, feat: Tensor):
        return self.critic(feat)

    @property
    def mlp(self) -> nn.Module:
        """The copy's MLP (with :meth:`read`, for :func:`~wmblocks.nn.heads.heads_on`)."""
        return self.critic.mlp

    def read(self, out: Tensor):
        """The copy's distribution of its MLP's output (the critic's ``read``)."""
        return self.critic.read(out)

    def update(self, critic: nn.Module, skip: Tensor | None = None) -> None:
        self.calls += 1
        if self.calls % self.every == 0:
            ema_update_(self.critic, critic, self.rate, skip)

    def get_extra_state(self) -> Any:
        return {"calls": self.calls}

    def set_extra_state(self, state: Any) -> None:
        self.calls = int(state["calls"])
