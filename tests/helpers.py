"""Small builders shared by the module and loss tests."""

import torch
from tensordict import TensorDict

from wmblocks import presets


def tiny_world_model(version: str, shapes, action_dim: int):
    """A few-thousand-parameter world model of each version."""
    if version == "v3-2024":
        return presets.world_model_v3(shapes, action_dim, "debug", 2024)
    if version == "v3-2023":
        return presets.world_model_v3(shapes, action_dim, "debug", 2023)
    if version == "v2":
        return presets.world_model_v2(
            shapes,
            action_dim,
            deter=64,
            stoch=4,
            classes=4,
            hidden=32,
            units=32,
            layers=1,
            depth=4,
        )
    if version == "v1":
        return presets.world_model_v1(
            shapes, action_dim, deter=32, stoch=8, hidden=32, units=32, depth=4
        )
    raise ValueError(version)


VERSIONS = ["v1", "v2", "v3-2023", "v3-2024"]


def random_batch(shapes, action_dim, B=3, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = {}
    for key, shape in shapes.items():
        if len(shape) == 3:
            data[key] = torch.randint(0, 256, (B, T, *shape), generator=g, dtype=torch.uint8)
        else:
            data[key] = torch.randn(B, T, *shape, generator=g)
    data["action"] = torch.randn(B, T, action_dim, generator=g)
    data["reward"] = torch.randn(B, T, generator=g)
    data["is_first"] = torch.zeros(B, T, dtype=torch.bool)
    data["is_first"][:, 0] = True
    data["is_terminal"] = torch.zeros(B, T, dtype=torch.bool)
    data["is_last"] = torch.zeros(B, T, dtype=torch.bool)
    return TensorDict(data, [B, T])


def with_context(batch, agent):
    """Adds the stored latents (zeros) a V3-2024 agent's replay rows carry; other agents'
    batches are returned as they are."""
    if not agent.replay_context:
        return batch
    B, T = batch.batch_size
    rssm = agent.wm.rssm
    batch["deter"] = torch.zeros(B, T, rssm.deter)
    batch["stoch"] = torch.zeros(B, T, rssm.stoch_dim)
    return batch
