"""Modules that own parameters or state: layers, cores, latent heads, the RSSM, output
heads, encoders and decoders, actors, critics, the world model."""

from wmblocks.nn.actors import (
    BoundedNormalActor,
    DiscreteActor,
    TanhNormalActor,
    TruncNormalActor,
    explore,
)
from wmblocks.nn.cores import BlockGRUCore, GRUCore, LayerNormGRUCore, clip_action
from wmblocks.nn.critics import MSECritic, SlowCritic, TwoHotCritic, ema_update_
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
from wmblocks.nn.heads import BernoulliHead, ScalarHead, TwoHotHead, heads_on
from wmblocks.nn.latents import CategoricalLatentHead, GaussianLatentHead
from wmblocks.nn.layers import MLP, BlockLinear, ChannelNorm, mlps_on
from wmblocks.nn.normalize import ReturnNormalizer
from wmblocks.nn.rssm import RSSM, features
from wmblocks.nn.world_model import (
    Start,
    WorldModel,
    refresh_context_,
    shift_actions,
    split_context,
)

__all__ = [
    "MLP",
    "RSSM",
    "BernoulliHead",
    "BlockGRUCore",
    "BlockLinear",
    "BoundedNormalActor",
    "CategoricalLatentHead",
    "ChannelNorm",
    "DiscreteActor",
    "GRUCore",
    "GaussianLatentHead",
    "ImageDecoder",
    "ImageEncoder",
    "LayerNormGRUCore",
    "MSECritic",
    "MultiDecoder",
    "MultiEncoder",
    "ReturnNormalizer",
    "ScalarHead",
    "SlowCritic",
    "Start",
    "TanhNormalActor",
    "TruncNormalActor",
    "TwoHotCritic",
    "TwoHotHead",
    "ValidConvDecoder",
    "ValidConvEncoder",
    "VectorDecoder",
    "VectorEncoder",
    "WorldModel",
    "clip_action",
    "ema_update_",
    "explore",
    "features",
    "heads_on",
    "mlps_on",
    "refresh_context_",
    "shift_actions",
    "split_context",
]
