"""Size presets and world-model builders for DreamerV1, V2 and V3.

Each builder returns a :class:`~wmblocks.nn.world_model.WorldModel` assembled from the
blocks with the reference defaults of its version; every argument can be overridden.
``obs_shapes`` maps observation keys to shapes (vectors ``(K,)``, images
``(C, 64, 64)``); ``action_dim`` is A (one-hot size for discrete actions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from torch import nn

from wmblocks.nn.actors import BoundedNormalActor, DiscreteActor, TanhNormalActor, TruncNormalActor
from wmblocks.nn.cores import BlockGRUCore, GRUCore, LayerNormGRUCore
from wmblocks.nn.critics import MSECritic, TwoHotCritic
from wmblocks.nn.encoders import MultiDecoder, MultiEncoder
from wmblocks.nn.latents import CategoricalLatentHead, GaussianLatentHead
from wmblocks.nn.layers import MLP
from wmblocks.nn.rssm import RSSM
from wmblocks.nn.world_model import WorldModel


@dataclass(frozen=True)
class V3Size:
    """DreamerV3 sizes, named as the reference configs.

    deter (D), hidden (RSSM hidden width), stoch x classes (S x C), units (MLP width),
    depth (CNN base channels), layers (encoder/decoder MLPs), head_layers (reward and
    continue), ac_layers (actor and critic), mults (CNN channel multipliers), blocks
    (block-GRU groups).
    """

    deter: int
    hidden: int
    classes: int
    units: int
    depth: int
    stoch: int = 32
    layers: int = 3
    head_layers: int = 1
    ac_layers: int = 3
    mults: tuple[int, ...] = (2, 3, 4, 4)
    blocks: int = 8


# 2024 revision (official configs: size1m ... size200m; enc/dec 3 layers, reward and
# continue 1, actor and critic 3, CNN mults (2, 3, 4, 4), 8 blocks).
SIZES_2024 = {
    "1m": V3Size(deter=512, hidden=64, classes=4, units=64, depth=4),
    "12m": V3Size(deter=2048, hidden=256, classes=16, units=256, depth=16),
    "25m": V3Size(deter=3072, hidden=384, classes=24, units=384, depth=24),
    "50m": V3Size(deter=4096, hidden=512, classes=32, units=512, depth=32),
    "100m": V3Size(deter=6144, hidden=768, classes=48, units=768, depth=48),
    "200m": V3Size(deter=8192, hidden=1024, classes=64, units=1024, depth=64),
    "debug": V3Size(
        deter=64,
        hidden=32,
        classes=4,
        units=32,
        depth=4,
        stoch=4,
        layers=1,
        ac_layers=1,
        blocks=4,
    ),
}

# 2023 revision (paper Table B.1: S/M/L/XL; 32 x 32 latents, LayerNorm GRU, every MLP
# has `layers` layers, CNN mults (1, 2, 4, 8)).
_2023 = {"mults": (1, 2, 4, 8), "blocks": 1}
SIZES_2023 = {
    "S": V3Size(512, 512, 32, 512, 32, layers=2, head_layers=2, ac_layers=2, **_2023),
    "M": V3Size(1024, 640, 32, 640, 48, layers=3, head_layers=3, ac_layers=3, **_2023),
    "L": V3Size(2048, 768, 32, 768, 64, layers=4, head_layers=4, ac_layers=4, **_2023),
    "XL": V3Size(4096, 1024, 32, 1024, 96, layers=5, head_layers=5, ac_layers=5, **_2023),
    "debug": V3Size(64, 32, 4, 32, 4, stoch=4, layers=1, head_layers=1, ac_layers=1, **_2023),
}

# The configuration of the speed benchmark (issue "XS"): deter 256, 32 x 32, 256 units,
# one layer.
XS = V3Size(deter=256, hidden=256, classes=32, units=256, depth=16, layers=1, ac_layers=1)


def v3_size(size: str | V3Size, revision: int = 2024) -> V3Size:
    """Look a preset up by name (``"1m"``, ``"12m"``, ... for 2024; ``"S"`` ... ``"XL"``
    for 2023; ``"debug"`` for both), or pass a :class:`V3Size` through."""
    if isinstance(size, V3Size):
        return size
    table = {2024: SIZES_2024, 2023: SIZES_2023}.get(revision)
    if table is None:
        raise ValueError(f"unknown DreamerV3 revision {revision!r}; choose 2023 or 2024")
    if size not in table:
        raise ValueError(
            f"unknown size preset {size!r} for the {revision} revision; choose one of "
            f"{sorted(table)}"
        )
    return table[size]


def world_model_v3(
    obs_shapes: Mapping[str, tuple[int, ...]],
    action_dim: int,
    size: str | V3Size = "1m",
    revision: int = 2024,
    *,
    unimix: float = 0.01,
    bins: int = 255,
) -> WorldModel:
    """DreamerV3: categorical S x C latents with unimix, symlog vector inputs, block GRU
    + RMSNorm (2024) or LayerNorm GRU + learned initial state (2023), SiLU, zero-init
    twohot reward head and a continue head."""
    s = v3_size(size, revision)
    norm = "rms" if revision == 2024 else "layer"
    enc = MultiEncoder(
        obs_shapes,
        units=s.units,
        layers=s.layers,
        depth=s.depth,
        mults=s.mults,
        norm=norm,
        act="silu",
        symlog_inputs=True,
    )
    stoch_dim = s.stoch * s.classes
    if revision == 2024:
        core = BlockGRUCore(s.deter, stoch_dim, action_dim, s.hidden, s.blocks, 1, norm, "silu")
    else:
        core = LayerNormGRUCore(s.deter, stoch_dim, action_dim, s.hidden, norm, "silu")
    rssm = RSSM(
        core,
        CategoricalLatentHead(s.hidden, s.stoch, s.classes, unimix),
        CategoricalLatentHead(s.hidden, s.stoch, s.classes, unimix),
        embed_dim=enc.out_dim,
        hidden=s.hidden,
        prior_layers=2 if revision == 2024 else 1,
        norm=norm,
        act="silu",
        learned_init=revision == 2023,
    )
    feat = rssm.feat_dim
    dec = MultiDecoder(
        feat,
        obs_shapes,
        units=s.units,
        layers=s.layers,
        depth=s.depth,
        mults=s.mults,
        norm=norm,
        act="silu",
        bspace=8 if revision == 2024 else 0,
        stoch_dim=stoch_dim,
    )
    reward = MLP(feat, bins, s.units, s.head_layers, norm, "silu", out_scale=0.0)
    cont = MLP(feat, 1, s.units, s.head_layers, norm, "silu")
    return WorldModel(enc, rssm, dec, reward, cont)


def world_model_v2(
    obs_shapes: Mapping[str, tuple[int, ...]],
    action_dim: int,
    *,
    deter: int = 1024,
    stoch: int = 32,
    classes: int = 32,
    hidden: int = 1024,
    units: int = 400,
    layers: int = 4,
    depth: int = 48,
) -> WorldModel:
    """DreamerV2 (official defaults: deter 1024 (600 on Atari), 32 x 32 latents without
    unimix, hidden 1024, MLPs 4 x 400, CNN depth 48, ELU, no norm except the GRU's
    LayerNorm; discount head)."""
    enc = MultiEncoder(
        obs_shapes,
        units=units,
        layers=layers,
        depth=depth,
        norm="none",
        act="elu",
        symlog_inputs=False,
    )
    core = LayerNormGRUCore(deter, stoch * classes, action_dim, hidden, "layer", "elu", "none")
    rssm = RSSM(
        core,
        CategoricalLatentHead(hidden, stoch, classes, unimix=0.0),
        CategoricalLatentHead(hidden, stoch, classes, unimix=0.0),
        embed_dim=enc.out_dim,
        hidden=hidden,
        prior_layers=1,
        norm="none",
        act="elu",
    )
    feat = rssm.feat_dim
    dec = MultiDecoder(
        feat, obs_shapes, units=units, layers=layers, depth=depth, norm="none", act="elu"
    )
    reward = MLP(feat, 1, units, layers, "none", "elu")
    discount = MLP(feat, 1, units, layers, "none", "elu")
    return WorldModel(enc, rssm, dec, reward, discount)


def world_model_v1(
    obs_shapes: Mapping[str, tuple[int, ...]],
    action_dim: int,
    *,
    deter: int = 200,
    stoch: int = 30,
    hidden: int = 200,
    units: int = 400,
    depth: int = 32,
    min_std: float = 0.1,
) -> WorldModel:
    """DreamerV1 (official defaults: deter 200, Gaussian stoch 30 with min std 0.1,
    hidden 200, 400-unit MLPs, CNN depth 32, ELU, no norm, plain GRU; no continue head:
    V1 uses a fixed discount)."""
    enc = MultiEncoder(
        obs_shapes,
        units=units,
        layers=2,
        depth=depth,
        norm="none",
        act="elu",
        symlog_inputs=False,
    )
    rssm = RSSM(
        GRUCore(deter, stoch, action_dim, hidden, "elu"),
        GaussianLatentHead(hidden, stoch, min_std),
        GaussianLatentHead(hidden, stoch, min_std),
        embed_dim=enc.out_dim,
        hidden=hidden,
        prior_layers=1,
        norm="none",
        act="elu",
    )
    feat = rssm.feat_dim
    dec = MultiDecoder(feat, obs_shapes, units=units, layers=2, depth=depth, norm="none", act="elu")
    reward = MLP(feat, 1, units, 2, "none", "elu")
    return WorldModel(enc, rssm, dec, reward, None)


def state_model_v1(embed_dim: int, stoch: int = 30, units: int = 400, layers: int = 2) -> nn.Module:
    """q(s_t | o_t) for V1's contrastive objective: MLP on the embedding e_t, then a
    Gaussian latent head; outputs stats ``[..., 2, stoch]``."""
    return nn.Sequential(
        MLP(embed_dim, None, units, layers, "none", "elu"), GaussianLatentHead(units, stoch)
    )


def action_size(space) -> tuple[int, bool]:
    """``(A, discrete)`` for a gymnasium ``Discrete`` or 1-D ``Box`` action space."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        return int(space.n), True
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
            raise ValueError(
                f"action space {space} is unbounded; Dreamer actors need finite bounds "
                "(they act in [-1, 1] and are rescaled to the Box)"
            )
        return int(space.shape[0]), False
    raise ValueError(
        f"unsupported action space {space}: wmblocks supports gymnasium Discrete and 1-D Box"
    )


def actor_v1(space, feat_dim: int, *, units: int = 400, layers: int = 4) -> nn.Module:
    """V1: tanh-Gaussian for Box (official: 4 x 400, ELU); a one-hot policy with
    straight-through samples for Discrete (V1 itself was continuous only)."""
    size, discrete = action_size(space)
    if discrete:
        return DiscreteActor(feat_dim, size, units, layers, "none", "elu", 0.0, 1.0)
    return TanhNormalActor(feat_dim, size, units, layers)


def actor_v2(space, feat_dim: int, *, units: int = 400, layers: int = 4) -> nn.Module:
    """V2: one-hot for Discrete, truncated normal for Box (official: 4 x 400, ELU)."""
    size, discrete = action_size(space)
    if discrete:
        return DiscreteActor(feat_dim, size, units, layers, "none", "elu", 0.0, 1.0)
    return TruncNormalActor(feat_dim, size, units, layers)


def rho_v2(space) -> float:
    """V2's actor-gradient mix: 1 (REINFORCE) for Discrete, 0 (dynamics backprop) for Box."""
    return 1.0 if action_size(space)[1] else 0.0


def actor_v3(space, feat_dim: int, size: str | V3Size = "1m", revision: int = 2024) -> nn.Module:
    """V3: one-hot with 1% unimix for Discrete, bounded normal for Box; ``ac_layers`` x
    ``units`` of the size preset, output scale 0.01."""
    s = v3_size(size, revision)
    norm = "rms" if revision == 2024 else "layer"
    n, discrete = action_size(space)
    if discrete:
        return DiscreteActor(feat_dim, n, s.units, s.ac_layers, norm, "silu", 0.01, 0.01)
    return BoundedNormalActor(feat_dim, n, s.units, s.ac_layers, norm, "silu")


def critic_v1(feat_dim: int, *, units: int = 400, layers: int = 3) -> nn.Module:
    """V1: MSE critic (official: 3 x 400, ELU)."""
    return MSECritic(feat_dim, units, layers)


def critic_v2(feat_dim: int, *, units: int = 400, layers: int = 4) -> nn.Module:
    """V2: MSE critic (official: 4 x 400, ELU); pair with ``SlowCritic(c, 1.0, every=100)``."""
    return MSECritic(feat_dim, units, layers)


def critic_v3(feat_dim: int, size: str | V3Size = "1m", revision: int = 2024) -> nn.Module:
    """V3: TwoHotSymlog critic; pair with ``SlowCritic(c, 0.02)``."""
    s = v3_size(size, revision)
    return TwoHotCritic(feat_dim, s.units, s.ac_layers, "rms" if revision == 2024 else "layer")
