"""Actor-objective maths that needs no network (DreamerV1, V2, V3).

All terms are *losses* (minimised), per step: ``[N, H]`` for N imagined trajectories of
H steps; weight them by :func:`~wmblocks.functional.returns.cumulative_discount` and
reduce once, where the loss is assembled.
"""

from __future__ import annotations

from torch import Tensor


def advantage(returns: Tensor, baseline: Tensor, scale: Tensor | float = 1.0) -> Tensor:
    """``sg((R_t - v(s_t)) / scale)`` (DreamerV3 eq. 12 with scale = max(1, S); V2: scale 1).

    Args:
        returns: ``[N, H]`` R^lambda_t; baseline: ``[N, H]`` v(s_t) of the same step t;
        scale: ``[]`` or a float, from :func:`~wmblocks.functional.normalize.return_scale`.

    Returns:
        ``[N, H]``, detached. The scale only divides: the normaliser never shifts
        advantages.
    """
    return ((returns - baseline) / scale).detach()


def reinforce_loss(log_prob: Tensor, adv: Tensor) -> Tensor:
    """REINFORCE term ``-log pi(a_t | s_t) * sg(A_t)`` (DreamerV2 eq. 6, V3 eq. 12).

    Args:
        log_prob: ``[N, H]`` log-probability of the action taken at step t.
        adv: ``[N, H]`` advantage of that step (see :func:`advantage`).
    """
    return -log_prob * adv.detach()


def entropy_loss(entropy: Tensor, eta: float) -> Tensor:
    """Entropy bonus as a loss, ``-eta * H[pi(. | s_t)]`` (V2: eta 1e-3 Atari / 1e-4
    continuous; V3: 3e-4). ``[N, H]`` in and out."""
    return -eta * entropy


def backprop_loss(returns: Tensor) -> Tensor:
    """Dynamics backpropagation: maximise R^lambda_t through the learned dynamics,
    ``-R^lambda_t`` (DreamerV1 eq. 7; V2 rho = 0). ``returns`` must keep its graph
    through the imagined states and actions. ``[N, H]`` in and out."""
    return -returns


def rho_mix(reinforce: Tensor, backprop: Tensor, rho: float) -> Tensor:
    """DreamerV2's actor gradient mix ``rho * reinforce + (1 - rho) * backprop`` (eq. 6):
    rho = 1 for discrete actions (Atari), rho = 0 for continuous control."""
    return rho * reinforce + (1.0 - rho) * backprop
