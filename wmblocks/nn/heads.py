"""Output heads: an MLP on features ``[..., F]`` that returns a distribution.

Every head owns how its raw output is read (bins, squashing, event dims), so losses
only call ``.mean``, ``.mode``, ``.log_prob`` and ``.entropy`` on what it returns:

    TwoHotHead      reward and critic of V3 (:class:`~wmblocks.dists.TwoHotSymlog`, or
                    ``TwoHotSymlog2023``), bins kept as a buffer
    ScalarHead      reward and critic of V1 (unit Gaussian) and V2 (squared error)
    BernoulliHead   continue (V3) and discount (V2) heads

:func:`heads_on` runs several heads on one input with their first layers as one matmul.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from wmblocks.dists import Bernoulli, TwoHotSymlog, TwoHotSymlog2023, UnitNormal
from wmblocks.functional.twohot import is_antisymmetric, symexp_twohot_bins, twohot_bins
from wmblocks.nn.layers import MLP, mlps_on

TWOHOT_BINS = {TwoHotSymlog: symexp_twohot_bins, TwoHotSymlog2023: twohot_bins}


class TwoHotHead(nn.Module):
    """MLP -> logits over ``bins`` (255) -> a twohot distribution.

    Args:
        in_dim: F. units, layers, norm, act: the MLP (see :class:`MLP`).
        dist: :class:`~wmblocks.dists.TwoHotSymlog` (seed and 2024: symexp-spaced bins,
            raw-space expectation) or :class:`~wmblocks.dists.TwoHotSymlog2023`
            (uniform bins in symlog space).
        bins: number of bins K.
        out_scale: init scale of the output layer; 0 (the reference) predicts exactly 0
            at the start.

    ``forward(feat [..., F]) -> dist`` with batch shape ``[...]``.
    """

    def __init__(
        self,
        in_dim: int,
        *,
        units: int,
        layers: int,
        norm: str = "rms",
        act: str = "silu",
        dist: type = TwoHotSymlog,
        bins: int = 255,
        out_scale: float = 0.0,
    ):
        super().__init__()
        if dist not in TWOHOT_BINS:
            raise ValueError(f"TwoHotHead: dist must be one of {list(TWOHOT_BINS)}, got {dist}")
        self.mlp = MLP(
            in_dim, bins, units=units, layers=layers, norm=norm, act=act, out_scale=out_scale
        )
        self.dist = dist
        with torch.device("cpu"):  # real values, also when built under a meta device
            grid = TWOHOT_BINS[dist](bins)
        self.symmetric = is_antisymmetric(grid)  # checked once: decode by one matmul
        self.register_buffer("bins", grid, persistent=False)

    def forward(self, feat: Tensor):
        return self.read(self.mlp(feat))

    def read(self, logits: Tensor):
        """The distribution of the MLP's output ``[..., K]``."""
        return self.dist(logits, self.bins, self.symmetric)


class ScalarHead(nn.Module):
    """MLP -> one output -> ``dist(pred, event_dims=0)``.

    Args:
        in_dim: F. units, layers, norm, act, out_scale: the MLP.
        dist: :class:`~wmblocks.dists.UnitNormal` (V1: log N(x; pred, 1)) or
            :class:`~wmblocks.dists.MSE` (V2's ``mse`` heads: -(pred - x)^2, no 1/2).

    ``forward(feat [..., F]) -> dist`` with batch shape ``[...]``.
    """

    def __init__(
        self,
        in_dim: int,
        *,
        units: int,
        layers: int,
        norm: str = "none",
        act: str = "elu",
        dist: Callable[..., object] = UnitNormal,
        out_scale: float = 1.0,
    ):
        super().__init__()
        self.mlp = MLP(
            in_dim, 1, units=units, layers=layers, norm=norm, act=act, out_scale=out_scale
        )
        self.dist = dist

    def forward(self, feat: Tensor):
        return self.read(self.mlp(feat))

    def read(self, out: Tensor):
        """The distribution of the MLP's output ``[..., 1]``."""
        return self.dist(out.squeeze(-1), event_dims=0)


class BernoulliHead(nn.Module):
    """MLP -> one logit -> :class:`~wmblocks.dists.Bernoulli` (V2 discount, V3 continue).

    ``forward(feat [..., F]) -> Bernoulli`` with batch shape ``[...]``: ``mean`` is the
    probability, ``mode`` 1[logit > 0], ``log_prob(target)`` the negative sigmoid
    cross-entropy (soft targets allowed).
    """

    def __init__(
        self,
        in_dim: int,
        *,
        units: int,
        layers: int,
        norm: str = "rms",
        act: str = "silu",
        out_scale: float = 1.0,
    ):
        super().__init__()
        self.mlp = MLP(
            in_dim, 1, units=units, layers=layers, norm=norm, act=act, out_scale=out_scale
        )

    def forward(self, feat: Tensor) -> Bernoulli:
        return self.read(self.mlp(feat))

    def read(self, logit: Tensor) -> Bernoulli:
        """The distribution of the MLP's output ``[..., 1]``."""
        return Bernoulli(logit.squeeze(-1))


def heads_on(feat: Tensor, *heads: nn.Module) -> list:
    """``[head(feat) for head in heads]`` for heads that share their input, with the
    first layers of their MLPs as one matmul (:func:`~wmblocks.nn.layers.mlps_on`).

    A head here is any module with an ``mlp`` (:class:`~wmblocks.nn.layers.MLP`) and a
    ``read(out)`` that turns the MLP's output into its distribution, as every head,
    actor and critic of :mod:`wmblocks.nn` has (``forward(feat) == read(mlp(feat))``).
    Group heads by their gradients (all trained, or all frozen or under no_grad): see
    ``mlps_on``. ``feat`` ``[..., F]`` -> one distribution per head, batch shape
    ``[...]``.
    """
    outs = mlps_on(feat, [head.mlp for head in heads])
    return [head.read(out) for head, out in zip(heads, outs, strict=True)]
