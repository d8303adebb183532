"""The world model: encoder, RSSM, decoder, reward and continue heads, with a
TensorDict interface (keys in :mod:`wmblocks.keys`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from torch import Tensor, nn

from wmblocks import keys
from wmblocks.nn.encoders import MultiDecoder, MultiEncoder
from wmblocks.nn.rssm import RSSM, features


def shift_actions(action: Tensor, first: Tensor | None = None) -> Tensor:
    """a_{t-1} for every step: ``[B, T, A]`` -> ``[B, T, A]``, with ``first`` ``[B, A]``
    (the action taken before the chunk) at t = 0, or zeros when there is none (the
    chunk then starts from the initial state, as V1, V2 and V3-2023 train)."""
    head = torch.zeros_like(action[:, :1]) if first is None else first.unsqueeze(1)
    return torch.cat([head, action[:, :-1]], 1)


@dataclass
class Start:
    """Where a replayed chunk starts (DreamerV3-2024 ``replay_context``): the latent
    state (h, z) stored in replay for the step before the chunk, ``deter`` ``[B, D]``
    and ``stoch`` ``[B, Z]``, and the action ``[B, A]`` taken there."""

    deter: Tensor
    stoch: Tensor
    action: Tensor


def split_context(batch: TensorDictBase) -> tuple[TensorDictBase, Start]:
    """A ``[B, 1 + T]`` replay batch -> the ``[B, T]`` chunk ``batch[:, 1:]`` and the
    :class:`Start` read from its first row (stored latents and action). As the 2024
    reference with ``replay_context: 1``; the chunk's own ``is_first`` still resets."""
    first = batch[:, 0]
    start = Start(first[keys.DETER], first[keys.STOCH], first[keys.ACTION])
    return batch[:, 1:], start


@torch.no_grad()
def refresh_context_(
    batch: TensorDictBase, observed: TensorDictBase, skip: Tensor | None = None
) -> None:
    """Write the posterior latents of an observed chunk (``observed[DETER]``,
    ``observed[STOCH]`` ``[B, T, .]``) into rows 1..T of the ``[B, 1 + T]`` ``batch``
    in place, for the loop to store back into replay (the reference refreshes the
    stored latents after each update). Where ``skip`` (``[]`` bool: an update skipped
    for a non-finite loss, whose latents may be NaN) the stored latents stay."""
    for key in (keys.DETER, keys.STOCH):
        new = observed[key].to(batch[key].dtype)
        if skip is not None:
            new = torch.where(skip, batch[key][:, 1:], new)
        batch[key][:, 1:] = new


class WorldModel(nn.Module):
    """Args:
        encoder: :class:`MultiEncoder` (its keys are the observation keys read).
        rssm: :class:`RSSM`.
        decoder: :class:`MultiDecoder`: features -> a distribution per observation key.
        reward_head: features -> reward distribution
            (:class:`~wmblocks.nn.heads.TwoHotHead` for V3, ``ScalarHead`` for V1/V2).
        cont_head: features -> Bernoulli (V3 continue, V2 discount), or None (V1, and V2
            without a discount predictor).

    ``observe(td, start)`` reads the observation keys, ``action`` and ``is_first`` of a
    ``[B, T]`` batch and writes ``embed``, ``deter``, ``stoch``, ``post`` and ``prior``.
    """

    def __init__(
        self,
        encoder: MultiEncoder,
        rssm: RSSM,
        decoder: MultiDecoder,
        reward_head: nn.Module,
        cont_head: nn.Module | None,
    ):
        super().__init__()
        self.encoder, self.rssm, self.decoder = encoder, rssm, decoder
        self.reward_head, self.cont_head = reward_head, cont_head

    @property
    def obs_keys(self) -> list[str]:
        return self.encoder.keys

    def observe(self, td: TensorDictBase, start: Start | None = None) -> TensorDictBase:
        """Filter a ``[B, T]`` batch; ``start`` (see :class:`Start`) carries the state and
        the previous action into step 0, else the initial state and a zero action."""
        missing = [k for k in [*self.obs_keys, keys.ACTION, keys.IS_FIRST] if k not in td.keys()]
        if missing:
            raise KeyError(
                f"world model batch lacks {missing}; it has {sorted(td.keys())} "
                f"(keys are defined in wmblocks.keys)"
            )
        if td.batch_dims != 2:
            raise ValueError(f"world model batch must be [B, T], got batch size {td.batch_size}")
        embed = self.encoder({k: td[k] for k in self.obs_keys})
        action = td[keys.ACTION].to(embed.dtype)
        if start is None:
            prev, state = shift_actions(action), None
        else:
            prev = shift_actions(action, start.action.to(embed.dtype))
            state = (start.deter.to(embed.dtype), start.stoch.to(embed.dtype))
        out = self.rssm.observe(embed, prev, td[keys.IS_FIRST], state)
        td.set(keys.EMBED, embed)
        td.set(keys.DETER, out["deter"])
        td.set(keys.STOCH, out["stoch"])
        td.set(keys.POST, out["post"])
        td.set(keys.PRIOR, out["prior"])
        return td

    forward = observe

    @staticmethod
    def features(td: TensorDictBase) -> Tensor:
        """``[B, T, Z + D]`` features of an observed batch."""
        return features(td[keys.DETER], td[keys.STOCH])
