"""Recurrent cores h_t = f(h_{t-1}, z_{t-1}, a_{t-1}) of the RSSM.

Every core has the same interface so the RSSM takes any of them:

    pre = core.prepare_action(action)      # [..., A] -> [..., P], once for all steps
    deter = core.step(deter, stoch, pre)   # [N, D], [N, Z], [N, P] -> [N, D]
    deter = core(deter, stoch, action)     # both at once (imagination)

``prepare_action`` lets ``observe`` push the action's input projection out of the
T-step loop: the actions are known in advance there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wmblocks.nn.layers import BlockLinear, init_linear_, make_act, make_norm


class _Core(nn.Module):
    """Shared ``forward``; subclasses define ``deter``, ``prepare_action`` and ``step``."""

    def forward(self, deter: Tensor, stoch: Tensor, action: Tensor) -> Tensor:
        return self.step(deter, stoch, self.prepare_action(action))


def clip_action(action: Tensor) -> Tensor:
    """``a / sg(max(1, |a|))`` elementwise, any shape: the V3 cores' action input (2024
    inside the core, 2023 in ``img_step``), so unclipped policy samples in imagination
    stay in [-1, 1]."""
    return action / action.abs().clamp(min=1.0).detach()


def _gru_gates(parts: Tensor, deter: Tensor) -> Tensor:
    """The V2/V3 GRU update from [reset, cand, update] pre-activations ``[..., 3, D]``
    (``deter`` ``[..., D]``):
    cand = tanh(sigmoid(reset) * cand), u = sigmoid(update - 1), h' = u cand + (1 - u) h
    (the -1 bias makes the cell keep its state by default)."""
    reset, cand, update = parts.unbind(-2)
    cand = torch.tanh(torch.sigmoid(reset) * cand)
    update = torch.sigmoid(update - 1.0)
    return update * cand + (1.0 - update) * deter


class GRUCore(_Core):
    """DreamerV1: x = act(W [z, a] + b), h' = GRUCell(x, h) (torch's standard GRU cell).

    Args: deter (D, 200 in V1), stoch (Z), action (A), hidden (200 in V1), act (elu).
    """

    def __init__(self, deter: int, stoch: int, action: int, *, hidden: int, act: str = "elu"):
        super().__init__()
        self.deter = deter
        self.stoch_in = nn.Linear(stoch, hidden, bias=False)
        self.action_in = nn.Linear(action, hidden)
        self.act = make_act(act)
        self.cell = nn.GRUCell(hidden, deter)

    def prepare_action(self, action: Tensor) -> Tensor:
        return self.action_in(action)

    def step(self, deter: Tensor, stoch: Tensor, pre: Tensor) -> Tensor:
        return self.cell(self.act(self.stoch_in(stoch) + pre), deter)


class LayerNormGRUCore(_Core):
    """DreamerV2 / V3-2023: x = act(norm(W [z, a])); [r, c, u] = norm(W [x, h]); GRU update
    with update bias -1 (see :func:`_gru_gates`).

    Args: deter (D), stoch (Z), action (A); keyword-only: hidden (input width), norm
    ("layer"), act ("elu" V2, "silu" V3), in_norm (norm of the input layer, default
    ``norm``; V2's input layer had none), action_clip (V3-2023: the action is first
    divided by sg(max(1, |a|)), as its ``img_step`` does in observation and imagination
    alike; V2: no).
    """

    def __init__(
        self,
        deter: int,
        stoch: int,
        action: int,
        *,
        hidden: int,
        norm: str = "layer",
        act: str = "silu",
        in_norm: str | None = None,
        action_clip: bool = False,
    ):
        super().__init__()
        self.deter = deter
        self.stoch_in = nn.Linear(stoch, hidden, bias=False)
        self.action_in = nn.Linear(action, hidden)
        self.in_norm = make_norm(norm if in_norm is None else in_norm, hidden)
        self.act = make_act(act)
        self.gates = nn.Linear(hidden + deter, 3 * deter, bias=norm == "none")
        init_linear_(self.gates)
        self.gate_norm = make_norm(norm, 3 * deter)
        self.action_clip = action_clip

    def prepare_action(self, action: Tensor) -> Tensor:
        if self.action_clip:
            action = clip_action(action)
        return self.action_in(action)

    def step(self, deter: Tensor, stoch: Tensor, pre: Tensor) -> Tensor:
        x = self.act(self.in_norm(self.stoch_in(stoch) + pre))
        parts = self.gate_norm(self.gates(torch.cat([x, deter], -1)))
        return _gru_gates(parts.view(*parts.shape[:-1], 3, self.deter), deter)


class BlockGRUCore(_Core):
    """DreamerV3-2024 block GRU with ``blocks`` (8) groups.

    Three input branches x_i = act(norm(W_i in_i)) for h, z and a (the action first
    divided by sg(max(1, |a|))) are given to every group together with the group's own
    slice of h; ``layers`` hidden layers; a block-linear map to the three gates per
    group; GRU update as in :func:`_gru_gates`. Each group only sees its own slice of h,
    which is what makes a large ``deter`` affordable.

    The first hidden layer of group g is a linear map of [h_g, x_0, x_1, x_2]. The
    shared part [x_0, x_1, x_2] is the same for every group, so its weights for all
    groups form one dense ``[3 hidden, D]`` map (:attr:`shared`), applied once instead
    of copying the shared inputs into every group; h_g goes through a
    :class:`BlockLinear`. Same parameters and function as the reference's per-group
    layer, fewer copies; and the action's share, known in advance in ``observe``, is
    computed by :meth:`prepare_action` for all steps at once.
    """

    def __init__(
        self,
        deter: int,
        stoch: int,
        action: int,
        *,
        hidden: int,
        blocks: int = 8,
        layers: int = 1,
        norm: str = "rms",
        act: str = "silu",
    ):
        super().__init__()
        if deter % blocks:
            raise ValueError(f"BlockGRUCore: deter={deter} must be divisible by blocks={blocks}")
        if layers < 1:
            raise ValueError(f"BlockGRUCore needs layers >= 1, got {layers}")
        self.deter, self.blocks, self.hidden = deter, blocks, hidden
        self.deter_in = nn.Linear(deter, hidden)
        self.stoch_in = nn.Linear(stoch, hidden)
        self.action_in = nn.Linear(action, hidden)
        for layer in (self.deter_in, self.stoch_in, self.action_in):
            init_linear_(layer)
        self.norms = nn.ModuleList([make_norm(norm, hidden) for _ in range(3)])
        self.act = make_act(act)
        self.first_block = BlockLinear(deter, deter, blocks)
        self.shared = nn.Parameter(torch.empty(3 * hidden, deter))
        # The reference's layer is a BlockLinear over the G concatenated group inputs
        # [h_g, x_0, x_1, x_2]: its fan-in is the whole input, G * (D/G + 3 hidden).
        std = (deter + 3 * hidden * blocks) ** -0.5 / 0.87962566103423978
        for w in (self.first_block.weight, self.shared):
            nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)
        self.more_layers = nn.ModuleList(
            [BlockLinear(deter, deter, blocks) for _ in range(layers - 1)]
        )
        self.hidden_norms = nn.ModuleList([make_norm(norm, deter) for _ in range(layers)])
        self.gates = BlockLinear(deter, 3 * deter, blocks)

    def prepare_action(self, action: Tensor) -> Tensor:
        action = clip_action(action)
        x2 = self.act(self.norms[2](self.action_in(action)))
        return x2 @ self.shared[2 * self.hidden :]  # [..., D]

    def step(self, deter: Tensor, stoch: Tensor, pre: Tensor) -> Tensor:
        n, g = deter.shape[0], self.blocks
        x0 = self.act(self.norms[0](self.deter_in(deter)))
        x1 = self.act(self.norms[1](self.stoch_in(stoch)))
        x = torch.cat([x0, x1], -1) @ self.shared[: 2 * self.hidden] + pre
        x = x + self.first_block(deter.view(n, g, -1)).reshape(n, -1)
        x = self.act(self.hidden_norms[0](x))
        for layer, norm in zip(self.more_layers, self.hidden_norms[1:], strict=True):
            x = self.act(norm(layer(x.view(n, g, -1)).reshape(n, -1)))
        parts = self.gates(x.view(n, g, -1)).view(n, g, 3, -1)  # [N, G, 3, D/G]
        return _gru_gates(parts, deter.view(n, g, -1)).reshape(n, -1)
