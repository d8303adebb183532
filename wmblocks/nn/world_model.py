"""The world model: encoder, RSSM, decoder, reward and continue heads, with a
TensorDict interface (keys in :mod:`wmblocks.keys`)."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torch import Tensor, nn

from wmblocks import keys
from wmblocks.nn.encoders import MultiDecoder, MultiEncoder
from wmblocks.nn.layers import MLP
from wmblocks.nn.rssm import RSSM, features


def shift_actions(action: Tensor) -> Tensor:
    """a_{t-1} for every step: ``[B, T, A]`` -> ``[B, T, A]`` with zeros at t = 0 (the
    state carried into a sampled chunk starts from the initial state, as in the V2/V3
    reference training code)."""
    return torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], 1)


class WorldModel(nn.Module):
    """Args:
        encoder: :class:`MultiEncoder` (its keys are the observation keys read).
        rssm: :class:`RSSM`.
        decoder: :class:`MultiDecoder`, predicting observations from features.
        reward_head: MLP from features to reward outputs (255 twohot logits for V3, one
            mean for V1/V2).
        cont_head: MLP from features to one continue logit (V2, V3), or None (V1).

    ``observe(td)`` reads the observation keys, ``action`` and ``is_first`` of a
    ``[B, T]`` batch and writes ``embed``, ``deter``, ``stoch``, ``post`` and ``prior``.
    """

    def __init__(
        self,
        encoder: MultiEncoder,
        rssm: RSSM,
        decoder: MultiDecoder,
        reward_head: MLP,
        cont_head: MLP | None,
    ):
        super().__init__()
        self.encoder, self.rssm, self.decoder = encoder, rssm, decoder
        self.reward_head, self.cont_head = reward_head, cont_head

    @property
    def obs_keys(self) -> list[str]:
        return self.encoder.keys

    def observe(self, td: TensorDictBase) -> TensorDictBase:
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
        out = self.rssm.observe(embed, shift_actions(action), td[keys.IS_FIRST])
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
