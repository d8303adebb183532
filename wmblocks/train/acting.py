"""Acting in the environment with a world model and an actor (recurrent state)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wmblocks.nn.rssm import features
from wmblocks.nn.world_model import WorldModel
from wmblocks.train.speed import compiled


class LatentPolicy:
    """Filters observations with the RSSM and samples (or takes the mode of) the
    actor's action. Keeps (h, z, a_{t-1}) between calls for a batch of N environments.

    ``__call__(obs, is_first, greedy)`` with ``obs`` a dict of ``[N, ...]`` tensors and
    ``is_first`` ``[N]`` returns an action ``[N, A]`` (one-hot for discrete; clipped to
    [-1, 1] for continuous, the exploration noise of V1 included if ``noise > 0``).
    With ``compile``, the step (:meth:`step`) is one ``torch.compile``-d call.
    """

    def __init__(
        self,
        wm: WorldModel,
        actor: nn.Module,
        action_dim: int,
        discrete: bool,
        noise: float = 0.0,
        compile: bool = False,
    ):
        self.wm, self.actor = wm, actor
        self.action_dim, self.discrete, self.noise = action_dim, discrete, noise
        self.state: tuple[Tensor, Tensor, Tensor] | None = None
        # One call for all N environments: encoder, one filtering step, the policy.
        self._step = compiled(self.step, compile)

    def reset(self) -> None:
        self.state = None

    @property
    def latent(self) -> tuple[Tensor, Tensor]:
        """``(h_t [N, D], z_t [N, Z])``: the posterior state of the last call's
        observation (what the V3-2024 replay context stores with the step)."""
        if self.state is None:
            raise RuntimeError("LatentPolicy.latent is read before the first action")
        return self.state[0], self.state[1]

    def step(
        self,
        obs: dict[str, Tensor],
        is_first: Tensor,
        deter: Tensor,
        stoch: Tensor,
        prev: Tensor,
        greedy: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One acting step, a pure function of its inputs (what ``compile`` compiles):
        ``obs`` ``[N, ...]`` per key, ``is_first`` ``[N]``, the previous posterior
        ``deter`` ``[N, D]``, ``stoch`` ``[N, Z]`` and action ``prev`` ``[N, A]`` ->
        the new ``(deter, stoch, action)``."""
        embed = self.wm.encoder(obs)
        deter, stoch = self.wm.rssm.obs_step(deter, stoch, prev, embed, is_first)
        dist = self.actor(features(deter, stoch))
        action = dist.mode if greedy else dist.sample()
        action = action.detach().to(prev.dtype)
        if not self.discrete:
            if self.noise and not greedy:
                action = action + self.noise * torch.randn_like(action)
            action = action.clamp(-1.0, 1.0)
        return deter, stoch, action

    @torch.no_grad()
    def __call__(self, obs: dict[str, Tensor], is_first: Tensor, greedy: bool = False) -> Tensor:
        if self.state is None:
            n = is_first.shape[0]
            deter, stoch = self.wm.rssm.initial(n)
            # Laid out as the step returns them (the 2023 initial h_0 is an expand), so
            # the compiled step has one graph.
            deter, stoch = deter.contiguous(), stoch.contiguous()
            self.state = (deter, stoch, deter.new_zeros(n, self.action_dim))
        self.state = self._step(obs, is_first, *self.state, greedy=greedy)
        return self.state[2]
