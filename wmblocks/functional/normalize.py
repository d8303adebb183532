"""DreamerV3 return normalisation by a percentile range (Hafner et al. 2023, eq. 11-12).

    S <- decay * S + (1 - decay) * (Per(R, 95) - Per(R, 5))      decay = 0.99
    advantage = (R - v) / max(1, S)

Implemented as two EMAs, of the 5th and of the 95th percentile (as the official
code keeps them); since the EMA is linear, high - low is exactly the EMA of the range.
The state is explicit: a pure function in, new state out.
"""

from __future__ import annotations

import torch
from torch import Tensor


def percentile_ema(
    low: Tensor,
    high: Tensor,
    returns: Tensor,
    decay: float = 0.99,
    perc_low: float = 0.05,
    perc_high: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """One EMA step of the low and high percentiles of ``returns``.

    Args:
        low, high: ``[]`` the current EMA state (zeros at the start, as in the reference).
        returns: any shape, e.g. R^lambda ``[N, H]``; no gradient flows into the state.
        decay: EMA decay (0.99); perc_low, perc_high: quantiles (0.05, 0.95).

    Returns:
        ``(low', high')``, each ``[]``:
        low' = decay * low + (1 - decay) * quantile(returns, perc_low), likewise high'.
    """
    flat = returns.detach().reshape(-1).to(low.dtype)
    q = torch.quantile(
        flat, torch.tensor([perc_low, perc_high], dtype=flat.dtype, device=flat.device)
    )
    return decay * low + (1.0 - decay) * q[0], decay * high + (1.0 - decay) * q[1]


def return_scale(low: Tensor, high: Tensor, limit: float = 1.0) -> Tensor:
    """``max(limit, high - low)``: the divisor of V3's advantages (limit 1 keeps small
    returns from being scaled up). Shapes ``[]``."""
    return (high - low).clamp(min=limit)
