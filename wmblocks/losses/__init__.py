"""World-model, critic and actor objectives: per-(B, T) loss terms, one reduction point."""

from wmblocks.losses.behavior import (
    behavior_loss_v1,
    behavior_loss_v2,
    behavior_loss_v3,
    frozen,
    imagination_weights_v3,
    imagine,
    replay_value_loss_v3,
)
from wmblocks.losses.world_model import (
    CONT_TARGET_2024,
    V1_NCE_SCALES,
    V1_SCALES,
    V2_SCALES,
    V3_2023_SCALES,
    V3_2024_SCALES,
    observation_nll,
    total_loss,
    world_model_loss_v1,
    world_model_loss_v1_nce,
    world_model_loss_v2,
    world_model_loss_v3,
)

__all__ = [
    "CONT_TARGET_2024",
    "V1_NCE_SCALES",
    "V1_SCALES",
    "V2_SCALES",
    "V3_2023_SCALES",
    "V3_2024_SCALES",
    "behavior_loss_v1",
    "behavior_loss_v2",
    "behavior_loss_v3",
    "frozen",
    "imagination_weights_v3",
    "imagine",
    "observation_nll",
    "replay_value_loss_v3",
    "total_loss",
    "world_model_loss_v1",
    "world_model_loss_v1_nce",
    "world_model_loss_v2",
    "world_model_loss_v3",
]
