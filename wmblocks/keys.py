"""Every TensorDict key wmblocks reads or writes, in one place.

Replay batches are ``[B, T]`` TensorDicts with one entry per *step t*:

    OBS keys      o_t (a vector [K] or an image [C, 64, 64]; several keys allowed)
    ACTION        a_t, the action taken after observing o_t (one-hot for Discrete)
    REWARD        r_t, the reward received on arriving at o_t (0 when IS_FIRST)
    IS_FIRST      o_t starts an episode
    IS_TERMINAL   o_t is terminal (the episode ended, not truncated)
    IS_LAST       o_t is the last observation of its episode (terminal or truncated)
    DETER, STOCH  (V3-2024 replay context) the latent state the agent had at o_t when
                  it acted, refreshed with the training posterior after each update

The world model writes, per step t:

    DETER h_t [B, T, D], STOCH z_t [B, T, Z], POST / PRIOR stats of q and p,
    and loss terms ``loss_<name>`` of shape [B, T].
"""

OBS = "observation"
ACTION = "action"
REWARD = "reward"
IS_FIRST = "is_first"
IS_TERMINAL = "is_terminal"
IS_LAST = "is_last"

EMBED = "embed"
DETER = "deter"
STOCH = "stoch"
POST = "post"
PRIOR = "prior"


def loss_key(name: str) -> str:
    """``loss_<name>``: where a per-(B, T) loss term is written."""
    return f"loss_{name}"
