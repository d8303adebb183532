"""Behaviour learning in imagination: actor and critic objectives of DreamerV1, V2, V3.

Each ``behavior_loss_*`` takes an *observed* replay batch (``WorldModel.observe`` has
written ``deter`` and ``stoch``), starts from all B*T posterior states, imagines H
steps with the actor, reads the heads' distributions (rewards, continues, values),
computes lambda-returns and per-step weights, and returns an ``[N]`` TensorDict
(N = B*T) holding ``loss_actor`` and ``loss_critic`` (already weighted; the steps
each version trains on differ, see each docstring) plus ``return``, ``weight`` and,
for V2/V3, ``advantage`` (V3 also ``value``). Reduce with :func:`~wmblocks.losses.total_loss`.

Imagined trajectory indices: states s_0 .. s_H (s_0 the replay posterior), actions
a_0 .. a_{H-1} with a_t taken at s_t.

World-model parameters never receive gradient from the imagination losses: the
rollout runs with them frozen (dynamics backprop still differentiates through the
dynamics to the actions) or without a graph at all (REINFORCE); critics are frozen
wherever they only provide targets, and every target is detached. The one deliberate
exception is V3-2024's :func:`replay_value_loss_v3`, whose critic the recipe evaluates
on the world model's posterior with its graph (the reference's ``repval_grad``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from einops import rearrange
from tensordict import TensorDict, TensorDictBase
from torch import Tensor, nn

from wmblocks import keys
from wmblocks.dists import Bernoulli
from wmblocks.functional.actor import (
    advantage,
    backprop_loss,
    entropy_loss,
    reinforce_loss,
    rho_mix,
)
from wmblocks.functional.returns import cumulative_discount, lambda_return
from wmblocks.nn.heads import heads_on
from wmblocks.nn.normalize import ReturnNormalizer
from wmblocks.nn.world_model import WorldModel

T = TypeVar("T")


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Within the block, the modules' parameters do not require grad, so graphs built
    there pass gradients *through* the modules (to their inputs) but not *into* them.

    With gradients disabled there is no graph to keep them out of, and nothing is
    changed: torch.compile cannot trace ``requires_grad_`` (it would give up on the
    whole frame), so the REINFORCE losses, which read the heads without a graph,
    enter it inside ``torch.set_grad_enabled(False)``."""
    if not torch.is_grad_enabled():
        yield
        return
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def frozen_call(fn: Callable[[], T], *modules: nn.Module) -> T:
    """``fn()`` inside :func:`frozen` ``(*modules)``.

    A function of its own for torch.compile: dynamo cannot trace ``requires_grad_``
    and gives up on the frame that calls it, so with gradients on (dynamics backprop)
    it gives up on this small frame only (``fn`` is still compiled, as a frame of its
    own), not on the whole loss around it; with gradients off it traces straight
    through.
    """
    with frozen(*modules):
        return fn()


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
    deter = rearrange(td[keys.DETER].detach(), "b t d -> (b t) d")
    stoch = rearrange(td[keys.STOCH].detach(), "b t z -> (b t) z")
    if backprop:
        with frozen(wm):
            # The policy sees sg(s_t), as in all three references: the return's gradient
            # reaches a_t only through the dynamics, never through pi's input.
            traj = wm.rssm.imagine(deter, stoch, lambda f: actor(f.detach()).rsample(), horizon)
    else:
        with torch.no_grad():
            traj = wm.rssm.imagine(deter, stoch, lambda f: actor(f).sample(), horizon)
    return {"feat": traj["feat"], "action": traj["action"]}


def continue_probs(cont: Bernoulli, is_terminal: Tensor) -> Tensor:
    """V3-2024 imagined continue flags: the head's probability at every state s_0..s_H
    (``cont`` over ``[N, H+1]``; ``is_terminal`` unused). ``[N, H+1]``."""
    return cont.mean


def continue_modes(cont: Bernoulli, is_terminal: Tensor) -> Tensor:
    """V3-2023 imagined continue flags: c_0 = 1 - is_terminal of the replayed start state
    (``is_terminal`` ``[N]``), c_1..c_H the Bernoulli mode 1[p > 0.5]. ``[N, H+1]``."""
    first = 1.0 - is_terminal.to(cont.logits.dtype).unsqueeze(1)
    return torch.cat([first, cont.mode[:, 1:]], 1)


def imagination_weights_v3(cont: Tensor, gamma: float) -> Tensor:
    """DreamerV3's per-state weights ``w_t = prod_{i<=t} (gamma c_i) / gamma``, ``[N, H+1]``
    from continue flags ``cont`` ``[N, H+1]`` of s_0..s_H. c_0 is included, so w_0 = c_0
    (not 1) and a terminal start state has weight 0; the losses of s_0..s_{H-1} use
    w[:, :H]. With gamma = 1 (2024) this is cumprod(c). No gradient."""
    return (gamma * cont.detach()).cumprod(1) / gamma


def _pad_last(x: Tensor) -> Tensor:
    """``[N, H]`` -> ``[N, H+1]`` with a copy of the last step: lets one critic
    distribution over s_0..s_H score targets of s_0..s_{H-1} (the extra step is sliced
    off after ``log_prob``, as the reference pads its targets)."""
    return torch.cat([x, x[:, -1:]], 1)


def imagination_loss_v3(
    *,
    action: Tensor,
    reward: Tensor,
    cont: Tensor,
    value: Tensor,
    policy,
    critic,
    slow_value: Tensor,
    normalizer: ReturnNormalizer,
    gamma: float = 1.0,
    lam: float = 0.95,
    eta: float = 3e-4,
    slowreg: float = 1.0,
    backprop: bool = False,
) -> TensorDict:
    """DreamerV3's actor and critic losses on an imagined trajectory (Hafner et al. 2023,
    eq. 7-12; the official ``imag_loss``), ``[N]`` TensorDict of ``[N, H]`` terms.

    Inputs over the H+1 states s_0..s_H (s_0 the replay posterior): ``action`` a_t ~
    pi(s_t); ``reward`` r_t and ``cont`` c_t predicted *at* s_t (r_t is the reward of
    arriving there; 2024: c_t the continue probability, which already holds the
    1 - 1/333 discount, gamma 1; 2023: flags, gamma 0.997); ``value`` v_t the critic's
    mean (a constant for REINFORCE; with its graph through the dynamics for backprop);
    ``policy`` pi(. | s_t) and ``critic`` (the trained critic's distribution), both over
    ``[N, H+1]``; ``slow_value`` the slow critic's mean.

        R_t = r_{t+1} + gamma c_{t+1} ((1 - lambda) v_{t+1} + lambda R_{t+1}),  R_H = v_H
        w_t = prod_{i<=t} gamma c_i / gamma           (:func:`imagination_weights_v3`)
        S   = normalizer.update(R)                    (max(1, EMA of P95 - P05))
        A_t = (R_t - v_t) / S                         (the offset is never subtracted)
        actor:  -w_t (log pi(a_t | s_t) sg(A_t) + eta H[pi(. | s_t)])   REINFORCE
                -w_t (A_t + eta H)                                      backprop (2023 Box)
        critic: -w_t (log p_v(sg(R_t) | s_t) + slowreg log p_v(sg(v_slow(s_t)) | s_t))

    for t = 0..H-1. Writes ``loss_actor``, ``loss_critic``, ``return``, ``advantage``,
    ``value`` ``[N, H]`` and ``weight`` ``[N, H+1]``. Checked against the official
    code's values in ``tests/golden``.
    """
    horizon = reward.shape[1] - 1
    ret = lambda_return(reward[:, 1:], value[:, 1:], gamma * cont[:, 1:], lam)
    weight = imagination_weights_v3(cont, gamma)
    scale = normalizer.update(ret)
    if backprop:
        adv = (ret - value[:, :horizon]) / scale
        actor_loss = backprop_loss(adv)
    else:
        adv = advantage(ret, value[:, :horizon], scale)
        actor_loss = reinforce_loss(policy.log_prob(action)[:, :horizon], adv)
    actor_loss = actor_loss + entropy_loss(policy.entropy()[:, :horizon], eta)
    ret_target, slow_target = _pad_last(ret.detach()), slow_value.detach()
    critic_loss = -critic.log_prob(ret_target) - slowreg * critic.log_prob(slow_target)
    w = weight[:, :horizon]
    return TensorDict(
        {
            "loss_actor": w * actor_loss,
            "loss_critic": w * critic_loss[:, :horizon],
            "return": ret.detach(),
            "advantage": adv.detach(),
            "value": value[:, :horizon].detach(),
            "weight": weight,
        },
        [ret.shape[0]],
    )


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
    """DreamerV1 (Hafner et al. 2020, eq. 6-8; the official ``_train``): dynamics
    backprop on V_lambda, ``[N]`` TensorDict of ``[N, H-1]`` terms.

    As the reference, the losses live on the imagined states s_1..s_{H-1} (the replayed
    start s_0 is not a loss step; s_H only bootstraps). With r_t = r(s_t) (the reward
    predicted at the state it arrives with) and v_t = v(s_t):
    R_t = r_t + gamma ((1 - lambda) v_{t+1} + lambda R_{t+1}), R_H = v_H, for
    t = 1..H-1 (equal to V1's explicit sum, eq. 6), weights 1, gamma, .., gamma^{H-2}.
    ``loss_actor`` = -w R_t (gradient through the frozen dynamics and critic into the
    actor); ``loss_critic`` = -w log N(sg(R_t); v(s_t), 1).

    ``eta`` > 0 adds -eta H[pi(. | s_t)] to the actor loss (V1 has none, eta 0; V2 adds
    it to its backprop actor). For a tanh-squashed policy the entropy includes the
    squashing's log-determinant, so it also penalises saturated actions.
    """
    traj = imagine(wm, actor, td, horizon, backprop=True)
    feat = traj["feat"][:, 1:]  # s_1..s_H
    reward, value = frozen_call(  # [N, H] each
        lambda: (wm.reward_head(feat).mean, critic(feat).mean), wm, critic
    )
    disc = torch.full_like(reward[:, 1:], gamma)  # [N, H-1]
    ret = lambda_return(reward[:, :-1], value[:, 1:], disc, lam)  # R_1..R_{H-1}
    weight = cumulative_discount(disc)
    actor_loss = backprop_loss(ret)
    if eta:
        entropy = actor(feat[:, :-1].detach()).entropy()
        actor_loss = actor_loss + entropy_loss(entropy, eta)
    critic_loss = -critic(feat[:, :-1].detach()).log_prob(ret.detach())
    return TensorDict(
        {
            "loss_actor": weight * actor_loss,
            "loss_critic": weight * critic_loss,
            "return": ret.detach(),
            "weight": weight,
        },
        [ret.shape[0]],
    )


def discount_v2(wm: WorldModel, feat: Tensor, td: TensorDictBase, gamma: float) -> Tensor:
    """DreamerV2's imagined discounts d_t ``[N, H+1]`` at s_0..s_H: the discount head's
    mean (it is trained on gamma (1 - is_terminal)), with d_0 = gamma (1 - is_terminal)
    of the replayed start state (reference: "override discount prediction for the first
    step"); a constant gamma when the world model has no discount head (the
    reference's DMC setting ``pred_discount: False``)."""
    if wm.cont_head is None:
        return torch.full(feat.shape[:-1], gamma, dtype=feat.dtype, device=feat.device)
    first = gamma * (1.0 - td[keys.IS_TERMINAL].flatten().to(feat.dtype))
    return torch.cat([first.unsqueeze(1), wm.cont_head(feat).mean[:, 1:]], 1)


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
    """DreamerV2 (Hafner et al. 2021, eq. 4-6; the official ``ActorCritic``), ``[N]``
    TensorDict: critic terms ``[N, H]``, actor terms ``[N, H-1]``.

    With r_t = r(s_t) (reward predicted at s_t, the reward of arriving there), discounts
    d_t (:func:`discount_v2`) and the target critic v': R_t = r_t + d_t ((1 - lambda)
    v'(s_{t+1}) + lambda R_{t+1}), R_H = v'(s_H), for t = 0..H-1; weights
    w_t = prod_{i<t} d_i. Critic on s_0..s_{H-1}: -w_t log p_v(sg(R_t) | s_t).
    Actor on s_0..s_{H-2}, as the reference aligns it: action a_t earns r(s_{t+1}), so
    its return is R_{t+1} and its advantage R_{t+1} - v'(s_t);
    rho * (-log pi(a_t | s_t) sg(R_{t+1} - v'(s_t))) + (1 - rho) * (-R_{t+1})
    - eta H[pi(. | s_t)], weighted by w_t; rho = 1 for discrete actions (REINFORCE),
    0 for continuous (dynamics backprop). In the seed's notation (A_t on the reward
    r_t of the step) this is the same objective: its r_t is our r(s_{t+1}).
    """
    backprop = rho < 1.0
    traj = imagine(wm, actor, td, horizon, backprop=backprop)
    feat = traj["feat"]
    with torch.set_grad_enabled(backprop):
        reward, disc, value = frozen_call(  # [N, H+1] each
            lambda: (
                wm.reward_head(feat).mean,
                discount_v2(wm, feat, td, gamma),
                target_critic(feat).mean,
            ),
            wm,
            target_critic,
        )
    ret = lambda_return(reward[:, :horizon], value[:, 1:], disc[:, :horizon], lam)
    weight = cumulative_discount(disc[:, :horizon])  # [N, H]
    steps = horizon - 1  # actions a_0..a_{H-2}
    dist = actor(feat[:, :steps].detach())
    adv = advantage(ret[:, 1:], value[:, :steps])
    log_prob = dist.log_prob(traj["action"][:, :steps].detach())
    reinforce = reinforce_loss(log_prob, adv)
    dynamics = backprop_loss(ret[:, 1:]) if backprop else torch.zeros_like(adv)
    actor_loss = rho_mix(reinforce, dynamics, rho) + entropy_loss(dist.entropy(), eta)
    critic_loss = -critic(feat[:, :horizon].detach()).log_prob(ret.detach())
    return TensorDict(
        {
            "loss_actor": weight[:, :steps] * actor_loss,
            "loss_critic": weight * critic_loss,
            "return": ret.detach(),
            "weight": weight,
            "advantage": adv,
        },
        [ret.shape[0]],
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
    backprop: bool = False,
    continue_flags: Callable[[Bernoulli, Tensor], Tensor] = continue_probs,
) -> TensorDict:
    """DreamerV3: imagine ``horizon`` steps from every posterior state of the observed
    batch ``td``, read the heads' distributions on s_0..s_H and apply
    :func:`imagination_loss_v3`.

    ``backprop`` False (2024, and 2023 discrete): REINFORCE, the rollout builds no graph.
    True (2023 continuous, reference ``actor_grad_cont: backprop``): the rollout keeps
    its graph through the frozen world model and critic, the actor maximises the
    normalised advantage directly. ``continue_flags``: :func:`continue_probs` (2024) or
    :func:`continue_modes` (2023). Works with any critic returning a distribution (a
    twohot or an MSE critic).
    """
    traj = imagine(wm, actor, td, horizon, backprop=backprop)
    feat = traj["feat"]  # [N, H+1, F]
    is_terminal = td[keys.IS_TERMINAL].flatten()
    # The heads on the imagined states in two groups by their gradients, each group's
    # first layers one matmul (heads_on): frozen (graph only to feat, for backprop) and
    # trained (critic and actor on sg(s_t)).
    # Dynamics backprop also needs the frozen critic's values, with their graph to feat.
    frozen = [wm.reward_head, wm.cont_head, slow_critic] + ([critic] if backprop else [])
    with torch.set_grad_enabled(backprop):
        dists = frozen_call(lambda: heads_on(feat, *frozen), wm, critic)  # [N, H+1] each
    reward, cont, slow = dists[:3]
    # One critic call serves REINFORCE's values and the loss.
    critic_dist, policy = heads_on(feat.detach(), critic, actor)
    value = dists[3].mean if backprop else critic_dist.mean.detach()
    return imagination_loss_v3(
        action=traj["action"].detach(),
        reward=reward.mean,
        cont=continue_flags(cont, is_terminal),
        value=value,
        policy=policy,
        critic=critic_dist,
        slow_value=slow.mean.detach(),
        normalizer=normalizer,
        gamma=gamma,
        lam=lam,
        eta=eta,
        slowreg=slowreg,
        backprop=backprop,
    )


def replay_value_loss_v3(
    *,
    critic,
    slow_value: Tensor,
    reward: Tensor,
    is_last: Tensor,
    is_terminal: Tensor,
    boot: Tensor,
    gamma: float = 1 - 1 / 333,
    lam: float = 0.95,
    slowreg: float = 1.0,
) -> TensorDict:
    """DreamerV3-2024's replay value loss (the official ``repl_loss``; scale 0.3 in the
    agent), ``[B]`` TensorDict of ``[B, T-1]`` terms.

    Inputs ``[B, T]`` along each replayed chunk: ``critic`` the critic's distribution at
    the replay posteriors (the recipe keeps their graph into the world model, reference
    ``repval_grad``), ``slow_value`` the slow critic's mean, ``reward`` r_t, ``is_last``,
    ``is_terminal``, ``boot`` b_t = R_0 of the imagination started at step t.

        R_t = r_{t+1} + gamma (1 - term_{t+1}) ((1 - l_t) b_{t+1} + l_t R_{t+1}),
        l_t = lambda (1 - last_{t+1}),   R_{T-1} = b_{T-1}
        loss_t = (1 - last_t) (-log p_v(sg(R_t) | s_t) - slowreg log p_v(sg(v_slow) | s_t))

    for t = 0..T-2 (a step that ends its episode has no successor in the chunk: weight
    0). Writes ``loss_repval`` and ``return``. Checked against the official values in
    ``tests/golden``.
    """
    dtype = boot.dtype
    live = gamma * (1.0 - is_terminal[:, 1:].to(dtype))
    not_last = 1.0 - is_last.to(dtype)
    boot = boot.detach()
    ret = lambda_return(
        reward[:, 1:].to(dtype), boot[:, 1:], live, lam * not_last[:, 1:], bootstrap=boot[:, -1]
    )
    loss = -critic.log_prob(_pad_last(ret)) - slowreg * critic.log_prob(slow_value.detach())
    steps = ret.shape[1]
    return TensorDict(
        {"loss_repval": not_last[:, :steps] * loss[:, :steps], "return": ret},
        [ret.shape[0]],
    )
