"""KL divergences and the KL regularisers of DreamerV1, V2 and V3.

Gradient routing (the point of balancing): with q the posterior (representation) and
p the prior (dynamics),

    dyn = KL(sg(q) || p)   trains the prior only
    rep = KL(q || sg(p))   trains the posterior (and the encoder) only
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from wmblocks.distributed import mean_over_ranks

Params = Tensor | tuple[Tensor, ...]


def kl_normal(mean_q: Tensor, std_q: Tensor, mean_p: Tensor, std_p: Tensor) -> Tensor:
    """KL(N(mean_q, diag std_q^2) || N(mean_p, diag std_p^2)) summed over the last dim.

        KL = sum_i [ log(std_p/std_q) + (std_q^2 + (mean_q - mean_p)^2) / (2 std_p^2) - 1/2 ]

    Args: ``[..., D]`` each (DreamerV1 latent: D = stoch). Returns: ``[...]``.
    """
    var_ratio = (std_q / std_p).square()
    mean_term = ((mean_q - mean_p) / std_p).square()
    return 0.5 * (var_ratio + mean_term - 1.0 - var_ratio.log()).sum(-1)


def kl_categorical(logits_q: Tensor, logits_p: Tensor) -> Tensor:
    """KL(Cat(q) || Cat(p)) per group, summed over all S groups of a step.

        KL = sum_s sum_c q_sc (log q_sc - log p_sc)

    Args:
        logits_q, logits_p: ``[..., S, C]`` (DreamerV2/V3 latents: S=32 groups of C=32);
            unnormalised, or log-probabilities after unimix.

    Returns:
        ``[...]``: one KL per step, the quantity V3's free bits clip.
    """
    logq = logits_q.log_softmax(-1)
    logp = logits_p.log_softmax(-1)
    return (logq.exp() * (logq - logp)).sum((-2, -1))


def _detach(params: Params) -> tuple[Tensor, ...]:
    return tuple(p.detach() for p in _tuple(params))


def _tuple(params: Params) -> tuple[Tensor, ...]:
    return (params,) if isinstance(params, Tensor) else tuple(params)


def kl_dyn_rep(
    post: Params, prior: Params, kl: Callable[..., Tensor] = kl_categorical
) -> tuple[Tensor, Tensor]:
    """The two stop-gradient halves of KL(q || p) (DreamerV2 Alg. 2; DreamerV3 eq. 5).

    Args:
        post: the posterior's parameters: logits ``[..., S, C]`` for ``kl_categorical``,
            or ``(mean, std)`` each ``[..., D]`` for ``kl_normal``.
        prior: the prior's parameters, same form.
        kl: the divergence, called as ``kl(*post, *prior)``.

    Returns:
        ``(dyn, rep)``, each ``[...]``: dyn = KL(sg(q) || p) sends gradient only into the
        prior; rep = KL(q || sg(p)) only into the posterior. Their values are equal.
    """
    dyn = kl(*_detach(post), *_tuple(prior))
    rep = kl(*_tuple(post), *_detach(prior))
    return dyn, rep


def kl_balance(dyn: Tensor, rep: Tensor, alpha: float = 0.8) -> Tensor:
    """DreamerV2's KL balancing: ``alpha * dyn + (1 - alpha) * rep`` (Hafner et al. 2021, §2.2).

    With (dyn, rep) from :func:`kl_dyn_rep`, a fraction alpha (0.8) of the gradient
    trains the prior toward the posterior and 1 - alpha regularises the posterior.
    Shapes: ``[...]`` in, ``[...]`` out.
    """
    return alpha * dyn + (1.0 - alpha) * rep


def free_bits(kl: Tensor, free: float = 1.0) -> Tensor:
    """DreamerV3's free bits: ``max(free, KL)`` elementwise (Hafner et al. 2023, eq. 5).

    Args:
        kl: ``[...]`` the KL of each step *summed over all categorical groups*
            (:func:`kl_categorical` already sums them); clipping per group instead would
            change the objective.
        free: the threshold in nats (1.0 in V3).

    Returns:
        ``[...]``; where KL < free the value is ``free`` and no gradient flows.
    """
    return kl.clamp(min=free)


def free_nats(kl: Tensor, free: float = 3.0) -> Tensor:
    """DreamerV1/V2 free nats on the batch mean: ``max(mean(KL), free)`` (V1 code: free_nats 3).

    The official V1 and V2 code clip the KL *averaged over the batch*, not each
    element. To keep per-(B, T) loss terms this returns a tensor of the input's shape
    whose mean is exactly ``max(mean(KL), free)``: the KL itself when its mean is at
    least ``free``, else the constant ``free`` everywhere (no gradient). No host sync.

    Data-parallel training (:mod:`wmblocks.distributed`): the batch is the global
    one, so the test is on the mean over the ranks of their means (the global mean with
    equal local batches); every rank keeps its own elements, and the mean over the
    ranks of these means is ``max(global mean, free)``.

    Args: kl ``[...]``; free in nats. Returns: ``[...]``.
    """
    above = mean_over_ranks(kl.mean()) >= free
    return torch.where(above, kl, torch.full_like(kl, free).detach())
