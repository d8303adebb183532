"""Categorical helpers: unimix and straight-through one-hot samples (DreamerV2/V3)."""

from __future__ import annotations

import torch
from torch import Tensor


def unimix_probs(logits: Tensor, unimix: float = 0.01) -> Tensor:
    """``(1 - unimix) * softmax(logits) + unimix / C`` over the last dim.

    DreamerV3 (Hafner et al. 2023, §"Robust predictors") mixes 1% uniform into every
    categorical (latents and discrete policy) so no probability falls below unimix / C
    and KLs stay bounded. Shapes: ``[..., C]`` in, ``[..., C]`` out.
    """
    probs = logits.softmax(-1)
    if unimix == 0.0:
        return probs
    return (1.0 - unimix) * probs + unimix / logits.shape[-1]


def unimix_logits(logits: Tensor, unimix: float = 0.01) -> Tensor:
    """Normalised log-probabilities of :func:`unimix_probs`, ``[..., C]``."""
    if unimix == 0.0:
        return logits.log_softmax(-1)
    return unimix_probs(logits, unimix).log()


def sample_onehot(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A one-hot sample ``[..., C]`` from ``probs`` ``[..., C]``; no gradient, no host sync.

    Inverse-CDF sampling: one uniform u per distribution, index = #{c : F_c <= u F_C}
    with F the cumulative sum of the probabilities (C times fewer random numbers and
    no logarithms, unlike Gumbel-max). See :func:`onehot_straight_through` for the
    straight-through version.
    """
    probs = probs.detach()
    cdf = probs.cumsum(-1)
    # The generator only when given: ``torch.rand(..., generator=None)`` dispatches to
    # an overload that torch.export cannot trace with a dynamic batch size.
    extra = {} if generator is None else {"generator": generator}
    uniform = torch.rand(probs.shape[:-1], dtype=probs.dtype, device=probs.device, **extra)
    index = (cdf <= (uniform * cdf[..., -1]).unsqueeze(-1)).sum(-1)
    return onehot(index.clamp(max=probs.shape[-1] - 1), probs.shape[-1], probs.dtype)


def onehot(index: Tensor, classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot ``[..., classes]`` of integer ``index`` ``[...]`` (values in [0, classes)).

    Written as a comparison with ``arange(classes)``: unlike ``F.one_hot``, which reads
    the index's maximum back to the host to check it, this never synchronises (the
    training update must not) and compiles to one fused kernel.
    """
    arange = torch.arange(classes, device=index.device)
    return (index.unsqueeze(-1) == arange).to(dtype)


def straight_through(onehot: Tensor, probs: Tensor) -> Tensor:
    """``onehot + (probs - sg(probs))``: forward value ``onehot``, gradient of ``probs``.

    The straight-through estimator of DreamerV2 (Hafner et al. 2021, Alg. 1).
    Shapes: ``[..., C]`` each.
    """
    # (probs - sg(probs)) is exactly 0 in the forward pass, so the sum is exactly one-hot.
    return onehot.detach() + (probs - probs.detach())


def onehot_straight_through(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Sample one-hot ``[..., C]`` from ``probs`` with straight-through gradients (V2, Alg. 1).

    Works on latents ``[..., S, C]`` and on discrete actions ``[..., A]`` alike.
    """
    return straight_through(sample_onehot(probs, generator), probs)
