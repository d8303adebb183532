"""The recurrent state-space model (RSSM) of Dreamer V1, V2 and V3.

    h_t = f(h_{t-1}, z_{t-1}, a_{t-1})        core (GRU, LayerNorm GRU, block GRU)
    p(z_t | h_t)                              prior: MLP + latent head
    q(z_t | h_t, e_t)                         posterior: one layer on [h_t, e_t] + head

One class serves all versions: the latent head (Gaussian for V1, categorical for V2/V3)
and the core are arguments. The state is (deter h [N, D], stoch z [N, Z]); the feature
given to every head is cat([z, h]).

Speed (DESIGN §4): ``observe`` keeps only what depends on the previous step inside its
loop (core step, posterior layer, sample); the action projections and the embedding
half of the posterior layer are computed for all T steps before it, and the prior for
all T steps after it, as one batched call each. No TensorDict, no host sync, no Python
branching on tensor values inside either loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from wmblocks.nn.layers import MLP, init_linear_, make_act, make_norm


def features(deter: Tensor, stoch: Tensor) -> Tensor:
    """``cat([z, h], -1)``: ``[..., Z + D]``, the input of decoders, heads and policies."""
    return torch.cat([stoch, deter], -1)


class RSSM(nn.Module):
    """Args:
    core: a core from :mod:`wmblocks.nn.cores` (its ``deter`` sets D).
    prior_head, post_head: two latent heads of one kind, each taking ``hidden``
        features (:mod:`wmblocks.nn.latents`).
    embed_dim: E, the encoder's output size.
    hidden: width of the prior's and the posterior's hidden layers.
    prior_layers: hidden layers of the prior (1 in V1/V2/V3-2023, 2 in V3-2024).
    norm, act: of those hidden layers.
    learned_init: V3's learned initial state: h_0 = tanh(w), z_0 = mode of the
        prior at h_0; otherwise zeros (V1, V2).
    """

    def __init__(
        self,
        core: nn.Module,
        prior_head: nn.Module,
        post_head: nn.Module,
        *,
        embed_dim: int,
        hidden: int,
        prior_layers: int = 1,
        norm: str = "none",
        act: str = "elu",
        learned_init: bool = False,
    ):
        super().__init__()
        self.core, self.prior_head, self.post_head = core, prior_head, post_head
        self.deter = core.deter
        self.stoch_dim = prior_head.stoch_dim
        self.prior_mlp = MLP(
            self.deter, None, units=hidden, layers=prior_layers, norm=norm, act=act
        )
        self.post_deter = nn.Linear(self.deter, hidden, bias=False)
        self.post_embed = nn.Linear(embed_dim, hidden)
        init_linear_(self.post_deter)
        init_linear_(self.post_embed)
        self.post_norm = make_norm(norm, hidden)
        self.post_act = make_act(act)
        self.init_deter = nn.Parameter(torch.zeros(self.deter)) if learned_init else None

    @property
    def feat_dim(self) -> int:
        return self.deter + self.stoch_dim

    def initial(self, batch: int) -> tuple[Tensor, Tensor]:
        """``(h_0 [batch, D], z_0 [batch, Z])``."""
        ref = self.post_embed.weight
        if self.init_deter is None:
            deter = ref.new_zeros(batch, self.deter)
            return deter, ref.new_zeros(batch, self.stoch_dim)
        deter = torch.tanh(self.init_deter).expand(batch, self.deter)
        return deter, self.prior_head.mode(self.prior(deter)).detach()

    def prior(self, deter: Tensor) -> Tensor:
        """Prior stats of p(z_t | h_t) for ``deter`` ``[..., D]``."""
        return self.prior_head(self.prior_mlp(deter))

    def posterior(self, deter: Tensor, embed_proj: Tensor) -> Tensor:
        """Posterior stats of q(z_t | h_t, e_t) from ``deter`` ``[N, D]`` (the *new* h_t
        of the same step) and ``embed_proj`` = ``self.post_embed(e_t)`` ``[N, hidden]``
        (projected once for all T steps in :meth:`observe`)."""
        return self.post_head(self.post_act(self.post_norm(self.post_deter(deter) + embed_proj)))

    def img_step(self, deter: Tensor, stoch: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """One imagination step: h' = f(h, z, a), z' ~ p(z' | h'). ``[N, .]`` each."""
        deter = self.core(deter, stoch, action)
        return deter, self.prior_head.sample(self.prior(deter))

    def obs_step(
        self,
        deter: Tensor,
        stoch: Tensor,
        prev_action: Tensor,
        embed: Tensor,
        is_first: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """One filtering step, for acting in the environment: the same maths as one
        iteration of :meth:`observe`. ``[N, D]``, ``[N, Z]``, ``[N, A]`` (a_{t-1}),
        ``[N, E]`` (e_t), ``[N]`` bool -> (h_t, z_t ~ q)."""
        keep = (~is_first.bool()).to(embed.dtype).unsqueeze(-1)
        act_pre = self.core.prepare_action(prev_action * keep)
        init = self.initial(embed.shape[0])
        deter, stoch, _ = self.obs_cell(deter, stoch, keep, act_pre, self.post_embed(embed), *init)
        return deter, stoch

    def observe(
        self,
        embed: Tensor,
        prev_action: Tensor,
        is_first: Tensor,
        state: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Filter a sequence: posterior states for every step.

        Args:
            embed: ``[B, T, E]`` e_t, the encoded observation o_t.
            prev_action: ``[B, T, A]`` a_{t-1}, the action that led to o_t.
            is_first: ``[B, T]`` bool, o_t starts an episode: the carried state and
                a_{t-1} are replaced by the initial state and zeros before step t.
            state: ``(h [B, D], z [B, Z])`` carried from before the sequence; default
                the initial state.

        Returns:
            ``deter [B, T, D]`` h_t, ``stoch [B, T, Z]`` z_t ~ q, ``post`` and ``prior``
            stats ``[B, T, ...]`` of q(z_t | h_t, e_t) and p(z_t | h_t).
        """
        B = embed.shape[0]
        keep = (~is_first.bool()).to(embed.dtype).unsqueeze(-1)  # [B, T, 1]
        act_pre = self.core.prepare_action(prev_action * keep)  # [B, T, P]
        emb_pre = self.post_embed(embed)  # [B, T, hidden]
        init = self.initial(B)
        state = init if state is None else state
        deter, stoch, post = self._observe_scan(keep, act_pre, emb_pre, init, state)
        return {"deter": deter, "stoch": stoch, "post": post, "prior": self.prior(deter)}

    def obs_cell(
        self,
        deter: Tensor,
        stoch: Tensor,
        keep: Tensor,
        act_pre: Tensor,
        emb_pre: Tensor,
        init_deter: Tensor,
        init_stoch: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One step of :meth:`observe` on ``[B, .]`` tensors: reset to the initial state
        where ``keep`` (``[B, 1]``, 0 at is_first) is 0, h_t = f(h_{t-1}, z_{t-1},
        a_{t-1}) from the prepared action ``act_pre``, z_t ~ q(z_t | h_t, e_t) from the
        projected embedding ``emb_pre``. Returns (h_t, z_t, post stats)."""
        deter = keep * deter + (1.0 - keep) * init_deter
        stoch = keep * stoch + (1.0 - keep) * init_stoch
        deter = self.core.step(deter, stoch, act_pre)
        post = self.posterior(deter, emb_pre)
        return deter, self.post_head.sample(post), post

    # torch.compile skips the two loops (recursive=False) instead of unrolling them: the
    # cells they call (obs_cell; img_cell, which calls the policy) are compiled once each as
    # their own graphs and called T (H) times, so neither the graphs nor the compile
    # time grow with T and H.
    @torch.compiler.disable(recursive=False)
    def _observe_scan(self, keep, act_pre, emb_pre, init, state):
        deter, stoch = _as_cell_output(*state)
        deters, stochs, posts = [], [], []
        # unbind, not [:, t]: its backward stacks the T gradients once, where T selects
        # would each scatter into a zero [B, T, .] tensor and add them up (T^2 traffic).
        steps = zip(keep.unbind(1), act_pre.unbind(1), emb_pre.unbind(1), strict=True)
        for keep_t, act_t, emb_t in steps:
            deter, stoch, post = self.obs_cell(deter, stoch, keep_t, act_t, emb_t, *init)
            deters.append(deter)
            stochs.append(stoch)
            posts.append(post)
        return torch.stack(deters, 1), torch.stack(stochs, 1), torch.stack(posts, 1)

    def imagine(
        self,
        deter: Tensor,
        stoch: Tensor,
        policy: Callable[[Tensor], Tensor],
        horizon: int,
    ) -> dict[str, Tensor]:
        """Roll the prior forward under ``policy`` for ``horizon`` steps.

        Args:
            deter: ``[N, D]`` h_0; stoch: ``[N, Z]`` z_0 (e.g. all B*T posterior states).
            policy: maps features ``[N, Z + D]`` to an action ``[N, A]`` (a sample; it
                decides itself whether gradients flow through it).
            horizon: H (15 in V1-V3).

        Returns:
            ``feat [N, H+1, Z + D]`` for s_0..s_H (stacked once; ``deter`` and
            ``stoch`` are views of it) and ``action [N, H+1, A]``: a_t ~ pi(s_t) for
            t = 0..H, where a_H is sampled at the last state but not stepped (as the
            reference does, so every head can run on all H+1 states in one call) and
            carries no gradient.
            Run under ``torch.no_grad()`` for REINFORCE (no graph through the
            dynamics); with grad for dynamics backprop.
        """
        feat, action = self._imagine_scan(deter, stoch, policy, horizon)
        z = self.stoch_dim
        return {"feat": feat, "deter": feat[..., z:], "stoch": feat[..., :z], "action": action}

    def img_cell(
        self, deter: Tensor, stoch: Tensor, policy: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step of :meth:`imagine` on ``[N, .]`` tensors: s_t = cat([z_t, h_t]),
        a_t = policy(s_t), then :meth:`img_step`. Returns (s_t, a_t, h_{t+1}, z_{t+1}).
        One call, so compiled it is one graph per step rather than three."""
        feat = features(deter, stoch)
        action = policy(feat)
        deter, stoch = self.img_step(deter, stoch, action)
        return feat, action, deter, stoch

    @torch.compiler.disable(recursive=False)
    def _imagine_scan(self, deter, stoch, policy, horizon):
        deter, stoch = _as_cell_output(deter, stoch)
        feats, actions = [], []
        for _ in range(horizon):
            feat, action, deter, stoch = self.img_cell(deter, stoch, policy)
            feats.append(feat)
            actions.append(action)
        feat = features(deter, stoch)
        feats.append(feat)
        # a_H is never stepped, so no loss differentiates it: detached (rather than drawn
        # under no_grad, which would give the compiled policy a second graph).
        actions.append(policy(feat).detach())
        return torch.stack(feats, 1), torch.stack(actions, 1)


@torch.compiler.disable  # runs as it is: the scans call it before their compiled cells
def _as_cell_output(deter: Tensor, stoch: Tensor) -> tuple[Tensor, Tensor]:
    """A scan's start state as its cells return states: contiguous, and in the graph
    when gradients are on (a part without one, such as the replay context or the
    2023 initial stoch, becomes a leaf asking for a gradient that is discarded; the
    values and the parameters' gradients are unchanged). Every step then enters the
    compiled cells with the same strides and ``requires_grad``, so each cell has one
    graph rather than one more for step 0."""
    deter, stoch = deter.contiguous(), stoch.contiguous()
    if torch.is_grad_enabled():
        if not deter.requires_grad:
            deter = deter.detach().requires_grad_()
        if not stoch.requires_grad:
            stoch = stoch.detach().requires_grad_()
    return deter, stoch
