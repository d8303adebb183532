"""Policies pi(a_t | s_t) on features s_t = cat([z_t, h_t]) ``[..., F]``.

Each actor is an MLP whose ``forward`` returns a distribution from
:mod:`wmblocks.dists` with ``sample`` (REINFORCE), ``rsample`` (dynamics backprop),
``log_prob``, ``entropy`` and ``mode`` (evaluation). Continuous actions live in
[-1, 1]^A (the recipes rescale Box spaces); discrete actions are one-hot ``[..., A]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wmblocks.dists import BoundedNormal, OneHotStraightThrough, TanhNormal, TruncatedNormal
from wmblocks.nn.layers import MLP


class DiscreteActor(nn.Module):
    """One-hot categorical policy: MLP -> logits ``[..., A]`` ->
    :class:`~wmblocks.dists.OneHotStraightThrough` (V2: unimix 0; V3-2023 ``onehot``:
    unimix 0.01; V3-2024 ``categorical``: unimix 0, output scale 0.01)."""

    def __init__(
        self,
        feat_dim: int,
        actions: int,
        *,
        units: int,
        layers: int,
        norm: str = "rms",
        act: str = "silu",
        unimix: float = 0.01,
        out_scale: float = 0.01,
    ):
        super().__init__()
        self.mlp = MLP(
            feat_dim, actions, units=units, layers=layers, norm=norm, act=act, out_scale=out_scale
        )
        self.unimix = unimix

    def forward(self, feat: Tensor) -> OneHotStraightThrough:
        return self.read(self.mlp(feat))

    def read(self, logits: Tensor) -> OneHotStraightThrough:
        """The policy of the MLP's output ``[..., A]``."""
        return OneHotStraightThrough(logits, self.unimix)


class BoundedNormalActor(nn.Module):
    """DreamerV3 continuous policy: Normal(tanh(mean), std), std in [minstd, maxstd]."""

    def __init__(
        self,
        feat_dim: int,
        actions: int,
        *,
        units: int,
        layers: int,
        norm: str = "rms",
        act: str = "silu",
        minstd: float = 0.1,
        maxstd: float = 1.0,
        out_scale: float = 0.01,
    ):
        super().__init__()
        self.mlp = MLP(
            feat_dim,
            2 * actions,
            units=units,
            layers=layers,
            norm=norm,
            act=act,
            out_scale=out_scale,
        )
        self.minstd, self.maxstd = minstd, maxstd

    def forward(self, feat: Tensor) -> BoundedNormal:
        return self.read(self.mlp(feat))

    def read(self, out: Tensor) -> BoundedNormal:
        """The policy of the MLP's output ``[..., 2A]`` (mean, std halves)."""
        mean, std = out.chunk(2, -1)
        return BoundedNormal(mean, std, self.minstd, self.maxstd)


class TanhNormalActor(nn.Module):
    """DreamerV1 policy: tanh(Normal(mean, std)) with mean = 5 tanh(x / 5) and
    std = softplus(y + softplus^-1(init_std)) + min_std (official V1: init_std 5,
    min_std 1e-4, mean_scale 5)."""

    def __init__(
        self,
        feat_dim: int,
        actions: int,
        *,
        units: int = 400,
        layers: int = 4,
        norm: str = "none",
        act: str = "elu",
        init_std: float = 5.0,
        min_std: float = 1e-4,
        mean_scale: float = 5.0,
    ):
        super().__init__()
        self.mlp = MLP(feat_dim, 2 * actions, units=units, layers=layers, norm=norm, act=act)
        self.raw_init_std = math.log(math.expm1(init_std))
        self.min_std, self.mean_scale = min_std, mean_scale

    def forward(self, feat: Tensor) -> TanhNormal:
        return self.read(self.mlp(feat))

    def read(self, out: Tensor) -> TanhNormal:
        """The policy of the MLP's output ``[..., 2A]`` (mean, std halves)."""
        mean, std = out.chunk(2, -1)
        mean = self.mean_scale * torch.tanh(mean / self.mean_scale)
        return TanhNormal(mean, F.softplus(std + self.raw_init_std) + self.min_std)


class TruncNormalActor(nn.Module):
    """DreamerV2 continuous policy: TruncatedNormal(tanh(x), 2 sigmoid((y + init_std)/2)
    + min_std) on [-1, 1] (official V2: init_std 0, min_std 0.1)."""

    def __init__(
        self,
        feat_dim: int,
        actions: int,
        *,
        units: int = 400,
        layers: int = 4,
        norm: str = "none",
        act: str = "elu",
        init_std: float = 0.0,
        min_std: float = 0.1,
    ):
        super().__init__()
        self.mlp = MLP(feat_dim, 2 * actions, units=units, layers=layers, norm=norm, act=act)
        self.init_std, self.min_std = init_std, min_std

    def forward(self, feat: Tensor) -> TruncatedNormal:
        return self.read(self.mlp(feat))

    def read(self, out: Tensor) -> TruncatedNormal:
        """The policy of the MLP's output ``[..., 2A]`` (mean, std halves)."""
        mean, std = out.chunk(2, -1)
        std = 2.0 * torch.sigmoid((std + self.init_std) / 2.0) + self.min_std
        return TruncatedNormal(torch.tanh(mean), std)


def explore(action: Tensor, noise: float) -> Tensor:
    """DreamerV1's exploration for continuous actions: clip(a + N(0, noise^2), -1, 1)
    (official V1: noise 0.3)."""
    return (action + noise * torch.randn_like(action)).clamp(-1.0, 1.0)
