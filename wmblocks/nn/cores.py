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


def _gru_gates(parts: Tensor, deter: Tensor) -> Tensor:
    """The V2/V3 GRU update from [reset, cand, update] pre-activations ``[N, 3, D]``:
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

    def __init__(self, deter: int, stoch: int, action: int, hidden: int, act: str = "elu"):
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

    Args: deter (D), stoch (Z), action (A), hidden (input width), norm ("layer"; V2's
    input layer had none), act ("elu" V2, "silu" V3).
    """

    def __init__(
        self,
        deter: int,
        stoch: int,
        action: int,
        hidden: int,
        norm: str = "layer",
        act: str = "silu",
        in_norm: str | None = None,
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

    def prepare_action(self, action: Tensor) -> Tensor:
        return self.action_in(action)

    def step(self, deter: Tensor, stoch: Tensor, pre: Tensor) -> Tensor:
        x = self.act(self.in_norm(self.stoch_in(stoch) + pre))
        parts = self.gate_norm(self.gates(torch.cat([x, deter], -1)))
        return _gru_gates(parts.view(*parts.shape[:-1], 3, self.deter), deter)


class BlockGRUCore(_Core):
    """DreamerV3-2024 block GRU with ``blocks`` (8) groups.

    Three input branches act(norm(W x)) for h, z and a (the action first divided by
    sg(max(1, |a|))), concatenated and given to every group together with the group's
    own slice of h; ``layers`` block-linear hidden layers; a block-linear map to the
    three gates per group; GRU update as in :func:`_gru_gates`. Each group only sees
    its own slice of h, which is what makes large ``deter`` affordable.
    """

    def __init__(
        self,
        deter: int,
        stoch: int,
        action: int,
        hidden: int,
        blocks: int = 8,
        layers: int = 1,
        norm: str = "rms",
        act: str = "silu",
    ):
        super().__init__()
        if deter % blocks:
            raise ValueError(f"BlockGRUCore: deter={deter} must be divisible by blocks={blocks}")
        self.deter, self.blocks, self.hidden = deter, blocks, hidden
        self.deter_in = nn.Linear(deter, hidden)
        self.stoch_in = nn.Linear(stoch, hidden)
        self.action_in = nn.Linear(action, hidden)
        for layer in (self.deter_in, self.stoch_in, self.action_in):
            init_linear_(layer)
        self.norms = nn.ModuleList([make_norm(norm, hidden) for _ in range(3)])
        self.act = make_act(act)
        group = deter // blocks
        dims = [group + 3 * hidden] + [group] * layers
        self.hidden_layers = nn.ModuleList(
            [BlockLinear(blocks * dims[i], deter, blocks) for i in range(layers)]
        )
        self.hidden_norms = nn.ModuleList([make_norm(norm, deter) for _ in range(layers)])
        self.gates = BlockLinear(blocks * dims[-1], 3 * deter, blocks)

    def prepare_action(self, action: Tensor) -> Tensor:
        action = action / action.abs().clamp(min=1.0).detach()
        return self.act(self.norms[2](self.action_in(action)))

    def step(self, deter: Tensor, stoch: Tensor, pre: Tensor) -> Tensor:
        n, g = deter.shape[0], self.blocks
        x0 = self.act(self.norms[0](self.deter_in(deter)))
        x1 = self.act(self.norms[1](self.stoch_in(stoch)))
        shared = torch.cat([x0, x1, pre], -1).unsqueeze(1).expand(n, g, 3 * self.hidden)
        x = torch.cat([deter.view(n, g, -1), shared], -1)  # [N, G, D/G + 3 hidden]
        for layer, norm in zip(self.hidden_layers, self.hidden_norms, strict=True):
            x = self.act(norm(layer(x).reshape(n, -1))).view(n, g, -1)
        parts = self.gates(x).view(n, g, 3, -1)  # [N, G, 3, D/G] -> [N, 3, D]
        return _gru_gates(parts.transpose(1, 2).reshape(n, 3, self.deter), deter)
