"""Two-hot encoding over a fixed grid of bins (DreamerV3, Hafner et al. 2023, §"Critic
learning" and eq. 9-10).

A scalar y is written as weights on its two neighbouring bins b_k <= y <= b_{k+1}:

    w_k     = |b_{k+1} - y| / |b_{k+1} - b_k|
    w_{k+1} = |b_k     - y| / |b_{k+1} - b_k|

so that sum_i w_i b_i = y. Networks predict logits over the bins; the loss is the
cross-entropy between the two-hot target and softmax(logits). These functions work in
whatever space the bins are given in. Two conventions exist:

- the seed and the official 2024 code: bins B = symexp(linspace(-20, 20, 255))
  (:func:`symexp_twohot_bins`), targets encoded and predictions decoded in *raw* space;
- the official 2023 code: bins uniform on [-20, 20] in *symlog* space
  (:func:`twohot_bins`), targets symlog-ed before encoding, predictions symexp-ed
  after decoding.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wmblocks.functional.symlog import symexp


def _check_grid(name: str, num: int, low: float, high: float) -> None:
    if num < 2:
        raise ValueError(f"{name} needs at least 2 bins, got num={num}")
    if not low < high:
        raise ValueError(f"{name} needs low < high, got low={low}, high={high}")


def twohot_bins(
    num: int = 255,
    low: float = -20.0,
    high: float = 20.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform bins ``[num]`` from ``low`` to ``high`` (defaults: DreamerV3's 255 on [-20, 20]).

    When ``low == -high`` the grid is made exactly antisymmetric (b_i == -b_{num-1-i} in
    floating point, and the middle bin is exactly 0 for odd ``num``), which
    :func:`twohot_decode` relies on to predict exactly 0 from uniform probabilities.
    """
    _check_grid("twohot_bins", num, low, high)
    bins = torch.linspace(low, high, num, dtype=torch.float64)
    if low == -high:
        bins = (bins - bins.flip(0)) / 2
    return bins.to(dtype=dtype, device=device)


def symexp_twohot_bins(
    num: int = 255,
    low: float = -20.0,
    high: float = 20.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Bins ``[num]`` at symexp of a uniform grid on [low, high] (seed and DreamerV3-2024:
    symexp(linspace(-20, 20, 255)), from -4.85e8 to 4.85e8).

    Built as the 2024 code builds them for odd ``num`` and ``low == -high``: the negative
    half symexp(linspace(low, 0, (num + 1) / 2)) (float32 grid) followed by its mirror,
    so the middle bin is exactly 0 and the grid exactly antisymmetric. Other
    configurations use symexp(linspace(low, high, num)) directly.
    """
    _check_grid("symexp_twohot_bins", num, low, high)
    if num % 2 == 1 and low == -high:
        half = symexp(torch.linspace(low, 0.0, (num + 1) // 2, dtype=torch.float32))
        bins = torch.cat([half, -half[:-1].flip(0)])
    else:
        bins = symexp(torch.linspace(low, high, num, dtype=torch.float32))
    return bins.to(dtype=dtype, device=device)


def twohot_neighbours(x: Tensor, bins: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The two bins around ``x`` and their two-hot weights.

    Args:
        x: ``[...]`` values in the bins' space (no gradient is taken through it).
        bins: ``[K]`` strictly increasing.

    Returns:
        ``(below, above, w_below, w_above)``, each ``[...]``: indices k and k + 1 with
        b_k <= x <= b_{k+1} and weights w_below = (b_{k+1} - x) / (b_{k+1} - b_k),
        w_above = 1 - w_below. Values outside [b_0, b_{K-1}] put all weight on the
        nearest end bin, as the reference.
    """
    num = bins.shape[0]
    x = x.detach().clamp(bins[0], bins[-1])
    below = torch.searchsorted(bins, x.contiguous(), right=True) - 1
    below = below.clamp(0, num - 2)  # x == bins[-1] uses the last interval
    above = below + 1
    lo, hi = bins[below], bins[above]
    w_above = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    return below, above, 1.0 - w_above, w_above


def twohot_log_prob(log_probs: Tensor, x: Tensor, bins: Tensor) -> Tensor:
    """``sum_i twohot(x)_i log_probs_i``, gathering only the two non-zero bins.

    Args:
        log_probs: ``[..., K]`` normalised log-probabilities over the bins.
        x: ``[...]`` targets in the bins' space (a constant: no gradient).
        bins: ``[K]``.

    Returns:
        ``[...]``, the negative of :func:`twohot_cross_entropy`, without building the
        ``[..., K]`` target (DreamerV3 eq. 10).
    """
    below, above, w_below, w_above = twohot_neighbours(x, bins)
    lp_below = log_probs.gather(-1, below.unsqueeze(-1)).squeeze(-1)
    lp_above = log_probs.gather(-1, above.unsqueeze(-1)).squeeze(-1)
    return w_below.to(log_probs.dtype) * lp_below + w_above.to(log_probs.dtype) * lp_above


def twohot_encode(x: Tensor, bins: Tensor) -> Tensor:
    """Two-hot weights of ``x`` over ``bins``.

    Args:
        x: ``[...]`` values in the same space as the bins (symlog space for DreamerV3).
        bins: ``[K]`` strictly increasing.

    Returns:
        ``[..., K]`` weights, >= 0, summing to 1, with at most two non-zeros, such that
        ``(weights * bins).sum(-1) == x`` for x inside [bins[0], bins[-1]]. Values outside
        the range put all their weight on the nearest end bin (as the official code does).
    """
    num = bins.shape[0]
    below, above, w_below, w_above = twohot_neighbours(x, bins)
    weights = torch.zeros(*x.shape, num, dtype=x.dtype, device=x.device)
    weights.scatter_(-1, below.unsqueeze(-1), w_below.unsqueeze(-1))
    weights.scatter_(-1, above.unsqueeze(-1), w_above.unsqueeze(-1))
    return weights


def twohot_decode(probs: Tensor, bins: Tensor, symmetric: bool = False) -> Tensor:
    """Expected bin value ``sum_i p_i b_i``, summed so that symmetry gives exactly 0.

    Args:
        probs: ``[..., K]`` probabilities over the bins.
        bins: ``[K]``.
        symmetric: the caller guarantees an odd grid antisymmetric about a zero middle
            bin (b_{m-j} == -b_{m+j} exactly, as :func:`twohot_bins` and
            :func:`symexp_twohot_bins` build for odd K and low == -high; see
            :func:`is_antisymmetric`). Not checked here: checking reads the bins back
            to the host.

    Returns:
        ``[...]``. With ``symmetric`` the sum is one subtraction and one matrix-vector
        product, sum_j (p_{m+j} - p_{m-j}) b_{m+j}; otherwise the halves are paired from
        the centre outwards (p_{m-j} b_{m-j} + p_{m+j} b_{m+j}) before summing. Either
        way mirror-symmetric probabilities (e.g. uniform ones) on an antisymmetric grid
        give exactly 0, not a rounding residue, so DreamerV3's reward and value heads
        predict exactly 0 at initialisation.
    """
    num = bins.shape[0]
    half = num // 2
    if symmetric:
        diff = probs[..., num - half :] - probs[..., :half].flip(-1)
        return diff @ bins[num - half :].to(diff.dtype)
    weighted = probs * bins
    total = (weighted[..., :half].flip(-1) + weighted[..., num - half :]).sum(-1)
    if num % 2 == 1:
        total = total + weighted[..., half]
    return total


def is_antisymmetric(bins: Tensor) -> bool:
    """Whether ``bins`` ``[K]`` is an odd grid with b_m == 0 and b_{m-j} == -b_{m+j}
    exactly (the condition of ``twohot_decode(..., symmetric=True)``). Reads the bins on
    the host: call it once when a head is built, not per step."""
    num = bins.shape[0]
    half = num // 2
    return (
        num % 2 == 1
        and bool(bins[half] == 0)
        and torch.equal(bins[:half].flip(0), -bins[num - half :])
    )


def twohot_cross_entropy(logits: Tensor, target: Tensor, bins: Tensor) -> Tensor:
    """Cross-entropy ``-sum_i twohot(target)_i * log softmax(logits)_i``.

    Args:
        logits: ``[..., K]`` predicted logits over the bins.
        target: ``[...]`` values in the bins' space (apply symlog first for DreamerV3);
            treated as a constant (no gradient flows into it).
        bins: ``[K]``.

    Returns:
        ``[...]`` loss per element (DreamerV3, 2023, eq. 10).
    """
    return -twohot_log_prob(logits.log_softmax(-1), target, bins)
