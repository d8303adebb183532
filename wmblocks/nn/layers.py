"""Basic layers: norms, activations, MLPs and block-diagonal linear maps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from wmblocks.dists import full_precision

NORMS = ("rms", "layer", "none")
ACTS = ("silu", "elu", "gelu", "relu")


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` computed in float32 (as the reference's norms), also under bf16
    autocast; the next layer casts back. A no-op cast in float32 training."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(full_precision(x))


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` computed in float32, also under bf16 autocast (see RMSNorm)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(full_precision(x))


def make_norm(kind: str, dim: int) -> nn.Module:
    """``"rms"`` (V3-2024, eps 1e-4), ``"layer"`` (V2 / V3-2023, eps 1e-3) or ``"none"``."""
    if kind == "rms":
        return RMSNorm(dim, eps=1e-4)
    if kind == "layer":
        return LayerNorm(dim, eps=1e-3)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def make_act(kind: str) -> nn.Module:
    """``"silu"`` (V3), ``"elu"`` (V1, V2), ``"gelu"`` or ``"relu"``."""
    acts = {"silu": nn.SiLU, "elu": nn.ELU, "gelu": nn.GELU, "relu": nn.ReLU}
    if kind not in acts:
        raise ValueError(f"unknown activation {kind!r}; choose one of {ACTS}")
    return acts[kind]()


def init_linear_(layer: nn.Linear | nn.Conv2d | nn.ConvTranspose2d, scale: float = 1.0) -> None:
    """Fan-in truncated-normal weights (std = scale / sqrt(fan_in)), zero bias, as the
    official V3 code's ``trunc_normal_in``; ``scale = 0`` zeroes the weights (V3 reward
    and value outputs, so twohot predictions start at exactly 0)."""
    weight = layer.weight
    fan_in = (
        weight[0].numel()
        if not isinstance(layer, nn.ConvTranspose2d)
        else (weight.shape[0] * weight[0, 0].numel())
    )
    with torch.no_grad():
        if scale == 0.0:
            weight.zero_()
        else:
            std = scale / math.sqrt(fan_in) / 0.87962566103423978  # trunc_normal(-2, 2) std
            nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
        if layer.bias is not None:
            layer.bias.zero_()


class MLP(nn.Module):
    """``layers`` x (Linear -> norm -> act), then an optional output Linear.

    Args:
        in_dim: input features. out_dim: output features of a final plain Linear, or
            None for no output layer (the output then has ``units`` features).
        units, layers (keyword-only): hidden width and depth (``layers`` may be 0).
        norm, act: see :func:`make_norm`, :func:`make_act`.
        out_scale: init scale of the output layer; 0 starts it at exactly zero.

    Shapes: ``[..., in_dim]`` -> ``[..., out_dim or units]``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int | None,
        *,
        units: int,
        layers: int,
        norm: str = "rms",
        act: str = "silu",
        out_scale: float = 1.0,
    ):
        super().__init__()
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers):
            linear = nn.Linear(dim, units)
            init_linear_(linear)
            mods += [linear, make_norm(norm, units), make_act(act)]
            dim = units
        if out_dim is not None:
            out = nn.Linear(dim, out_dim)
            init_linear_(out, out_scale)
            mods.append(out)
            dim = out_dim
        self.net = nn.Sequential(*mods)
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    @property
    def first(self) -> nn.Linear | None:
        """The first Linear layer, or None for an MLP with neither hidden nor output layer."""
        return self.net[0] if len(self.net) else None

    def after_first(self, h: Tensor) -> Tensor:
        """The layers after :attr:`first` applied to its output ``h``:
        ``self(x) == self.after_first(self.first(x))``."""
        for i, layer in enumerate(self.net):
            if i:
                h = layer(h)
        return h


def mlps_on(x: Tensor, mlps: Sequence[MLP]) -> list[Tensor]:
    """``[mlp(x) for mlp in mlps]``, with the first Linear layers of all of them as one
    matmul: ``[W_1; ...; W_k] x + [b_1; ...; b_k]``, split by columns into each MLP's
    first output, then each MLP's remaining layers.

    The same dot products as separate calls, as one ``[N, F] x [F, sum_i units_i]``
    matmul instead of k skinny ones (DreamerV3's five heads on the 16,384 imagined
    states at size 1m: 35 ms instead of 47 ms on a 2-core CPU), and in the backward
    one weight-gradient matmul for all of them. Autograd sees one weight, so put MLPs
    whose first layers all need gradients, or none does, in one call: a frozen MLP
    grouped with a trained one gets its gradient computed and thrown away.

    Shapes: ``x`` ``[..., F]`` (every MLP's input width F) -> a list of
    ``[..., out_dim_i]``. MLPs without a layer are called as they are.
    """
    fused = [m for m in mlps if m.first is not None]
    if len(fused) < 2:
        return [m(x) for m in mlps]
    firsts = [m.first for m in fused]
    widths = [f.in_features for f in firsts]
    if any(w != x.shape[-1] for w in widths):
        raise ValueError(
            f"mlps_on: input has {x.shape[-1]} features but the MLPs' first layers take "
            f"{widths}; run MLPs with different inputs apart"
        )
    weight = torch.cat([f.weight for f in firsts])
    bias = torch.cat([f.bias for f in firsts])
    pre = nn.functional.linear(x, weight, bias).split([f.out_features for f in firsts], -1)
    out = {id(m): m.after_first(h) for m, h in zip(fused, pre, strict=True)}
    return [out[id(m)] if id(m) in out else m(x) for m in mlps]


class BlockLinear(nn.Module):
    """Block-diagonal linear map with ``blocks`` independent groups (V3-2024 block GRU).

    ``[..., G, in/G] -> [..., G, out/G]``: group g multiplies only its own slice, so the
    cost is 1/G of a dense layer of the same width. The weights ``[G, in/G, out/G]``
    initialise with the fan-in of the *whole* input, std = 1 / sqrt(in_features) (the
    reference's initializer counts a ``[G, in/G, out/G]`` kernel's fan-in as
    G * in/G), not of one block's slice.
    """

    def __init__(self, in_features: int, out_features: int, blocks: int):
        super().__init__()
        if in_features % blocks or out_features % blocks:
            raise ValueError(
                f"BlockLinear: in_features={in_features} and out_features={out_features} "
                f"must both be divisible by blocks={blocks}"
            )
        self.blocks = blocks
        gin, gout = in_features // blocks, out_features // blocks
        std = 1.0 / math.sqrt(in_features) / 0.87962566103423978
        self.weight = nn.Parameter(torch.empty(blocks, gin, gout))
        nn.init.trunc_normal_(self.weight, 0.0, std, -2 * std, 2 * std)
        self.bias = nn.Parameter(torch.zeros(blocks, gout))

    def forward(self, x: Tensor) -> Tensor:
        # x: [N, G, in/G] -> [G, N, in/G] @ [G, in/G, out/G] -> [N, G, out/G]. The bias
        # is added after, not by baddbmm: that first copies the broadcast bias into its
        # output, where a compiled graph fuses the addition into the next kernel.
        return torch.bmm(x.transpose(0, 1), self.weight).transpose(0, 1) + self.bias


class ChannelNorm(nn.Module):
    """A norm over the channel dim of ``[N, C, H, W]`` images (V3's per-pixel norm)."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        self.norm = make_norm(kind, channels)

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.norm, nn.Identity):
            return x
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
