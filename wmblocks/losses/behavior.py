"""Behaviour learning in imagination: actor and critic objectives of DreamerV1, V2, V3.

Each ``behavior_loss_*`` takes an *observed* replay batch (``WorldModel.observe`` has
written ``deter`` and ``stoch``), starts from all B*T posterior states, imagines H
steps with the actor, predicts rewards, continues and values, computes lambda-returns
and per-step weights, and returns a ``[N, H]`` TensorDict (N = B*T) holding
``loss_actor`` and ``loss_critic`` (already weighted) plus ``return``, ``weight`` and,
for V2/V3, ``advantage`` (V3 also ``value``). Reduce with :func:`~wmblocks.losses.total_loss`.

Imagined trajectory indices: states s_0 .. s_H (s_0 the replay posterior), actions
a_0 .. a_{H-1} with a_t taken at s_t.

World-model parameters never receive gradient from these losses: the rollout runs
with them frozen (dynamics backprop still differentiates through the dynamics to the
actions) or without a graph at all (REINFORCE); critics are frozen wherever they only
provide targets, and every target is detached.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn

from wmblocks import keys
from wmblocks.dists import TwoHotSymlog
from wmblocks.functional.actor import (
    advantage,
    backprop_loss,
    entropy_loss,
    reinforce_loss,
    rho_mix,
)
from wmblocks.functional.returns import cumulative_discount, lambda_return
from wmblocks.functional.symlog import symlog
from wmblocks.functional.twohot import twohot_bins, twohot_encode
from wmblocks.nn.normalize import ReturnNormalizer
from wmblocks.nn.world_model import WorldModel


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Within the block, the modules' parameters do not require grad, so graphs built
    there pass gradients *through* the modules (to their inputs) but not *into* them."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def imagine(
    wm: WorldModel, actor: nn.Module, td: TensorDictBase, horizon: int, *, backprop: bool
) -> dict[str, Tensor]:
    """Roll out ``horizon`` steps from every posterior state of an observed batch.

    Args:
        backprop: True: actions are ``rsample``d and the graph through the (frozen)
            dynamics is kept, for dynamics backprop (V1, V2 continuous); the actor
            sees ``sg(s_t)`` (reference V1/V2 ``policy(stop_gradient(feat))``), so the
            gradient reaches a_t only through the states and rewards after it. False: no
            graph (REINFORCE; V2 discrete, V3).

    Returns:
        ``feat`` ``[N, H+1, F]`` for s_0..s_H and ``action`` ``[N, H+1, A]`` with
        a_t ~ pi(s_t) (a_H is not stepped; losses use a_0..a_{H-1}).
    """
    deter = td[keys.DETER].detach().flatten(0, 1)
    stoch = td[keys.STOCH].detach().flatten(0, 1)
    if backprop:
        with frozen(wm):
            # The policy sees sg(s_t), as in all three references: the return's gradient
            # reaches a_t only through the dynamics, never through pi's input.
            traj = wm.rssm.imagine(deter, stoch, lambda f: actor(f.detach()).rsample(), horizon)
    else:
        with torch.no_grad():
            traj = wm.rssm.imagine(deter, stoch, lambda f: actor(f).sample(), horizon)
    return {"feat": traj["feat"], "action": traj["action"]}


def imagination_weights_v3(cont: Tensor, gamma: float) -> Tensor:
    """DreamerV3's per-step weights ``w_t = prod_{i<=t} (gamma c_i) / gamma``, ``[N, H]``
    from continue probabilities ``cont`` ``[N, H+1]`` of s_0..s_H (c_0 included, so a
    terminal start state has weight 0). No gradient."""
    horizon = cont.shape[1] - 1
    return (gamma * cont[:, :horizon].detach()).cumprod(1) / gamma


def _out(**tensors: Tensor) -> TensorDict:
    n, h = tensors["loss_actor"].shape
    return TensorDict(tensors, [n, h])


def behavior_loss_v1(
    wm: WorldModel,
    actor: nn.Module,
    critic: nn.Module,
    td: TensorDictBase,
    *,
    horizon: int = 15,
    gamma: float = 0.99,
    lam: float = 0.95,
    eta: float = 0.0,
) -> TensorDict:
    """DreamerV1 (Hafner et al. 2020, eq. 6-8): dynamics backprop on V_lambda.

    With r_t = r(s_t) and v_t = v(s_t) (the paper's alignment, rewards predicted at the
    state they arrive with): R_t = r_t + gamma ((1 - lambda) v_{t+1} + lambda R_{t+1}),
    R_H = v_H, equal to the V1 explicit sum. ``loss_actor`` = -gamma^t R_t (gradient
    through the frozen dynamics and critic into the actor); ``loss_critic`` =
    gamma^t (v(s_t) - sg(R_t))^2 / 2.

    ``eta`` > 0 adds -eta H[pi(. | s_t)] to the actor loss (V1 has none, eta 0; V2 adds
    it to its backprop actor). For a tanh-squashed policy the entropy includes the
    squashing's log-determinant, so it also penalises saturated actions.
    """
    traj = imagine(wm, actor, td, horizon, backprop=True)
    feat = traj["feat"]
    with frozen(wm, critic):
        reward = wm.reward_head(feat).squeeze(-1)  # [N, H+1]
        value = critic(feat).mean
    disc = torch.full_like(reward[:, :horizon], gamma)
    ret = lambda_return(reward[:, :horizon], value[:, 1:], disc, lam)
    weight = cumulative_discount(disc)
    actor_loss = backprop_loss(ret)
    if eta:
        entropy = actor(feat[:, :horizon].detach()).entropy()
        actor_loss = actor_loss + entropy_loss(entropy, eta)
    value_pred = critic(feat.detach()).mean[:, :horizon]
    return _out(
        loss_actor=weight * actor_loss,
        loss_critic=weight * 0.5 * (value_pred - ret.detach()).square(),
        **{"return": ret.detach(), "weight": weight},
    )


def behavior_loss_v2(
    wm: WorldModel,
    actor: nn.Module,
    critic: nn.Module,
    target_critic: nn.Module,
    td: TensorDictBase,
    *,
    rho: float,
    eta: float,
    horizon: int = 15,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> TensorDict:
    """DreamerV2 (Hafner et al. 2021, eq. 4-6).

    gamma_t = gamma c(s_t) from the discount head; R_t = r(s_t) + gamma_t ((1 - lambda)
    v'(s_{t+1}) + lambda R_{t+1}), R_H = v'(s_H), v' the target critic. Actor:
    rho * (-log pi(a_t | s_t) sg(R_t - v'(s_t))) + (1 - rho) * (-R_t) - eta H[pi],
    rho = 1 for discrete actions (REINFORCE), 0 for continuous (dynamics backprop).
    Critic: (v(s_t) - sg(R_t))^2 / 2. Weights w_t = prod_{i<t} gamma_i.
    """
    backprop = rho < 1.0
    traj = imagine(wm, actor, td, horizon, backprop=backprop)
    feat = traj["feat"]
    with frozen(wm, target_critic), torch.set_grad_enabled(backprop):
        reward = wm.reward_head(feat).squeeze(-1)
        disc = gamma * torch.sigmoid(wm.cont_head(feat).squeeze(-1))
        value = target_critic(feat).mean
    ret = lambda_return(reward[:, :horizon], value[:, 1:], disc[:, :horizon], lam)
    weight = cumulative_discount(disc[:, :horizon])
    dist = actor(feat.detach())
    adv = advantage(ret, value[:, :horizon])
    log_prob = dist.log_prob(traj["action"].detach())[:, :horizon]
    reinforce = reinforce_loss(log_prob, adv)
    dynamics = backprop_loss(ret) if backprop else torch.zeros_like(ret)
    entropy = dist.entropy()[:, :horizon]
    actor_loss = rho_mix(reinforce, dynamics, rho) + entropy_loss(entropy, eta)
    value_pred = critic(feat.detach()).mean[:, :horizon]
    return _out(
        loss_actor=weight * actor_loss,
        loss_critic=weight * 0.5 * (value_pred - ret.detach()).square(),
        **{"return": ret.detach(), "weight": weight, "advantage": adv},
    )


def behavior_loss_v3(
    wm: WorldModel,
    actor: nn.Module,
    critic: nn.Module,
    slow_critic: nn.Module,
    normalizer: ReturnNormalizer,
    td: TensorDictBase,
    *,
    horizon: int = 15,
    gamma: float = 1.0,
    lam: float = 0.95,
    eta: float = 3e-4,
    slowreg: float = 1.0,
) -> TensorDict:
    """DreamerV3 (Hafner et al. 2023, eq. 7-12), REINFORCE for every action space.

    r_t, c_t: reward (TwoHotSymlog mean) and continue probability at s_t; v_t the
    critic's mean. R_t = r_{t+1} + gamma c_{t+1} ((1 - lambda) v_{t+1} + lambda
    R_{t+1}), R_H = v_H. ``gamma`` is 1 for the 2024 revision, whose continue head
    already predicts the discount (target (1 - terminal)(1 - 1/333)), and 0.997 for 2023.
    Advantage (R_t - v_t) / max(1, S) with S the percentile range (``normalizer`` is
    updated here, once per call). Actor: -w_t (log pi(a_t | s_t) sg(A_t) + eta H).
    Critic: w_t (-log p_v(sg(R_t) | s_t) - slowreg log p_v(sg(v_slow(s_t)) | s_t)),
    the slow critic's mean as a second twohot target (``critic`` must be a
    :class:`~wmblocks.nn.critics.TwoHotCritic`). Weights :func:`imagination_weights_v3`.
    """
    traj = imagine(wm, actor, td, horizon, backprop=False)
    feat = traj["feat"]  # [N, H+1, F], no graph
    critic_logits = critic.mlp(feat)  # one call serves targets and loss
    with torch.no_grad():
        reward = TwoHotSymlog(wm.reward_head(feat)).mean  # [N, H+1]
        cont = torch.sigmoid(wm.cont_head(feat).squeeze(-1))
        value = TwoHotSymlog(critic_logits.detach()).mean
        slow = slow_critic(feat).mean[:, :horizon]
        ret = lambda_return(reward[:, 1:], value[:, 1:], gamma * cont[:, 1:], lam)
        weight = imagination_weights_v3(cont, gamma)
        adv = advantage(ret, value[:, :horizon], normalizer.update(ret))
    dist = actor(feat)
    log_prob = dist.log_prob(traj["action"])[:, :horizon]
    actor_loss = reinforce_loss(log_prob, adv) + entropy_loss(dist.entropy()[:, :horizon], eta)
    # Both twohot targets against one log-softmax: CE is linear in the target weights.
    bins = twohot_bins(critic_logits.shape[-1], dtype=feat.dtype, device=feat.device)
    target = twohot_encode(symlog(ret), bins) + slowreg * twohot_encode(symlog(slow), bins)
    critic_loss = -(target * critic_logits[:, :horizon].log_softmax(-1)).sum(-1)
    return _out(
        loss_actor=weight * actor_loss,
        loss_critic=weight * critic_loss,
        **{"return": ret, "weight": weight, "advantage": adv, "value": value[:, :horizon]},
    )


def replay_value_loss_v3(
    critic: nn.Module,
    slow_critic: nn.Module,
    td: TensorDictBase,
    imagined_return: Tensor,
    *,
    gamma: float = 1 - 1 / 333,
    lam: float = 0.95,
    slowreg: float = 1.0,
) -> TensorDict:
    """DreamerV3-2024's replay value loss (scale 0.3 in the reference), ``[B, T-1]``.

    Along each replay sequence: R_t = r_{t+1} + gamma (1 - term_{t+1}) ((1 - l_t) b_{t+1}
    + l_t R_{t+1}), R_{T-1} = b_{T-1}, with b_t = ``imagined_return`` ``[B, T]`` (R_0 of
    the imagination started at replay step t) and l_t = lambda, cut to 0 when step t+1
    is the last of its episode. Steps t whose successor starts a new episode get weight
    0. Loss: -log p_v(sg(R_t) | s_t) - slowreg log p_v(sg(v_slow(s_t)) | s_t), written
    as ``loss_repval``.
    """
    feat = torch.cat([td[keys.STOCH], td[keys.DETER]], -1).detach()[:, :-1]
    first = td[keys.IS_FIRST].to(feat.dtype)
    term = td[keys.IS_TERMINAL].to(feat.dtype)
    boot = imagined_return.detach()
    last = torch.cat([first[:, 1:], torch.ones_like(first[:, :1])], 1)  # step t ends its episode
    same_episode = 1.0 - first[:, 1:]  # t and t+1 belong together
    ret = lambda_return(
        td[keys.REWARD].to(feat.dtype)[:, 1:],
        boot[:, 1:],
        gamma * (1.0 - term[:, 1:]) * same_episode,
        lam * (1.0 - last[:, 1:]),
        bootstrap=boot[:, -1],
    )
    value_dist = critic(feat)
    with torch.no_grad():
        slow = slow_critic(feat).mean
    loss = -value_dist.log_prob(ret.detach()) - slowreg * value_dist.log_prob(slow)
    return TensorDict({"loss_repval": same_episode * loss, "return": ret}, list(loss.shape))
