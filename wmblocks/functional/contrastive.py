"""DreamerV1's contrastive state-model objective (Hafner et al. 2020, §4 / App. "NCE")."""

from __future__ import annotations

import math

from torch import Tensor


def gaussian_log_prob_matrix(z: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``L[i, j] = ln N(z_i; mean_j, diag std_j^2)`` for all pairs, ``[N, N]``.

    Args: z, mean, std: ``[N, Z]``. Expands the square so memory is N^2, not N^2 Z:
    sum_k (z_ik - m_jk)^2 / s_jk^2 = (z^2) (1/s^2)^T - 2 z (m/s^2)^T + sum_k m_jk^2/s_jk^2.
    """
    inv_var = std.square().reciprocal()  # [N, Z]
    quad = z.square() @ inv_var.T - 2.0 * z @ (mean * inv_var).T + (mean.square() * inv_var).sum(-1)
    norm = std.log().sum(-1) + 0.5 * z.shape[-1] * math.log(2.0 * math.pi)  # [N] over j
    return -0.5 * quad - norm


def state_nce(z: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """J_S per sample: ``ln q(z_i | o_i) - ln sum_j q(z_i | o_j)``, ``[N]``.

    Args:
        z: ``[N, Z]`` states s_t (posterior samples), flattened over batch and time.
        mean, std: ``[N, Z]`` the state model q(s | o) at each of the N observations.

    The sum runs over all N observations of the batch, the matched one included (the
    usual InfoNCE form, so J_S <= 0 and J_S = -ln N when q ignores o). Maximise J_S.
    """
    logits = gaussian_log_prob_matrix(z, mean, std)
    return logits.diagonal() - logits.logsumexp(-1)
