"""Pieces of offline training (``recipes/world_model.py``): a recipe's agent trained on
recorded data, its world model alone or with its behaviour (offline Dreamer)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase
from torch import Tensor

from wmblocks import keys
from wmblocks.errors import UserError
from wmblocks.optim import step_if_finite
from wmblocks.train.loop import Agent
from wmblocks.train.speed import autocast, compiled


def world_model_update(
    agent: Agent, precision: str, device: torch.device, compile: bool = False
) -> Callable[[TensorDictBase], dict[str, Tensor]]:
    """One update of the agent's world model alone: ``agent.world_model_loss`` (the
    recipe's own world-model objective, scales included), backward, and a step of the
    optimisers in ``agent.world_model_optimizers`` (skipped on a non-finite loss or
    gradient, :func:`~wmblocks.optim.step_if_finite`). The actor and critic get no
    gradient and do not change. Returns detached metrics, as ``agent.update``."""
    if agent.world_model_loss is None:
        raise UserError(f"{agent.title} does not declare its world-model loss")
    forward = compiled(agent.world_model_loss, compile)
    opts = {name: agent.optimizers[name] for name in agent.world_model_optimizers}

    def update(batch: TensorDictBase) -> dict[str, Tensor]:
        with autocast(precision, device):
            loss, metrics = forward(batch)
        loss.backward()
        skipped, norms = step_if_finite(opts, loss)
        metrics = dict(metrics)
        metrics.update({f"grad_norm/{name}": norm for name, norm in norms.items()})
        metrics["train/skipped"] = skipped.float()
        return metrics

    return update


@torch.no_grad()
def initial_context(batch: TensorDictBase, agent: Agent) -> TensorDictBase:
    """A ``[B, 1 + T]`` batch for an agent with ``replay_context`` (V3-2024) when the
    data has no stored latents: every row's ``deter`` / ``stoch`` is the RSSM's initial
    state, so each chunk starts from it (after the action of its context row), as the
    2023 revision and the references' first updates do. Other agents: ``batch``."""
    if not agent.replay_context:
        return batch
    b, t = batch.batch_size
    deter, stoch = agent.wm.rssm.initial(b)
    batch.set(keys.DETER, deter[:, None].expand(b, t, -1).to(batch.device).clone())
    batch.set(keys.STOCH, stoch[:, None].expand(b, t, -1).to(batch.device).clone())
    return batch
