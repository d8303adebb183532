"""Latent heads: the last layer of the prior and the posterior, and the maths of their
distribution (sample, mode, KL) on plain tensors ("stats").

    stats = head(x)              [N, hidden] -> [N, *stats_shape]
    z = head.sample(stats)       -> [N, stoch_dim]  (flat, ready for the core)
    kl = head.kl(post, prior)    -> [N]  one KL per step
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wmblocks.dists import OneHotStraightThrough, full_precision
from wmblocks.functional.categorical import (
    onehot,
    onehot_straight_through,
    straight_through,
    unimix_probs,
)
from wmblocks.functional.kl import kl_categorical, kl_normal
from wmblocks.nn.layers import init_linear_


class GaussianLatentHead(nn.Module):
    """Diagonal Gaussian latent of DreamerV1: ``[mean, softplus(s) + min_std]``.

    Args: in_dim; stoch (30 in V1); min_std (0.1 in V1).
    Stats: ``[N, 2, stoch]`` (mean, std). Samples are reparameterised: mean + std eps.
    """

    def __init__(self, in_dim: int, stoch: int = 30, *, min_std: float = 0.1):
        super().__init__()
        self.stoch, self.min_std = stoch, min_std
        self.stoch_dim = stoch
        self.linear = nn.Linear(in_dim, 2 * stoch)
        init_linear_(self.linear)

    def forward(self, x: Tensor) -> Tensor:
        # Statistics in float32 (also under bf16 autocast): the KL and sampling maths.
        mean, std = full_precision(self.linear(x)).unflatten(-1, (2, self.stoch)).unbind(-2)
        return torch.stack([mean, F.softplus(std) + self.min_std], -2)

    @staticmethod
    def sample(stats: Tensor) -> Tensor:
        mean, std = stats.unbind(-2)
        return mean + std * torch.randn_like(std)

    @staticmethod
    def mode(stats: Tensor) -> Tensor:
        return stats[..., 0, :]

    @staticmethod
    def kl(post: Tensor, prior: Tensor) -> Tensor:
        return kl_normal(*post.unbind(-2), *prior.unbind(-2))

    @staticmethod
    def log_prob(stats: Tensor, z: Tensor) -> Tensor:
        """``[...]`` log N(z; mean, std) summed over the stoch dim."""
        mean, std = stats.unbind(-2)
        return torch.distributions.Normal(mean, std, validate_args=False).log_prob(z).sum(-1)


class CategoricalLatentHead(nn.Module):
    """S groups of C classes (DreamerV2: 32 x 32; DreamerV3 adds unimix 1%).

    Args: in_dim; stoch (S); classes (C); unimix; out_scale (init scale of the logits).
    Stats: logits ``[N, S, C]``. ``sample`` is one-hot with straight-through gradients
    (flattened to ``[N, S * C]``); ``kl`` is summed over groups, on the unimixed
    distributions.
    """

    def __init__(
        self,
        in_dim: int,
        stoch: int = 32,
        classes: int = 32,
        *,
        unimix: float = 0.01,
        out_scale: float = 1.0,
    ):
        super().__init__()
        self.stoch, self.classes, self.unimix = stoch, classes, unimix
        self.stoch_dim = stoch * classes
        self.linear = nn.Linear(in_dim, stoch * classes)
        init_linear_(self.linear, out_scale)

    def forward(self, x: Tensor) -> Tensor:
        # Logits in float32 (also under bf16 autocast): the KL and sampling maths.
        # Reshapes here are plain tensor methods, not einops: these heads run inside the
        # compiled RSSM cells, called T + H times an update, and einops' Python adds
        # ~100 guards to each call's guard check.
        return full_precision(self.linear(x)).unflatten(-1, (self.stoch, self.classes))

    def sample(self, stats: Tensor) -> Tensor:
        sample = onehot_straight_through(unimix_probs(stats, self.unimix))
        return sample.flatten(-2)

    def mode(self, stats: Tensor) -> Tensor:
        probs = unimix_probs(stats, self.unimix)
        onehot_mode = onehot(probs.argmax(-1), self.classes, probs.dtype)
        return straight_through(onehot_mode, probs).flatten(-2)

    def kl(self, post: Tensor, prior: Tensor) -> Tensor:
        if self.unimix:
            post = unimix_probs(post, self.unimix).log()
            prior = unimix_probs(prior, self.unimix).log()
        return kl_categorical(post, prior)

    def dist(self, stats: Tensor) -> OneHotStraightThrough:
        return OneHotStraightThrough(stats, self.unimix)
