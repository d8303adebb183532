"""Pure tensor maths of the Dreamer series: no modules, no TensorDict, no hidden state."""

from wmblocks.functional.actor import (
    advantage,
    backprop_loss,
    entropy_loss,
    reinforce_loss,
    rho_mix,
)
from wmblocks.functional.categorical import (
    onehot,
    onehot_straight_through,
    sample_onehot,
    straight_through,
    unimix_logits,
    unimix_probs,
)
from wmblocks.functional.contrastive import gaussian_log_prob_matrix, state_nce
from wmblocks.functional.kl import (
    free_bits,
    free_nats,
    kl_balance,
    kl_categorical,
    kl_dyn_rep,
    kl_normal,
)
from wmblocks.functional.normalize import percentile_ema, return_scale
from wmblocks.functional.returns import cumulative_discount, lambda_return, lambda_return_v1
from wmblocks.functional.symlog import symexp, symlog
from wmblocks.functional.twohot import (
    is_antisymmetric,
    symexp_twohot_bins,
    twohot_bins,
    twohot_cross_entropy,
    twohot_decode,
    twohot_encode,
    twohot_log_prob,
    twohot_neighbours,
)

__all__ = [
    "advantage",
    "backprop_loss",
    "cumulative_discount",
    "entropy_loss",
    "free_bits",
    "free_nats",
    "gaussian_log_prob_matrix",
    "kl_balance",
    "kl_categorical",
    "kl_dyn_rep",
    "kl_normal",
    "lambda_return",
    "lambda_return_v1",
    "onehot",
    "onehot_straight_through",
    "percentile_ema",
    "reinforce_loss",
    "return_scale",
    "rho_mix",
    "sample_onehot",
    "state_nce",
    "straight_through",
    "symexp",
    "symexp_twohot_bins",
    "symlog",
    "twohot_bins",
    "twohot_cross_entropy",
    "is_antisymmetric",
    "twohot_decode",
    "twohot_encode",
    "twohot_log_prob",
    "twohot_neighbours",
    "unimix_logits",
    "unimix_probs",
]
