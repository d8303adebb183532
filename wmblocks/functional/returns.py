"""lambda-returns: the recursive form of DreamerV2/V3 and the explicit sum of DreamerV1.

Time convention (both functions): step t of an imagined or replayed trajectory
s_0, s_1, ..., s_T.

    reward[:, t]     r_t      reward received on the transition s_t -> s_{t+1}
    value_next[:, t] v_{t+1}  value of the *next* state s_{t+1}
    discount[:, t]   gamma_t  gamma times the probability that the episode goes on past
                              s_{t+1} (in imagination gamma * c_{t+1}, the continue head at
                              s_{t+1}; 0 when s_{t+1} is terminal)

With the reference code's alignment (reward and continue predicted *at* the next state,
rew[1:], cont[1:]) the caller slices once: reward = rew[:, 1:], discount =
gamma * cont[:, 1:], value_next = val[:, 1:].
"""

from __future__ import annotations

import torch
from torch import Tensor


def lambda_return(
    reward: Tensor,
    value_next: Tensor,
    discount: Tensor,
    lam: float | Tensor,
    bootstrap: Tensor | None = None,
) -> Tensor:
    """Recursive TD(lambda) return (DreamerV2, Hafner et al. 2021, eq. 4; DreamerV3 eq. 7).

        R_t = r_t + gamma_t * ((1 - lambda) * v_{t+1} + lambda * R_{t+1}),   R_T = bootstrap

    Args:
        reward: ``[B, T]`` r_t (see module docstring for the alignment).
        value_next: ``[B, T]`` v_{t+1}.
        discount: ``[B, T]`` gamma_t = gamma * c_{t+1}.
        lam: lambda in [0, 1]; 1 gives the discounted Monte-Carlo return plus bootstrap,
            0 the one-step TD target r_t + gamma_t v_{t+1}. A ``[B, T]`` tensor gives a
            per-step lambda_t (0 cuts the recursion at an episode boundary).
        bootstrap: ``[B]`` R_T; defaults to ``value_next[:, -1]`` = v_T.

    Returns:
        ``[B, T]`` R_t for t = 0..T-1. Gradients flow into every input; detach the inputs
        where the loss wants sg(.).
    """
    if reward.shape != value_next.shape or reward.shape != discount.shape:
        raise ValueError(
            "lambda_return needs reward, value_next and discount of one shape [B, T], got "
            f"{tuple(reward.shape)}, {tuple(value_next.shape)}, {tuple(discount.shape)}"
        )
    last = value_next[:, -1] if bootstrap is None else bootstrap
    # R_t = a_t + b_t R_{t+1}, with a and b computed for all t at once.
    a = reward + discount * (1.0 - lam) * value_next
    b = discount * lam
    returns = []
    for t in range(reward.shape[1] - 1, -1, -1):
        last = a[:, t] + b[:, t] * last
        returns.append(last)
    return torch.stack(returns[::-1], dim=1)


def lambda_return_v1(reward: Tensor, value_next: Tensor, gamma: float, lam: float) -> Tensor:
    """DreamerV1's explicit-sum lambda-return (Hafner et al. 2020, eq. 4-6), horizon H = T.

        V_N^k(s_t) = sum_{n=t}^{h-1} gamma^{n-t} r_n + gamma^{h-t} v(s_h),  h = min(t + k, T)
        V_lambda(s_t) = (1 - lambda) sum_{k=1}^{H-1} lambda^{k-1} V_N^k(s_t)
                        + lambda^{H-1} V_N^H(s_t)

    Written as the paper writes it (a weighted sum of k-step returns), not as a recursion:
    it is the reference that :func:`lambda_return` is tested against. The only shift
    from the paper's notation is the reward index: here ``reward[:, n]`` is the reward of
    the transition s_n -> s_{n+1}, and ``value_next[:, h-1]`` is v(s_h).

    Args:
        reward: ``[B, T]``; value_next: ``[B, T]`` (module docstring); gamma: a constant
        discount; lam: lambda.

    Returns:
        ``[B, T]`` V_lambda(s_t) for t = 0..T-1.
    """
    if reward.shape != value_next.shape:
        raise ValueError(
            f"lambda_return_v1 needs reward and value_next of one shape [B, T], got "
            f"{tuple(reward.shape)} and {tuple(value_next.shape)}"
        )
    horizon = reward.shape[1]
    powers = gamma ** torch.arange(horizon + 1, dtype=reward.dtype, device=reward.device)
    out = []
    for t in range(horizon):
        k_step = []  # V_N^k(s_t) for k = 1..H
        for k in range(1, horizon + 1):
            h = min(t + k, horizon)
            rewards = (powers[: h - t] * reward[:, t:h]).sum(-1)
            k_step.append(rewards + powers[h - t] * value_next[:, h - 1])
        mixed = sum((1 - lam) * lam ** (k - 1) * k_step[k - 1] for k in range(1, horizon))
        out.append(mixed + lam ** (horizon - 1) * k_step[horizon - 1])
    return torch.stack(out, dim=1)


def cumulative_discount(discount: Tensor) -> Tensor:
    """Weights ``w_t = prod_{i<t} gamma_i`` for per-step losses in imagination.

    Args:
        discount: ``[B, T]`` gamma_t (or continue probabilities c_{t+1}).

    Returns:
        ``[B, T]`` with w_0 = 1, w_t = gamma_0 ... gamma_{t-1}: the probability-weighted
        reach of step t, zero after a predicted terminal (DreamerV2 §"Imagination MDP").
        Computed with no gradient (sg(.) as in the reference code).
    """
    discount = discount.detach()
    ones = torch.ones_like(discount[:, :1])
    return torch.cat([ones, discount[:, :-1]], dim=1).cumprod(dim=1)
