"""World-model, critic and actor objectives: per-(B, T) loss terms, one reduction point."""

from wmblocks.losses.world_model import (
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
    "V1_NCE_SCALES",
    "V1_SCALES",
    "V2_SCALES",
    "V3_2023_SCALES",
    "V3_2024_SCALES",
    "observation_nll",
    "total_loss",
    "world_model_loss_v1",
    "world_model_loss_v1_nce",
    "world_model_loss_v2",
    "world_model_loss_v3",
]
