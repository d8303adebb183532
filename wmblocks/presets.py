"""Size presets and world-model builders for DreamerV1, V2 and V3.

Each builder returns a :class:`~wmblocks.nn.world_model.WorldModel` assembled from the
blocks with the reference defaults of its version; every argument can be overridden.
``obs_shapes`` maps observation keys to shapes (vectors ``(K,)``, images
``(C, 64, 64)``); ``action_dim`` is A (one-hot size for discrete actions).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn

from wmblocks.dists import MSE, Bernoulli, SymlogMSE, TwoHotSymlog, TwoHotSymlog2023, UnitNormal
from wmblocks.errors import UserError
from wmblocks.losses.behavior import continue_modes, continue_probs
from wmblocks.losses.world_model import CONT_TARGET_2024, V3_2023_SCALES, V3_2024_SCALES
from wmblocks.nn.actors import BoundedNormalActor, DiscreteActor, TanhNormalActor, TruncNormalActor
from wmblocks.nn.cores import BlockGRUCore, GRUCore, LayerNormGRUCore
from wmblocks.nn.critics import MSECritic, TwoHotCritic
from wmblocks.nn.encoders import (
    ImageDecoder,
    ImageEncoder,
    MultiDecoder,
    MultiEncoder,
    ValidConvDecoder,
    ValidConvEncoder,
    VectorDecoder,
    VectorEncoder,
)
from wmblocks.nn.heads import BernoulliHead, ScalarHead, TwoHotHead
from wmblocks.nn.latents import CategoricalLatentHead, GaussianLatentHead
from wmblocks.nn.layers import MLP
from wmblocks.nn.rssm import RSSM
from wmblocks.nn.world_model import WorldModel
from wmblocks.optim import V3_2023_OPTIM, ClippedOptimizer, adam, laprop_agc


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
# one layer; a 2024 size (``--size XS``).
XS = V3Size(deter=256, hidden=256, classes=32, units=256, depth=16, layers=1, ac_layers=1)
SIZES_2024["XS"] = XS


# --- The two DreamerV3 revisions, as data -----------------------------------------


def _block_gru(s: V3Size, stoch_dim: int, action_dim: int, norm: str) -> nn.Module:
    return BlockGRUCore(
        s.deter, stoch_dim, action_dim, hidden=s.hidden, blocks=s.blocks, norm=norm, act="silu"
    )


def _layernorm_gru(s: V3Size, stoch_dim: int, action_dim: int, norm: str) -> nn.Module:
    return LayerNormGRUCore(
        s.deter, stoch_dim, action_dim, hidden=s.hidden, norm=norm, act="silu", action_clip=True
    )


def _laprop_one(modules: Mapping[str, nn.Module], lr: float) -> dict[str, ClippedOptimizer]:
    params = [p for m in modules.values() for p in m.parameters()]
    return {"all": laprop_agc(params, lr=lr)}


def _adam_per_module(modules: Mapping[str, nn.Module], lr: float) -> dict[str, ClippedOptimizer]:
    return {name: adam(m.parameters(), V3_2023_OPTIM[name]) for name, m in modules.items()}


@dataclass(frozen=True)
class V3Revision:
    """Everything in which the two DreamerV3 revisions differ, chosen by name
    (:func:`v3_revision`); the blocks and the recipe read these fields instead of
    branching on a year.

    Fields: ``sizes`` (the presets), ``norm`` (``rms`` / ``layer``), ``core`` (builds the
    recurrent core), ``prior_layers``, ``learned_init`` (learned h_0 vs zeros),
    ``decoder_bspace`` (block-space decoder input groups, 0 for one Linear),
    ``decoder_in_norm`` (norm + act after the decoder's input layer), ``image_sigmoid``
    (sigmoid image output with x / 255 targets), ``scales`` (loss scales),
    ``cont_target`` and ``gamma`` (continue target (1 - terminal) * cont_target; the
    imagination discount), ``twohot`` (reward / critic distribution), ``policy_unimix``
    (of the discrete policy), ``backprop_continuous`` (dynamics backprop instead of
    REINFORCE for Box actions), ``imagined_continue`` (how continue flags are read in
    imagination), ``replay_context`` (steps of stored latent state a replayed chunk
    starts from), ``repval_scale`` (replay value loss; 0 = none), ``optimizer``
    (``(modules by name, lr) -> optimisers by name``).
    """

    name: int
    sizes: Mapping[str, V3Size]
    norm: str
    core: Callable[[V3Size, int, int, str], nn.Module]
    prior_layers: int
    learned_init: bool
    decoder_bspace: int
    decoder_in_norm: bool
    image_sigmoid: bool
    scales: Mapping[str, float]
    cont_target: float
    gamma: float
    twohot: type
    policy_unimix: float
    backprop_continuous: bool
    imagined_continue: Callable[[Bernoulli, Tensor], Tensor]
    replay_context: int
    repval_scale: float
    optimizer: Callable[[Mapping[str, nn.Module], float], dict[str, ClippedOptimizer]]


V3_2024 = V3Revision(
    name=2024,
    sizes=SIZES_2024,
    norm="rms",
    core=_block_gru,
    prior_layers=2,
    learned_init=False,
    decoder_bspace=8,
    decoder_in_norm=True,
    image_sigmoid=True,
    scales=V3_2024_SCALES,
    cont_target=CONT_TARGET_2024,
    gamma=1.0,
    twohot=TwoHotSymlog,
    policy_unimix=0.0,
    backprop_continuous=False,
    imagined_continue=continue_probs,
    replay_context=1,
    repval_scale=0.3,
    optimizer=_laprop_one,
)
V3_2023 = V3Revision(
    name=2023,
    sizes=SIZES_2023,
    norm="layer",
    core=_layernorm_gru,
    prior_layers=1,
    learned_init=True,
    decoder_bspace=0,
    decoder_in_norm=False,
    image_sigmoid=False,
    scales=V3_2023_SCALES,
    cont_target=1.0,
    gamma=1.0 - 1.0 / 333,
    twohot=TwoHotSymlog2023,
    policy_unimix=0.01,
    backprop_continuous=True,
    imagined_continue=continue_modes,
    replay_context=0,
    repval_scale=0.0,
    optimizer=_adam_per_module,
)
REVISIONS = {2024: V3_2024, 2023: V3_2023}


def v3_revision(revision: int | V3Revision) -> V3Revision:
    """The :class:`V3Revision` named 2023 or 2024 (a record passes through)."""
    if isinstance(revision, V3Revision):
        return revision
    if revision not in REVISIONS:
        raise UserError(f"unknown DreamerV3 revision {revision!r}; choose 2023 or 2024")
    return REVISIONS[revision]


def v3_size(size: str | V3Size, revision: int | V3Revision = 2024) -> V3Size:
    """Look a preset up by name (``"1m"``, ``"12m"``, ... for 2024; ``"S"`` ... ``"XL"``
    for 2023; ``"debug"`` for both), or pass a :class:`V3Size` through."""
    if isinstance(size, V3Size):
        return size
    rev = v3_revision(revision)
    if size not in rev.sizes:
        raise UserError(
            f"unknown size preset {size!r} for the {rev.name} revision; choose one of "
            f"{sorted(rev.sizes)}"
        )
    return rev.sizes[size]


def world_model_v3(
    obs_shapes: Mapping[str, tuple[int, ...]],
    action_dim: int,
    size: str | V3Size = "1m",
    revision: int | V3Revision = 2024,
    *,
    unimix: float = 0.01,
    bins: int = 255,
) -> WorldModel:
    """DreamerV3: categorical S x C latents with unimix, symlog vector inputs, SiLU,
    zero-init twohot reward head and a continue head; the rest from the
    :class:`V3Revision` (block GRU + RMSNorm, zeros initial state, block-space sigmoid
    decoder for 2024; LayerNorm GRU, learned initial state, linear decoder for 2023)."""
    rev = v3_revision(revision)
    s = v3_size(size, rev)
    norm = rev.norm
    enc = MultiEncoder(
        obs_shapes,
        vector=lambda k: VectorEncoder(
            k, units=s.units, layers=s.layers, norm=norm, act="silu", symlog_inputs=True
        ),
        image=lambda c: ImageEncoder(c, depth=s.depth, mults=s.mults, norm=norm, act="silu"),
    )
    stoch_dim = s.stoch * s.classes
    rssm = RSSM(
        rev.core(s, stoch_dim, action_dim, norm),
        CategoricalLatentHead(s.hidden, s.stoch, s.classes, unimix=unimix),
        CategoricalLatentHead(s.hidden, s.stoch, s.classes, unimix=unimix),
        embed_dim=enc.out_dim,
        hidden=s.hidden,
        prior_layers=rev.prior_layers,
        norm=norm,
        act="silu",
        learned_init=rev.learned_init,
    )
    feat = rssm.feat_dim
    dec = MultiDecoder(
        obs_shapes,
        vector=lambda k: VectorDecoder(
            feat, k, units=s.units, layers=s.layers, norm=norm, act="silu", dist=SymlogMSE
        ),
        image=lambda c: ImageDecoder(
            feat,
            c,
            depth=s.depth,
            mults=s.mults,
            norm=norm,
            act="silu",
            bspace=rev.decoder_bspace,
            stoch_dim=stoch_dim,
            units=s.units,
            in_norm=rev.decoder_in_norm,
            sigmoid=rev.image_sigmoid,
            dist=MSE,
        ),
    )
    head = dict(units=s.units, layers=s.head_layers, norm=norm, act="silu")
    reward = TwoHotHead(feat, dist=rev.twohot, bins=bins, out_scale=0.0, **head)
    cont = BernoulliHead(feat, **head)
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
    discount_head: bool = True,
) -> WorldModel:
    """DreamerV2 (official defaults: deter 1024 (600 on Atari, 200 on DMC), 32 x 32
    latents without unimix, hidden 1024, MLPs 4 x 400, ELU, no norm except the GRU's
    LayerNorm; VALID CNNs of depth 48; squared-error (``mse``) vector decoder and reward
    head, unit-Gaussian image decoder). ``discount_head``: the Bernoulli discount
    predictor (reference ``pred_discount``: on for Atari, off for DMC, where imagination
    uses a constant gamma)."""
    enc = MultiEncoder(
        obs_shapes,
        vector=lambda k: VectorEncoder(
            k, units=units, layers=layers, norm="none", act="elu", symlog_inputs=False
        ),
        image=lambda c: ValidConvEncoder(c, depth=depth, act="elu"),
    )
    core = LayerNormGRUCore(
        deter, stoch * classes, action_dim, hidden=hidden, norm="layer", act="elu", in_norm="none"
    )
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
    mlp = dict(units=units, layers=layers, norm="none", act="elu")
    dec = MultiDecoder(
        obs_shapes,
        vector=lambda k: VectorDecoder(feat, k, dist=MSE, **mlp),
        image=lambda c: ValidConvDecoder(feat, c, depth=depth, act="elu", dist=UnitNormal),
    )
    reward = ScalarHead(feat, dist=MSE, **mlp)
    discount = BernoulliHead(feat, **mlp) if discount_head else None
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
    hidden 200, 400-unit MLPs, VALID CNNs of depth 32 with ReLU, ELU elsewhere, no norm,
    plain GRU; unit-Gaussian observation and reward likelihoods; no continue head: V1
    uses a fixed discount)."""
    enc = MultiEncoder(
        obs_shapes,
        vector=lambda k: VectorEncoder(
            k, units=units, layers=2, norm="none", act="elu", symlog_inputs=False
        ),
        image=lambda c: ValidConvEncoder(c, depth=depth, act="relu"),
    )
    rssm = RSSM(
        GRUCore(deter, stoch, action_dim, hidden=hidden, act="elu"),
        GaussianLatentHead(hidden, stoch, min_std=min_std),
        GaussianLatentHead(hidden, stoch, min_std=min_std),
        embed_dim=enc.out_dim,
        hidden=hidden,
        prior_layers=1,
        norm="none",
        act="elu",
    )
    feat = rssm.feat_dim
    mlp = dict(units=units, layers=2, norm="none", act="elu")
    dec = MultiDecoder(
        obs_shapes,
        vector=lambda k: VectorDecoder(feat, k, dist=UnitNormal, **mlp),
        image=lambda c: ValidConvDecoder(feat, c, depth=depth, act="relu", dist=UnitNormal),
    )
    reward = ScalarHead(feat, dist=UnitNormal, **mlp)
    return WorldModel(enc, rssm, dec, reward, None)


def state_model_v1(embed_dim: int, stoch: int = 30, units: int = 400, layers: int = 2) -> nn.Module:
    """q(s_t | o_t) for V1's contrastive objective: MLP on the embedding e_t, then a
    Gaussian latent head; outputs stats ``[..., 2, stoch]``."""
    return nn.Sequential(
        MLP(embed_dim, None, units=units, layers=layers, norm="none", act="elu"),
        GaussianLatentHead(units, stoch),
    )


def action_size(space) -> tuple[int, bool]:
    """``(A, discrete)`` for a gymnasium ``Discrete`` or 1-D ``Box`` action space."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        return int(space.n), True
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
            raise UserError(
                f"action space {space} is unbounded; Dreamer actors need finite bounds "
                "(they act in [-1, 1] and are rescaled to the Box)"
            )
        return int(space.shape[0]), False
    raise UserError(
        f"unsupported action space {space}: wmblocks supports gymnasium Discrete and 1-D Box"
    )


def actor_v1(space, feat_dim: int, *, units: int = 400, layers: int = 4) -> nn.Module:
    """V1: tanh-Gaussian for Box (official: 4 x 400, ELU); a one-hot policy with
    straight-through samples for Discrete (V1 itself was continuous only)."""
    size, discrete = action_size(space)
    if discrete:
        return DiscreteActor(
            feat_dim,
            size,
            units=units,
            layers=layers,
            norm="none",
            act="elu",
            unimix=0.0,
            out_scale=1.0,
        )
    return TanhNormalActor(feat_dim, size, units=units, layers=layers)


def actor_v2(space, feat_dim: int, *, units: int = 400, layers: int = 4) -> nn.Module:
    """V2: one-hot for Discrete, truncated normal for Box (official: 4 x 400, ELU)."""
    size, discrete = action_size(space)
    if discrete:
        return DiscreteActor(
            feat_dim,
            size,
            units=units,
            layers=layers,
            norm="none",
            act="elu",
            unimix=0.0,
            out_scale=1.0,
        )
    return TruncNormalActor(feat_dim, size, units=units, layers=layers)


def rho_v2(space) -> float:
    """V2's actor-gradient mix: 1 (REINFORCE) for Discrete, 0 (dynamics backprop) for Box."""
    return 1.0 if action_size(space)[1] else 0.0


def actor_v3(
    space, feat_dim: int, size: str | V3Size = "1m", revision: int | V3Revision = 2024
) -> nn.Module:
    """V3: a categorical policy for Discrete (2024: no unimix, the reference's
    ``categorical``; 2023: 1% unimix, its ``onehot``), bounded normal for Box;
    ``ac_layers`` x ``units`` of the size preset, output scale 0.01."""
    rev = v3_revision(revision)
    s = v3_size(size, rev)
    n, discrete = action_size(space)
    mlp = dict(units=s.units, layers=s.ac_layers, norm=rev.norm, act="silu")
    if discrete:
        return DiscreteActor(feat_dim, n, unimix=rev.policy_unimix, out_scale=0.01, **mlp)
    return BoundedNormalActor(feat_dim, n, **mlp)


def critic_v1(feat_dim: int, *, units: int = 400, layers: int = 3) -> nn.Module:
    """V1: unit-Gaussian critic (official: 3 x 400, ELU)."""
    return MSECritic(feat_dim, units=units, layers=layers, dist=UnitNormal)


def critic_v2(feat_dim: int, *, units: int = 400, layers: int = 4) -> nn.Module:
    """V2: squared-error critic (official ``mse``: 4 x 400, ELU); pair with
    ``SlowCritic(c, 1.0, every=100)``."""
    return MSECritic(feat_dim, units=units, layers=layers, dist=MSE)


def critic_v3(
    feat_dim: int, size: str | V3Size = "1m", revision: int | V3Revision = 2024
) -> nn.Module:
    """V3: twohot critic of the revision's convention; pair with ``SlowCritic(c, 0.02)``."""
    rev = v3_revision(revision)
    s = v3_size(size, rev)
    return TwoHotCritic(feat_dim, units=s.units, layers=s.ac_layers, norm=rev.norm, dist=rev.twohot)
