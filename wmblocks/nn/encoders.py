"""Observation encoders and decoders: vectors (MLP) and 64x64 images (CNN), one per key
of a dict observation space.

Images are ``[..., C, 64, 64]``, uint8 in [0, 255] or float; both sides use
:func:`image_target` (x / 255 - 0.5) as the representation to encode and to predict.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from wmblocks.functional.symlog import symlog
from wmblocks.nn.layers import MLP, BlockLinear, ChannelNorm, init_linear_, make_act


def image_target(x: Tensor) -> Tensor:
    """uint8 pixels -> float in [-0.5, 0.5] (x / 255 - 0.5); floats are taken as given."""
    return x.float() / 255.0 - 0.5 if x.dtype == torch.uint8 else x


class VectorEncoder(nn.Module):
    """MLP on a vector observation ``[..., K]`` -> ``[..., units]``; symlog inputs for V3."""

    def __init__(
        self, size: int, units: int, layers: int, norm="rms", act="silu", symlog_inputs=True
    ):
        super().__init__()
        self.mlp = MLP(size, None, units, layers, norm, act)
        self.symlog_inputs = symlog_inputs
        self.out_dim = self.mlp.out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(symlog(x) if self.symlog_inputs else x)


class VectorDecoder(nn.Module):
    """MLP from features ``[..., F]`` to a vector prediction ``[..., K]`` (symlog space
    for V3: pair it with ``SymlogMSE``)."""

    def __init__(self, feat_dim: int, size: int, units: int, layers: int, norm="rms", act="silu"):
        super().__init__()
        self.mlp = MLP(feat_dim, size, units, layers, norm, act)

    def forward(self, feat: Tensor) -> Tensor:
        return self.mlp(feat)


class ImageEncoder(nn.Module):
    """Stride-2 CNN on ``[..., C, 64, 64]`` -> ``[..., depth*mults[-1] * 4 * 4]``.

    Stage i: Conv(k=4, s=2, p=1) to ``depth * mults[i]`` channels, channel norm, act;
    four stages take 64 to 4 pixels (V3: depth 32 and mults (1, 2, 4, 8) in 2023,
    (2, 3, 4, 4) in 2024).
    """

    def __init__(self, channels: int, depth: int = 32, mults=(1, 2, 4, 8), norm="rms", act="silu"):
        super().__init__()
        mods: list[nn.Module] = []
        cin = channels
        for m in mults:
            conv = nn.Conv2d(cin, depth * m, 4, 2, 1)
            init_linear_(conv)
            mods += [conv, ChannelNorm(norm, depth * m), make_act(act)]
            cin = depth * m
        self.net = nn.Sequential(*mods)
        self.out_channels = cin
        self.res = 64 // 2 ** len(mults)
        self.out_dim = cin * self.res * self.res

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (64, 64):
            raise ValueError(f"ImageEncoder expects [..., C, 64, 64] images, got {tuple(x.shape)}")
        batch = x.shape[:-3]
        y = self.net(image_target(x).reshape(-1, *x.shape[-3:]))
        return y.reshape(*batch, -1)


class ImageDecoder(nn.Module):
    """Features ``[..., Z + D]`` -> image mean ``[..., C, 64, 64]`` in the
    :func:`image_target` space, mirroring :class:`ImageEncoder` with transposed
    stride-2 convolutions.

    The input layer maps features to ``[depth*mults[-1], 4, 4]``: one Linear of the whole
    feature (V1, V2, V3-2023), or with ``bspace=G > 0`` the V3-2024 "block space" layer:
    a G-block BlockLinear of h_t (group g fills channel block g at every pixel) plus
    Linear(act(norm(Linear(z_t, 2 units)))), summed, normed and activated. It needs
    ``stoch_dim`` (Z) to split the features.
    """

    def __init__(
        self,
        feat_dim: int,
        channels: int,
        depth: int = 32,
        mults=(1, 2, 4, 8),
        norm="rms",
        act="silu",
        *,
        bspace: int = 0,
        stoch_dim: int = 0,
        units: int = 0,
    ):
        super().__init__()
        depths = [depth * m for m in mults]
        self.res = 64 // 2 ** len(mults)
        self.top = depths[-1]
        space = self.top * self.res * self.res
        self.bspace, self.stoch_dim = bspace, stoch_dim
        if bspace:
            if self.top % bspace:
                raise ValueError(f"ImageDecoder: top channels {self.top} not divisible by bspace")
            self.space_deter = BlockLinear(feat_dim - stoch_dim, space, bspace)
            self.space_stoch = MLP(stoch_dim, space, 2 * units, 1, norm, act)
        else:
            self.linear = nn.Linear(feat_dim, space)
            init_linear_(self.linear)
        self.in_norm = ChannelNorm(norm, self.top)
        mods: list[nn.Module] = [make_act(act)]
        for cin, cout in zip(depths[::-1][:-1], depths[::-1][1:], strict=True):
            conv = nn.ConvTranspose2d(cin, cout, 4, 2, 1)
            init_linear_(conv)
            mods += [conv, ChannelNorm(norm, cout), make_act(act)]
        out = nn.ConvTranspose2d(depths[0], channels, 4, 2, 1)
        init_linear_(out)
        mods.append(out)
        self.net = nn.Sequential(*mods)

    def _space(self, feat: Tensor) -> Tensor:
        n, r = feat.shape[0], self.res
        if not self.bspace:
            return self.linear(feat).view(n, self.top, r, r)
        g = self.bspace
        stoch, deter = feat[:, : self.stoch_dim], feat[:, self.stoch_dim :]
        x0 = self.space_deter(deter.view(n, g, -1))  # [N, G, r*r*C/G]
        x0 = x0.view(n, g, r, r, -1).permute(0, 1, 4, 2, 3).reshape(n, self.top, r, r)
        x1 = self.space_stoch(stoch).view(n, r, r, self.top).permute(0, 3, 1, 2)
        return x0 + x1

    def forward(self, feat: Tensor) -> Tensor:
        batch = feat.shape[:-1]
        x = self.in_norm(self._space(feat.reshape(-1, feat.shape[-1])))
        x = self.net(x)
        return x.reshape(*batch, *x.shape[1:])


def _is_image(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3


def _check_space(key: str, shape: tuple[int, ...]) -> None:
    if len(shape) == 1 or (_is_image(shape) and tuple(shape[1:]) == (64, 64)):
        return
    raise ValueError(
        f"observation {key!r} has shape {tuple(shape)}: supported are vectors [K] and "
        "images [C, 64, 64]"
    )


class MultiEncoder(nn.Module):
    """One encoder per observation key, outputs concatenated in sorted key order.

    Args:
        shapes: ``{key: shape}`` with vectors ``(K,)`` and images ``(C, 64, 64)``.
        units, layers: vector MLPs; depth, mults: image CNNs; norm, act;
        symlog_inputs: symlog the vector inputs (V3).

    ``forward(obs: Mapping[key, [..., *shape]]) -> [..., E]``.
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        *,
        units: int,
        layers: int,
        depth: int = 32,
        mults=(1, 2, 4, 8),
        norm: str = "rms",
        act: str = "silu",
        symlog_inputs: bool = True,
    ):
        super().__init__()
        self.keys = sorted(shapes)
        encoders = {}
        for key in self.keys:
            shape = tuple(shapes[key])
            _check_space(key, shape)
            if _is_image(shape):
                encoders[key] = ImageEncoder(shape[0], depth, mults, norm, act)
            else:
                encoders[key] = VectorEncoder(shape[0], units, layers, norm, act, symlog_inputs)
        self.encoders = nn.ModuleDict(encoders)
        self.out_dim = sum(e.out_dim for e in self.encoders.values())

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([self.encoders[k](obs[k]) for k in self.keys], -1)


class MultiDecoder(nn.Module):
    """One decoder per observation key: ``forward(feat [..., F]) -> {key: prediction}``
    with vector predictions ``[..., K]`` and image means ``[..., C, 64, 64]``."""

    def __init__(
        self,
        feat_dim: int,
        shapes: Mapping[str, tuple[int, ...]],
        *,
        units: int,
        layers: int,
        depth: int = 32,
        mults=(1, 2, 4, 8),
        norm: str = "rms",
        act: str = "silu",
        bspace: int = 0,
        stoch_dim: int = 0,
    ):
        super().__init__()
        self.keys = sorted(shapes)
        self.shapes = {k: tuple(shapes[k]) for k in self.keys}
        decoders = {}
        for key, shape in self.shapes.items():
            _check_space(key, shape)
            if _is_image(shape):
                decoders[key] = ImageDecoder(
                    feat_dim,
                    shape[0],
                    depth,
                    mults,
                    norm,
                    act,
                    bspace=bspace,
                    stoch_dim=stoch_dim,
                    units=units,
                )
            else:
                decoders[key] = VectorDecoder(feat_dim, shape[0], units, layers, norm, act)
        self.decoders = nn.ModuleDict(decoders)

    def forward(self, feat: Tensor) -> dict[str, Tensor]:
        return {k: self.decoders[k](feat) for k in self.keys}

    def is_image(self, key: str) -> bool:
        return _is_image(self.shapes[key])
