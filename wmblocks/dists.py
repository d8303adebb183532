"""Distributions of the Dreamer series, built on :mod:`wmblocks.functional`.

Lightweight objects (not ``torch.distributions`` subclasses, except :class:`Bernoulli`):
no argument validation, no host syncs, safe inside compiled training steps. Each has
``mean`` and ``mode`` (what to predict), ``log_prob`` (what to train) and, where the
Dreamer losses need them, ``rsample``/``sample`` and ``entropy``.

Reductions: ``log_prob`` and ``entropy`` sum over the *event* dims named in each
docstring and keep every batch dim, so a ``[B, T, ...]`` input gives ``[B, T]``.

Every distribution keeps its parameters in float32: under bf16 autocast the networks
run in bf16 and the likelihood, KL, entropy and twohot maths stay in full precision
(a no-op cast in float32 training).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from wmblocks.functional.categorical import (
    onehot,
    sample_onehot,
    straight_through,
    unimix_probs,
)
from wmblocks.functional.symlog import symexp, symlog
from wmblocks.functional.twohot import (
    symexp_twohot_bins,
    twohot_bins,
    twohot_decode,
    twohot_log_prob,
)

_LOG_2PI = math.log(2.0 * math.pi)


def _event_sum(x: Tensor, event_dims: int) -> Tensor:
    return x.sum(tuple(range(-event_dims, 0))) if event_dims else x


def full_precision(x: Tensor) -> Tensor:
    """``x`` in float32 if it is bf16 or fp16 (under autocast), else unchanged (float32
    and float64 pass through): the distributions' maths never runs in half precision."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


class _TwoHot:
    """Shared body of the two twohot conventions: logits ``[..., K]`` over ``bins``
    ``[K]`` (a buffer of the head that made them); ``log_probs`` is computed once and
    shared by every ``log_prob`` call (the critic's two targets use one log-softmax).
    ``symmetric``: the bins are an odd grid antisymmetric about 0, so ``mean`` takes the
    one-matmul path of :func:`~wmblocks.functional.twohot_decode` (heads check their
    bins once when built; the default grids are symmetric for odd K)."""

    def __init__(self, logits: Tensor, bins: Tensor, symmetric: bool = False):
        if bins.shape[-1] != logits.shape[-1]:
            raise ValueError(
                f"{type(self).__name__}: logits have {logits.shape[-1]} classes but bins "
                f"has {bins.shape[-1]} entries"
            )
        self.logits = full_precision(logits)
        self.bins = bins
        self.symmetric = symmetric
        self._log_probs: Tensor | None = None

    @property
    def probs(self) -> Tensor:
        return self.logits.softmax(-1)

    @property
    def log_probs(self) -> Tensor:
        # Cached by hand: functools.cached_property takes an RLock on Python 3.11,
        # which torch.compile cannot trace.
        if self._log_probs is None:
            self._log_probs = self.logits.log_softmax(-1)
        return self._log_probs


class TwoHotSymlog(_TwoHot):
    """Twohot regression as the seed writes it and the 2024 code does it (DreamerV3
    eq. 9-10): bins B = symexp(linspace(-20, 20, 255)) in raw space.

    Args:
        logits: ``[..., K]`` over the bins.
        bins: ``[K]`` raw-space bins; default :func:`~wmblocks.functional.symexp_twohot_bins`.

    ``mean`` = softmax(logits)^T B in raw space, summed symmetrically
    (:func:`~wmblocks.functional.twohot_decode`), so uniform logits predict exactly 0;
    no symexp afterwards. ``log_prob(y)`` = sum_i twohot(y)_i log softmax_i with the
    two-hot weights interpolating linearly in raw space between the (exponentially
    spaced) neighbours of y. Shapes ``[...]``. Checked against the official code's
    values in ``tests/golden``.
    """

    def __init__(self, logits: Tensor, bins: Tensor | None = None, symmetric: bool = False):
        if bins is None:
            bins = symexp_twohot_bins(logits.shape[-1], dtype=logits.dtype, device=logits.device)
            symmetric = bins.shape[0] % 2 == 1
        super().__init__(logits, bins, symmetric)

    @property
    def mean(self) -> Tensor:
        return twohot_decode(self.probs, self.bins, self.symmetric)

    @property
    def mode(self) -> Tensor:
        """The most likely bin, ``[...]``."""
        return self.bins[self.logits.argmax(-1)]

    def log_prob(self, x: Tensor) -> Tensor:
        """``[...]``; no gradient into ``x``."""
        return twohot_log_prob(self.log_probs, x.to(self.bins.dtype), self.bins)


class TwoHotSymlog2023(_TwoHot):
    """Twohot regression of the official 2023 code: bins uniform on [-20, 20] in
    *symlog* space.

    Args:
        logits: ``[..., K]``; bins: ``[K]`` symlog-space bins, default
            :func:`~wmblocks.functional.twohot_bins`.

    ``mean`` = symexp(sum_i p_i b_i) (symmetric sum: uniform logits give exactly 0);
    ``log_prob(y)`` = sum_i twohot(symlog(y))_i log softmax_i. Shapes ``[...]``.
    """

    def __init__(self, logits: Tensor, bins: Tensor | None = None, symmetric: bool = False):
        if bins is None:
            bins = twohot_bins(logits.shape[-1], dtype=logits.dtype, device=logits.device)
            symmetric = bins.shape[0] % 2 == 1
        super().__init__(logits, bins, symmetric)

    @property
    def mean(self) -> Tensor:
        return symexp(twohot_decode(self.probs, self.bins, self.symmetric))

    @property
    def mode(self) -> Tensor:
        """symexp of the most likely bin, ``[...]``."""
        return symexp(self.bins[self.logits.argmax(-1)])

    def log_prob(self, x: Tensor) -> Tensor:
        """``[...]``; no gradient into ``x``."""
        return twohot_log_prob(self.log_probs, symlog(x.to(self.bins.dtype)), self.bins)


class MSE:
    """Squared error as a (negative) log-likelihood: DreamerV3's image loss.

    ``log_prob(x) = -sum_event (pred - x)^2``, ``[...]``; ``mean`` = ``mode`` = pred.
    Unlike :class:`UnitNormal` there is no 1/2 and no constant (as the reference's ``mse``).
    """

    def __init__(self, pred: Tensor, event_dims: int = 1):
        self.pred = full_precision(pred)
        self.event_dims = event_dims

    @property
    def mean(self) -> Tensor:
        return self.pred

    @property
    def mode(self) -> Tensor:
        return self.pred

    def log_prob(self, x: Tensor) -> Tensor:
        return -_event_sum((self.pred - x.detach()).square(), self.event_dims)


class SymlogMSE:
    """Squared error in symlog space (DreamerV3 vector decoder, eq. 1 and 8).

    Args:
        pred: ``[..., *event]`` the prediction in symlog space.
        event_dims: how many trailing dims form one observation (1 for vectors).

    ``mean`` = ``mode`` = symexp(pred). ``log_prob(x) = -sum_event (pred - symlog(x))^2``;
    like the reference's ``symlog_mse`` it is a loss, not a normalised density.
    """

    def __init__(self, pred: Tensor, event_dims: int = 1):
        self.pred = full_precision(pred)
        self.event_dims = event_dims

    @property
    def mean(self) -> Tensor:
        return symexp(self.pred)

    @property
    def mode(self) -> Tensor:
        return self.mean

    def log_prob(self, x: Tensor) -> Tensor:
        return -_event_sum((self.pred - symlog(x.detach())).square(), self.event_dims)


class UnitNormal:
    """Gaussian with identity covariance: the observation and reward likelihood of
    DreamerV1 and V2 (Hafner et al. 2020, §3; the official code uses Normal(mean, 1)).

    Args:
        mean: ``[..., *event]``; event_dims: trailing dims of one observation (3 for
            images ``[C, H, W]``, 1 for vectors, 0 for a scalar reward).

    ``log_prob(x) = sum_event [-(x - mean)^2 / 2 - ln(2 pi) / 2]``, ``[...]``.
    """

    def __init__(self, mean: Tensor, event_dims: int = 1):
        self.loc = full_precision(mean)
        self.event_dims = event_dims

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def mode(self) -> Tensor:
        return self.loc

    def log_prob(self, x: Tensor) -> Tensor:
        return _event_sum(-0.5 * (x.detach() - self.loc).square() - 0.5 * _LOG_2PI, self.event_dims)

    def rsample(self) -> Tensor:
        return self.loc + torch.randn_like(self.loc)

    def sample(self) -> Tensor:
        return self.rsample().detach()

    def entropy(self) -> Tensor:
        return _event_sum(torch.full_like(self.loc, 0.5 * (1.0 + _LOG_2PI)), self.event_dims)


class OneHotStraightThrough:
    """One-hot categorical with unimix and straight-through samples (DreamerV2 Alg. 1;
    DreamerV3 unimix 1%).

    Args:
        logits: ``[..., C]``: latents ``[..., S, C]`` or discrete actions ``[..., A]``.
        unimix: uniform mixture weight (0.01 in V3, 0 in V2).

    ``rsample()`` is one-hot in the forward pass with the gradient of the (mixed)
    probabilities; ``log_prob(onehot)`` and ``entropy()`` reduce over the class dim only,
    giving ``[..., S]`` for latents (sum over S where one KL or log-prob per step is
    needed) and ``[...]`` for actions.
    """

    def __init__(self, logits: Tensor, unimix: float = 0.01):
        logits = full_precision(logits)
        self.probs = unimix_probs(logits, unimix)
        self.logits = self.probs.log() if unimix else logits.log_softmax(-1)
        self.unimix = unimix

    @property
    def mode(self) -> Tensor:
        """The most likely one-hot, with straight-through gradients, ``[..., C]``."""
        onehot_mode = onehot(self.probs.argmax(-1), self.probs.shape[-1], self.probs.dtype)
        return straight_through(onehot_mode, self.probs)

    @property
    def mean(self) -> Tensor:
        return self.probs

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        return straight_through(sample_onehot(self.probs, generator), self.probs)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return sample_onehot(self.probs, generator)

    def log_prob(self, onehot: Tensor) -> Tensor:
        """``sum_c onehot_c * log p_c``, ``[...]`` (class dim reduced)."""
        return (onehot * self.logits).sum(-1)

    def entropy(self) -> Tensor:
        return -(self.probs * self.logits).sum(-1)


class TanhNormal:
    """tanh-squashed diagonal Gaussian: the DreamerV1 actor (Hafner et al. 2020, §3,
    "tanh-transformed Gaussian").

    Args:
        mean, std: ``[..., A]`` of the Gaussian before the tanh.

    a = tanh(u), u ~ N(mean, std). By the change of variables,
        log p(a) = sum_i [ log N(u_i; mean_i, std_i) - log(1 - tanh(u_i)^2) ],
    with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) for stability. The entropy
    has no closed form; like the official V1 code's SampleDist, :meth:`entropy` estimates
    it from samples. ``mode`` is tanh(mean) (V1 picks the likeliest of 100 samples).
    """

    def __init__(self, mean: Tensor, std: Tensor, eps: float = 1e-6):
        self.loc = full_precision(mean)
        self.scale = full_precision(std)
        self.eps = eps

    @property
    def mode(self) -> Tensor:
        return self.loc.tanh()

    @property
    def mean(self) -> Tensor:
        return self.mode

    def _log_prob_pre_tanh(self, u: Tensor) -> Tensor:
        z = (u - self.loc) / self.scale
        normal = -0.5 * z.square() - self.scale.log() - 0.5 * _LOG_2PI
        log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return (normal - log_det).sum(-1)

    def rsample_with_log_prob(self, sample_shape: tuple[int, ...] = ()) -> tuple[Tensor, Tensor]:
        """A reparameterised sample ``[*sample_shape, ..., A]`` and its log-prob
        ``[*sample_shape, ...]``, computed from the pre-tanh value (exact even where
        tanh saturates)."""
        shape = torch.Size(sample_shape) + self.loc.shape
        u = self.loc + self.scale * torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return u.tanh(), self._log_prob_pre_tanh(u)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        return self.rsample_with_log_prob(sample_shape)[0]

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        return self.rsample(sample_shape).detach()

    def log_prob(self, action: Tensor) -> Tensor:
        """``[...]`` log-density of ``action`` ``[..., A]`` in (-1, 1); clamped by eps."""
        limit = 1.0 - self.eps
        return self._log_prob_pre_tanh(action.clamp(-limit, limit).atanh())

    def entropy(self, samples: int = 100) -> Tensor:
        """Monte-Carlo estimate ``-mean_k log p(a_k)``, ``[...]``, differentiable."""
        _, log_prob = self.rsample_with_log_prob(torch.Size([samples]))
        return -log_prob.mean(0)


class Normal:
    """Diagonal Gaussian over the last dim: ``loc``, ``scale`` ``[..., A]``.

    ``log_prob`` and ``entropy`` sum over A, giving ``[...]``; ``rsample`` is
    reparameterised. The distribution the DreamerV3 policy head returns (the official
    ``bounded_normal`` output is a plain Normal: no tanh on samples).
    """

    def __init__(self, loc: Tensor, scale: Tensor):
        self.loc, self.scale = full_precision(loc), full_precision(scale)

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def mode(self) -> Tensor:
        return self.loc

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        shape = torch.Size(sample_shape) + self.loc.shape
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self.scale * eps

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        return self.rsample(sample_shape).detach()

    def log_prob(self, action: Tensor) -> Tensor:
        z = (action - self.loc) / self.scale
        return (-0.5 * z.square() - self.scale.log() - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self) -> Tensor:
        return (self.scale.log() + 0.5 * (1.0 + _LOG_2PI)).sum(-1)


class BoundedNormal(Normal):
    """DreamerV3's continuous policy: Normal(tanh(mean), std) with std in [minstd, maxstd]
    (official code: minstd 0.1, maxstd 1.0, std = (max - min) sigmoid(x + 2) + min).

    Args:
        mean: ``[..., A]`` raw network output; the location is tanh(mean).
        std: ``[..., A]`` raw network output, squashed as above.

    Samples are not clipped: clip to [-1, 1] before stepping the environment.
    ``log_prob`` and ``entropy`` sum over the action dim, giving ``[...]``.
    """

    def __init__(self, mean: Tensor, std: Tensor, minstd: float = 0.1, maxstd: float = 1.0):
        mean, std = full_precision(mean), full_precision(std)
        super().__init__(mean.tanh(), (maxstd - minstd) * torch.sigmoid(std + 2.0) + minstd)


class TruncatedNormal:
    """Normal(loc, scale) truncated to [low, high]: DreamerV2's continuous policy
    ("trunc_normal"; loc = tanh(x), bounds [-1, 1]).

    Args: loc, scale ``[..., A]``; low, high floats. With alpha = (low - loc) / scale,
    beta = (high - loc) / scale, Z = Phi(beta) - Phi(alpha):

        log p(x) = log phi((x - loc) / scale) - log scale - log Z
        H = log(sqrt(2 pi e) scale Z) + (alpha phi(alpha) - beta phi(beta)) / (2 Z)

    ``rsample`` inverts the CDF (x = loc + scale Phi^-1(Phi(alpha) + u Z)), so samples
    are differentiable in loc and scale (dynamics backprop). ``log_prob`` and
    ``entropy`` sum over the action dim.
    """

    def __init__(self, loc: Tensor, scale: Tensor, low: float = -1.0, high: float = 1.0):
        loc, scale = full_precision(loc), full_precision(scale)
        self.loc, self.scale, self.low, self.high = loc, scale, low, high
        self._alpha = (low - loc) / scale
        self._beta = (high - loc) / scale
        self._cdf_alpha = torch.special.ndtr(self._alpha)
        self._z = (torch.special.ndtr(self._beta) - self._cdf_alpha).clamp_min(1e-12)

    @staticmethod
    def _pdf(x: Tensor) -> Tensor:
        return torch.exp(-0.5 * x.square()) / math.sqrt(2 * math.pi)

    @property
    def mode(self) -> Tensor:
        return self.loc.clamp(self.low, self.high)

    @property
    def mean(self) -> Tensor:
        return self.loc + self.scale * (self._pdf(self._alpha) - self._pdf(self._beta)) / self._z

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        shape = torch.Size(sample_shape) + self.loc.shape
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
        p = (self._cdf_alpha + u * self._z).clamp(1e-7, 1 - 1e-7)
        x = self.loc + self.scale * torch.special.ndtri(p)
        eps = torch.finfo(x.dtype).eps
        return x.clamp(self.low + eps, self.high - eps)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> Tensor:
        return self.rsample(sample_shape).detach()

    def log_prob(self, x: Tensor) -> Tensor:
        z = (x - self.loc) / self.scale
        logp = -0.5 * z.square() - 0.5 * _LOG_2PI - self.scale.log() - self._z.log()
        return logp.sum(-1)

    def entropy(self) -> Tensor:
        a, b, z = self._alpha, self._beta, self._z
        tail = (a * self._pdf(a) - b * self._pdf(b)) / (2 * z)
        return (0.5 * (_LOG_2PI + 1.0) + self.scale.log() + z.log() + tail).sum(-1)


class Bernoulli(torch.distributions.Bernoulli):
    """Continue / discount predictor (DreamerV2 discount head, DreamerV3 continue head).

    torch's Bernoulli from ``logits`` ``[...]`` with validation off (so soft targets and
    compiled steps work), and ``mode`` = 1[logits > 0] (torch's is NaN at p = 0.5).
    ``log_prob(target)`` = -BCE-with-logits, ``[...]``.
    """

    def __init__(self, logits: Tensor):
        super().__init__(logits=full_precision(logits), validate_args=False)

    @property
    def mode(self) -> Tensor:
        return (self.logits > 0).to(self.logits.dtype)


__all__ = [
    "Bernoulli",
    "BoundedNormal",
    "MSE",
    "Normal",
    "OneHotStraightThrough",
    "SymlogMSE",
    "TanhNormal",
    "TruncatedNormal",
    "TwoHotSymlog",
    "UnitNormal",
]
