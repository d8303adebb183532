"""Observation encoders and decoders: vectors (MLP) and 64x64 images (CNN), one per key
of a dict observation space.

Decoders return distributions over their own target space; ``target(x)`` maps a raw
observation into that space (the identity for vectors; uint8 pixels to x / 255 for
the V3-2024 sigmoid decoder, to x / 255 - 0.5 for V1, V2 and V3-2023). Encoders read
pixels as x / 255 - 0.5 in every version.

The CNNs of the versions differ (each as its reference):

- :class:`ImageEncoder` / :class:`ImageDecoder`: V3, stride-2 convolutions with kernel
  4 and "same" padding, a channel norm and activation after each, 64 -> 4 pixels.
- :class:`ValidConvEncoder` / :class:`ValidConvDecoder`: V1 and V2, kernel 4 stride 2
  with VALID padding (64 -> 31 -> 14 -> 6 -> 2), no norm; the decoder maps the
  features to a 1 x 1 map and grows it with transposed convolutions of kernels
  5, 5, 6, 6 (1 -> 5 -> 13 -> 30 -> 64).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from einops import rearrange
from torch import Tensor, nn

from wmblocks.dists import MSE, SymlogMSE, UnitNormal
from wmblocks.functional.symlog import symlog
from wmblocks.nn.layers import MLP, BlockLinear, ChannelNorm, init_linear_, make_act


def image_input(x: Tensor) -> Tensor:
    """uint8 pixels -> float in [-0.5, 0.5] (x / 255 - 0.5): what every encoder reads
    (and the V1 / V2 / V3-2023 decoders predict). Floats are taken as given."""
    return x.float() / 255.0 - 0.5 if x.dtype == torch.uint8 else x


def image_unit(x: Tensor) -> Tensor:
    """uint8 pixels -> float in [0, 1] (x / 255): the V3-2024 sigmoid decoder's target.
    Floats are taken as given."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def _flat_images(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """``[..., C, H, W]`` -> ``[N, C, H, W]`` and the leading shape."""
    return x.reshape(-1, *x.shape[-3:]), tuple(x.shape[:-3])


class VectorEncoder(nn.Module):
    """MLP on a vector observation ``[..., K]`` -> ``[..., units]``; symlog inputs for V3."""

    def __init__(
        self,
        size: int,
        *,
        units: int,
        layers: int,
        norm: str = "rms",
        act: str = "silu",
        symlog_inputs: bool = True,
    ):
        super().__init__()
        self.mlp = MLP(size, None, units=units, layers=layers, norm=norm, act=act)
        self.symlog_inputs = symlog_inputs
        self.out_dim = self.mlp.out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(symlog(x) if self.symlog_inputs else x)


class VectorDecoder(nn.Module):
    """MLP from features ``[..., F]`` to ``dist(pred [..., K], event_dims=1)``:
    :class:`~wmblocks.dists.SymlogMSE` for V3 (prediction in symlog space),
    :class:`~wmblocks.dists.MSE` for V2 (the reference's ``mse``),
    :class:`~wmblocks.dists.UnitNormal` for V1."""

    def __init__(
        self,
        feat_dim: int,
        size: int,
        *,
        units: int,
        layers: int,
        norm: str = "rms",
        act: str = "silu",
        dist: Callable[..., object] = SymlogMSE,
    ):
        super().__init__()
        self.mlp = MLP(feat_dim, size, units=units, layers=layers, norm=norm, act=act)
        self.dist = dist

    def forward(self, feat: Tensor):
        return self.dist(self.mlp(feat), event_dims=1)

    @staticmethod
    def target(x: Tensor) -> Tensor:
        return x


class ImageEncoder(nn.Module):
    """V3 CNN on ``[..., C, 64, 64]`` -> ``[..., depth*mults[-1] * 4 * 4]``.

    Stage i: Conv(k=4, s=2, p=1) to ``depth * mults[i]`` channels, channel norm, act;
    four stages take 64 to 4 pixels (V3: depth 32 and mults (1, 2, 4, 8) in 2023,
    (2, 3, 4, 4) in 2024).
    """

    def __init__(
        self,
        channels: int,
        *,
        depth: int = 32,
        mults: tuple[int, ...] = (1, 2, 4, 8),
        norm: str = "rms",
        act: str = "silu",
    ):
        super().__init__()
        mods: list[nn.Module] = []
        cin = channels
        for m in mults:
            conv = nn.Conv2d(cin, depth * m, 4, 2, 1)
            init_linear_(conv)
            mods += [conv, ChannelNorm(norm, depth * m), make_act(act)]
            cin = depth * m
        self.net = nn.Sequential(*mods)
        self.res = 64 // 2 ** len(mults)
        self.out_dim = cin * self.res * self.res

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (64, 64):
            raise ValueError(f"ImageEncoder expects [..., C, 64, 64] images, got {tuple(x.shape)}")
        flat, batch = _flat_images(image_input(x))
        return self.net(flat).reshape(*batch, -1)


class ImageDecoder(nn.Module):
    """V3: features ``[..., Z + D]`` -> ``dist(mean [..., C, 64, 64], event_dims=3)``,
    mirroring :class:`ImageEncoder` with transposed stride-2 convolutions.

    The input layer maps features to ``[depth*mults[-1], 4, 4]``: one Linear of the whole
    feature (V3-2023), or with ``bspace=G > 0`` the V3-2024 "block space" layer: a
    G-block BlockLinear of h_t (group g fills channel block g at every pixel) plus
    Linear(act(norm(Linear(z_t, 2 units)))), summed. ``in_norm``: a channel norm and
    activation after the input layer (2024: yes; 2023: no, its input layer is a plain
    Linear). ``sigmoid``: the 2024 output is sigmoid(x) with targets x / 255 in [0, 1];
    the 2023 output is linear with targets x / 255 - 0.5. ``dist``: the image loss
    (V3: :class:`~wmblocks.dists.MSE`, a sum of squares over pixels).
    """

    def __init__(
        self,
        feat_dim: int,
        channels: int,
        *,
        depth: int = 32,
        mults: tuple[int, ...] = (1, 2, 4, 8),
        norm: str = "rms",
        act: str = "silu",
        bspace: int = 0,
        stoch_dim: int = 0,
        units: int = 0,
        in_norm: bool = True,
        sigmoid: bool = True,
        dist: Callable[..., object] = MSE,
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
            self.space_stoch = MLP(stoch_dim, space, units=2 * units, layers=1, norm=norm, act=act)
        else:
            self.linear = nn.Linear(feat_dim, space)
            init_linear_(self.linear)
        mods: list[nn.Module] = []
        if in_norm:
            mods += [ChannelNorm(norm, self.top), make_act(act)]
        for cin, cout in zip(depths[::-1][:-1], depths[::-1][1:], strict=True):
            conv = nn.ConvTranspose2d(cin, cout, 4, 2, 1)
            init_linear_(conv)
            mods += [conv, ChannelNorm(norm, cout), make_act(act)]
        out = nn.ConvTranspose2d(depths[0], channels, 4, 2, 1)
        init_linear_(out)
        mods.append(out)
        if sigmoid:
            mods.append(nn.Sigmoid())
        self.net = nn.Sequential(*mods)
        self.sigmoid, self.dist = sigmoid, dist

    def _space(self, feat: Tensor) -> Tensor:
        """``[N, Z + D]`` -> ``[N, top, r, r]``."""
        r = self.res
        if not self.bspace:
            return rearrange(self.linear(feat), "n (c h w) -> n c h w", h=r, w=r)
        g = self.bspace
        stoch, deter = feat[:, : self.stoch_dim], feat[:, self.stoch_dim :]
        x0 = self.space_deter(rearrange(deter, "n (g d) -> n g d", g=g))  # [N, G, r*r*C/G]
        x0 = rearrange(x0, "n g (h w c) -> n (g c) h w", h=r, w=r)
        x1 = rearrange(self.space_stoch(stoch), "n (h w c) -> n c h w", h=r, w=r)
        return x0 + x1

    def forward(self, feat: Tensor):
        batch = feat.shape[:-1]
        x = self.net(self._space(feat.reshape(-1, feat.shape[-1])))
        return self.dist(x.reshape(*batch, *x.shape[1:]), event_dims=3)

    def target(self, x: Tensor) -> Tensor:
        return image_unit(x) if self.sigmoid else image_input(x)


class ValidConvEncoder(nn.Module):
    """V1 / V2 CNN on ``[..., C, 64, 64]``: four Conv(k=4, s=2, VALID) with
    ``depth * (1, 2, 4, 8)`` channels and an activation after each (V1: ReLU, depth 32;
    V2: ELU, depth 48), no norm; 64 -> 31 -> 14 -> 6 -> 2 pixels, flattened to
    ``[..., 8 depth * 2 * 2]``."""

    def __init__(self, channels: int, *, depth: int = 32, act: str = "relu"):
        super().__init__()
        mods: list[nn.Module] = []
        cin = channels
        for m in (1, 2, 4, 8):
            conv = nn.Conv2d(cin, depth * m, 4, 2, 0)
            init_linear_(conv)
            mods += [conv, make_act(act)]
            cin = depth * m
        self.net = nn.Sequential(*mods)
        self.out_dim = cin * 2 * 2

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (64, 64):
            raise ValueError(
                f"ValidConvEncoder expects [..., C, 64, 64] images, got {tuple(x.shape)}"
            )
        flat, batch = _flat_images(image_input(x))
        return self.net(flat).reshape(*batch, -1)


class ValidConvDecoder(nn.Module):
    """V1 / V2 image decoder: Linear(features -> 32 depth) as a 1 x 1 map, then
    transposed convolutions (stride 2, VALID) with kernels 5, 5, 6, 6 to
    ``4 depth, 2 depth, depth, C`` channels, an activation after all but the last;
    1 -> 5 -> 13 -> 30 -> 64 pixels. Returns ``dist(mean [..., C, 64, 64], 3)`` in the
    x / 255 - 0.5 space (V1, V2: :class:`~wmblocks.dists.UnitNormal`)."""

    def __init__(
        self,
        feat_dim: int,
        channels: int,
        *,
        depth: int = 32,
        act: str = "relu",
        dist: Callable[..., object] = UnitNormal,
    ):
        super().__init__()
        self.linear = nn.Linear(feat_dim, 32 * depth)
        init_linear_(self.linear)
        mods: list[nn.Module] = []
        chans = [32 * depth, 4 * depth, 2 * depth, depth, channels]
        for i, kernel in enumerate((5, 5, 6, 6)):
            conv = nn.ConvTranspose2d(chans[i], chans[i + 1], kernel, 2)
            init_linear_(conv)
            mods.append(conv)
            if i < 3:
                mods.append(make_act(act))
        self.net = nn.Sequential(*mods)
        self.dist = dist

    def forward(self, feat: Tensor):
        batch = feat.shape[:-1]
        x = self.linear(feat.reshape(-1, feat.shape[-1]))[..., None, None]  # [N, 32 d, 1, 1]
        x = self.net(x)
        return self.dist(x.reshape(*batch, *x.shape[1:]), event_dims=3)

    @staticmethod
    def target(x: Tensor) -> Tensor:
        return image_input(x)


def is_image(shape: tuple[int, ...]) -> bool:
    """Whether an observation shape is an image ``(C, H, W)`` (else a vector ``(K,)``)."""
    return len(shape) == 3


def _check_space(key: str, shape: tuple[int, ...]) -> None:
    if len(shape) == 1 or (is_image(shape) and tuple(shape[1:]) == (64, 64)):
        return
    raise ValueError(
        f"observation {key!r} has shape {tuple(shape)}: supported are vectors [K] and "
        "images [C, 64, 64]"
    )


class MultiEncoder(nn.Module):
    """One encoder per observation key, outputs concatenated in sorted key order.

    Args:
        shapes: ``{key: shape}`` with vectors ``(K,)`` and images ``(C, 64, 64)``.
        vector: ``size K -> module`` building a vector encoder (``out_dim`` attribute).
        image: ``channels C -> module`` building an image encoder.

    Which builder a key gets follows its shape, not the recipe.
    ``forward(obs: Mapping[key, [..., *shape]]) -> [..., E]``.
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        *,
        vector: Callable[[int], nn.Module],
        image: Callable[[int], nn.Module],
    ):
        super().__init__()
        self.keys = sorted(shapes)
        encoders = {}
        for key in self.keys:
            shape = tuple(shapes[key])
            _check_space(key, shape)
            encoders[key] = image(shape[0]) if is_image(shape) else vector(shape[0])
        self.encoders = nn.ModuleDict(encoders)
        self.out_dim = sum(e.out_dim for e in self.encoders.values())

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([self.encoders[k](obs[k]) for k in self.keys], -1)


class MultiDecoder(nn.Module):
    """One decoder per observation key.

    Args:
        shapes: ``{key: shape}`` as :class:`MultiEncoder`.
        vector: ``size K -> module``; image: ``channels C -> module``. Each module maps
            features to a distribution and has ``target(x)``.

    ``forward(feat [..., F]) -> {key: distribution}``; ``target(key, x)`` is the raw
    observation ``x`` in the space that key's distribution predicts.
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        *,
        vector: Callable[[int], nn.Module],
        image: Callable[[int], nn.Module],
    ):
        super().__init__()
        self.keys = sorted(shapes)
        decoders = {}
        for key in self.keys:
            shape = tuple(shapes[key])
            _check_space(key, shape)
            decoders[key] = image(shape[0]) if is_image(shape) else vector(shape[0])
        self.decoders = nn.ModuleDict(decoders)

    def forward(self, feat: Tensor) -> dict[str, object]:
        return {k: self.decoders[k](feat) for k in self.keys}

    def target(self, key: str, x: Tensor) -> Tensor:
        return self.decoders[key].target(x)
