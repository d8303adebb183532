"""The seed's formulas, each against a slow loop written from the paper.

Every test recomputes a library quantity element by element from the paper's equation
(Python floats where the formula is a plain sum) and compares. Model-based tests draw
fewer examples (``MODEL``): one example runs a tiny world model forward a few times.

Papers: DreamerV1 = Hafner et al. 2020, "Dream to Control" (ICLR); DreamerV2 = Hafner
et al. 2021, "Mastering Atari with Discrete World Models" (ICLR); DreamerV3 = Hafner
et al. 2023, "Mastering Diverse Domains through World Models" (and the 2024 code).
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensordict import TensorDict

from tests.helpers import random_batch, tiny_world_model
from tests.strategies import floats
from wmblocks import keys, presets
from wmblocks.dists import MSE, OneHotStraightThrough, TwoHotSymlog
from wmblocks.functional import (
    lambda_return_v1,
    state_nce,
    symexp,
    symexp_twohot_bins,
    twohot_encode,
    twohot_neighbours,
)
from wmblocks.losses import (
    CONT_TARGET_2024,
    V1_SCALES,
    V3_2023_SCALES,
    V3_2024_SCALES,
    behavior_loss_v1,
    behavior_loss_v2,
    discount_v2,
    imagination_loss_v3,
    imagine,
    total_loss,
    world_model_loss_v1,
    world_model_loss_v1_nce,
    world_model_loss_v2,
    world_model_loss_v3,
)
from wmblocks.nn import ReturnNormalizer
from wmblocks.nn.actors import DiscreteActor, TanhNormalActor, TruncNormalActor
from wmblocks.nn.critics import MSECritic, SlowCritic
from wmblocks.nn.latents import GaussianLatentHead

SHAPES = {"observation": (4,)}
A = 2
LOG_2PI = math.log(2.0 * math.pi)
MODEL = settings(max_examples=8)  # a tiny world model per example: keep the file fast
SEEDS = st.integers(0, 2**31 - 1)


def _assert_close(actual, expected, rtol=1e-5, atol=1e-5):
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=torch.float64),
        torch.as_tensor(expected, dtype=torch.float64),
        rtol=rtol,
        atol=atol,
    )


def _normal_log_pdf(x: float, mean: float, std: float = 1.0) -> float:
    """ln of the density (2 pi std^2)^(-1/2) exp(-(x - mean)^2 / (2 std^2))."""
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * LOG_2PI


def _normal_kl(mq: float, sq: float, mp: float, sp: float) -> float:
    """KL(N(mq, sq^2) || N(mp, sp^2)) of one dimension, closed form."""
    return math.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def _batch(seed: int, B: int, T: int, p_terminal: float = 0.0) -> TensorDict:
    td = random_batch(SHAPES, A, B=B, T=T, seed=seed)
    if p_terminal:
        g = torch.Generator().manual_seed(seed + 1)
        td[keys.IS_TERMINAL] = torch.rand(B, T, generator=g) < p_terminal
    return td


def _randn(seed: int, *shape: int, scale: float = 1.0, dtype=torch.float64):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# 1. V1 Gaussian latents ---------------------------------------------------------------


@given(SEEDS, st.sampled_from([0.1, 1.0, 10.0, 60.0]), st.integers(1, 4))
def test_v1_gaussian_latent_std_reparameterisation_and_kl(seed, scale, stoch):
    """DreamerV1 §3 / App. A (official ``RSSM``): the transition and posterior are
    N(mean, diag std^2) with std = softplus(raw) + min_std (min_std 0.1) and a free mean;
    samples are mean + std * eps (reparameterised); the KL of eq. 10 is the closed form
    sum_i [ln(sp_i / sq_i) + (sq_i^2 + (mq_i - mp_i)^2) / (2 sp_i^2) - 1/2]."""
    head = GaussianLatentHead(2 * stoch, stoch, min_std=0.1).double()
    with torch.no_grad():  # the head's output is then exactly the drawn linear output
        head.linear.weight.copy_(torch.eye(2 * stoch, dtype=torch.float64))
        head.linear.bias.zero_()
    raw = _randn(seed, 2, 3, 2 * stoch, scale=scale).requires_grad_(True)  # post, prior
    stats = head(raw)  # [2, 3, 2, stoch]
    assert stats.shape == (2, 3, 2, stoch)
    mean, std = stats.unbind(-2)
    for idx in torch.cartesian_prod(torch.arange(2), torch.arange(3), torch.arange(stoch)):
        i, n, k = idx.tolist()
        m_raw, s_raw = raw[i, n, k].item(), raw[i, n, stoch + k].item()
        assert mean[i, n, k].item() == m_raw  # unconstrained: the linear output itself
        softplus = max(s_raw, 0.0) + math.log1p(math.exp(-abs(s_raw)))  # ln(1 + e^s)
        _assert_close(std[i, n, k].item(), softplus + 0.1, rtol=1e-9, atol=1e-12)
    assert bool((std >= 0.1).all())

    # Reparameterised sample: z = mean + std * eps, with d z / d raw_mean = 1 and
    # d z / d raw_std = eps * sigmoid(raw_std).
    torch.manual_seed(seed)
    z = head.sample(stats)
    torch.manual_seed(seed)
    eps = torch.randn(std.shape, dtype=std.dtype)
    _assert_close(z, mean + std * eps, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(z.sum(), raw)
    _assert_close(grad[..., :stoch], torch.ones_like(eps), rtol=1e-12, atol=1e-12)
    _assert_close(
        grad[..., stoch:], eps * raw[..., stoch:].detach().sigmoid(), rtol=1e-8, atol=1e-12
    )

    post, prior = stats.detach()
    kl = head.kl(post, prior)
    assert kl.shape == (3,)
    for n in range(3):
        (mq, sq), (mp, sp) = post[n].tolist(), prior[n].tolist()
        slow = math.fsum(_normal_kl(mq[k], sq[k], mp[k], sp[k]) for k in range(stoch))
        _assert_close(kl[n].item(), slow, rtol=1e-9, atol=1e-9)
    normal = torch.distributions.Normal
    reference = torch.distributions.kl_divergence(
        normal(*post.unbind(-2)), normal(*prior.unbind(-2))
    )
    _assert_close(kl, reference.sum(-1), rtol=1e-9, atol=1e-9)
    assert torch.equal(head.kl(post, post), torch.zeros(3, dtype=torch.float64))


# 2. V1 J_REC ----------------------------------------------------------------------------


@pytest.mark.parametrize("clipped", [False, True])
@settings(max_examples=5)
@given(SEEDS, st.floats(0.0, 0.9))
def test_v1_world_model_loss_is_minus_j_rec(clipped, seed, u):
    """DreamerV1 eq. 10: J_REC = E[sum_t ln p(o_t | s_t) + ln p(r_t | s_t)
    - beta KL(q(s_t | s_{t-1}, a_{t-1}, o_t) || p(s_t | s_{t-1}, a_{t-1}))], unit-variance
    Gaussian likelihoods, beta = 1, averaged over B and T as the code reduces, with free
    nats on the batch-mean KL as the official code: max(free, mean KL). The threshold is
    drawn above or below the batch's own mean KL (``clipped``)."""
    B, T = 2, 3
    torch.manual_seed(seed)
    wm = tiny_world_model("v1", SHAPES, A)
    torch.manual_seed(seed)
    mean_kl = world_model_loss_v1(wm, _batch(seed, B, T), free=0.0)[keys.loss_key("kl")].mean()
    free = (1.1 + 2.0 * u if clipped else u) * mean_kl.item()  # above / below the mean KL
    torch.manual_seed(seed)  # the same posterior samples as the first call
    td = world_model_loss_v1(wm, _batch(seed, B, T), free=free)
    with torch.no_grad():
        feat = wm.features(td)
        obs_pred = wm.decoder(feat)["observation"].mean  # [B, T, K]
        reward_pred = wm.reward_head(feat).mean  # [B, T]
    post, prior = td[keys.POST].detach(), td[keys.PRIOR].detach()  # [B, T, 2, Z]
    obs, reward = td["observation"], td[keys.REWARD]
    log_obs, log_reward, kls = {}, {}, {}
    for b in range(B):
        for t in range(T):
            log_obs[b, t] = math.fsum(
                _normal_log_pdf(obs[b, t, k].item(), obs_pred[b, t, k].item())
                for k in range(obs.shape[-1])
            )
            log_reward[b, t] = _normal_log_pdf(reward[b, t].item(), reward_pred[b, t].item())
            kls[b, t] = math.fsum(
                _normal_kl(
                    post[b, t, 0, i].item(),
                    post[b, t, 1, i].item(),
                    prior[b, t, 0, i].item(),
                    prior[b, t, 1, i].item(),
                )
                for i in range(post.shape[-1])
            )
            _assert_close(td[keys.loss_key("obs")][b, t].item(), -log_obs[b, t])
            _assert_close(td[keys.loss_key("reward")][b, t].item(), -log_reward[b, t])
    batch_kl = math.fsum(kls.values()) / (B * T)
    beta = 1.0
    j_rec = math.fsum(log_obs[i] + log_reward[i] for i in log_obs) / (B * T) - beta * max(
        free, batch_kl
    )
    total, _ = total_loss(td, V1_SCALES)
    _assert_close(total.item(), -j_rec)
    loss_kl = td[keys.loss_key("kl")]
    assert (batch_kl < free) == clipped
    if not clipped:  # the KL itself, per step
        _assert_close(loss_kl, torch.tensor([[kls[b, t] for t in range(T)] for b in range(B)]))
    else:  # the constant free everywhere, no gradient
        assert bool((loss_kl == free).all())
        grads = torch.autograd.grad(loss_kl.sum(), [*wm.parameters()], allow_unused=True)
        assert all(g is None or not g.any() for g in grads)


# 3. V1 J_S (NCE) -------------------------------------------------------------------------


@given(SEEDS, st.integers(1, 6), st.integers(1, 3), st.booleans())
def test_state_nce_is_the_log_ratio_of_matched_to_summed_state_model(seed, n, dim, ignore_o):
    """DreamerV1 eq. 12 (contrastive estimation, App. "NCE"): J_S = ln q(s_t | o_t)
    - ln sum_{o'} q(s_t | o'), the sum over all observations of the batch, the matched one
    included. Hence J_S <= 0 (one term of a sum of positives is at most the sum),
    J_S = ln 1 - ln 1 = 0 for a batch of one, and J_S = -ln N when q ignores o."""
    z = _randn(seed, n, dim, scale=2.0)
    mean = _randn(seed + 1, n, dim, scale=2.0)
    std = 0.1 + _randn(seed + 2, n, dim).abs()
    if ignore_o:
        mean, std = mean[:1].expand(n, dim), std[:1].expand(n, dim)
    j = state_nce(z, mean, std)
    assert j.shape == (n,)

    def log_q(i, j_):  # ln q(z_i | o_j) = sum_k ln N(z_ik; m_jk, s_jk)
        return math.fsum(
            _normal_log_pdf(z[i, k].item(), mean[j_, k].item(), std[j_, k].item())
            for k in range(dim)
        )

    for i in range(n):
        slow = log_q(i, i) - _logsumexp([log_q(i, o) for o in range(n)])
        _assert_close(j[i].item(), slow, rtol=1e-9, atol=1e-9)
    assert bool((j <= 1e-12).all())
    if n == 1:
        assert abs(j.item()) <= 1e-12
    if ignore_o:
        _assert_close(j, torch.full((n,), -math.log(n), dtype=torch.float64), rtol=1e-9, atol=1e-9)


@settings(max_examples=5)
@given(SEEDS)
def test_v1_nce_world_model_loss_contrasts_all_batch_observations(seed):
    """DreamerV1 eq. 12 as the loss assembles it: loss_state[b, t] = -J_S with the sum
    over all B*T observations of the batch and q(s | o) the state model on the embedding."""
    B, T = 2, 2
    torch.manual_seed(seed)
    wm = tiny_world_model("v1", SHAPES, A)
    state_model = presets.state_model_v1(wm.encoder.out_dim, stoch=8, units=16)
    td = world_model_loss_v1_nce(wm, state_model, _batch(seed, B, T))
    with torch.no_grad():
        stats = state_model(td[keys.EMBED])  # [B, T, 2, Z]
    z = td[keys.STOCH].detach()
    cells = [(b, t) for b in range(B) for t in range(T)]

    def log_q(i, o):
        (b, t), (b2, t2) = cells[i], cells[o]
        return math.fsum(
            _normal_log_pdf(
                z[b, t, k].item(), stats[b2, t2, 0, k].item(), stats[b2, t2, 1, k].item()
            )
            for k in range(z.shape[-1])
        )

    for i, (b, t) in enumerate(cells):
        j_s = log_q(i, i) - _logsumexp([log_q(i, o) for o in range(len(cells))])
        _assert_close(td[keys.loss_key("state")][b, t].item(), -j_s, rtol=1e-4, atol=1e-4)


# 4. V1 critic -------------------------------------------------------------------------


def _v1_agent(seed):
    torch.manual_seed(seed)
    wm = tiny_world_model("v1", SHAPES, A)
    feat = wm.rssm.feat_dim
    actor = TanhNormalActor(feat, A, units=16, layers=1)
    critic = MSECritic(feat, units=16, layers=1)
    return wm, actor, critic


@MODEL
@given(SEEDS, st.integers(2, 5), st.floats(0.5, 1.0), st.floats(0.0, 1.0))
def test_v1_critic_loss_regresses_the_explicit_lambda_return(seed, horizon, gamma, lam):
    """DreamerV1 eq. 6 and 8: the critic minimises 1/2 ||v(s_tau) - sg(V_lambda(s_tau))||^2,
    here as the unit-Gaussian NLL 1/2 (v - sg(R))^2 + 1/2 ln 2 pi, weighted gamma^t for
    the H - 1 loss steps s_1..s_{H-1} (t = 0 at s_1, as the reference), and R is the
    paper's explicit sum V_lambda (eq. 6) over rewards r(s_tau) and values v(s_tau)."""
    wm, actor, critic = _v1_agent(seed)
    td = wm.observe(_batch(seed, 2, 2)).apply(lambda x: x.detach())
    torch.manual_seed(seed)
    out = behavior_loss_v1(wm, actor, critic, td, horizon=horizon, gamma=gamma, lam=lam)
    torch.manual_seed(seed)  # the same imagined trajectory
    with torch.no_grad():
        feat = imagine(wm, actor, td, horizon, backprop=True)["feat"]  # s_0..s_H
        reward = wm.reward_head(feat).mean  # r(s_tau)
        value = critic(feat).mean  # v(s_tau)
    # V_lambda(s_tau) for tau = 1..H-1 with the trajectory ending at s_H.
    ret = lambda_return_v1(reward[:, 1:horizon], value[:, 2:], gamma, lam)
    _assert_close(out["return"], ret)
    n_traj = feat.shape[0]
    assert out["loss_critic"].shape == (n_traj, horizon - 1)
    for n in range(n_traj):
        for t in range(horizon - 1):
            v, r = value[n, t + 1].item(), ret[n, t].item()
            slow = gamma**t * (0.5 * (v - r) ** 2 + 0.5 * LOG_2PI)
            _assert_close(out["loss_critic"][n, t].item(), slow)


# 5. V2 discount ------------------------------------------------------------------------


def _bce(y: float, logit: float) -> float:
    """-[y ln p + (1 - y) ln(1 - p)] with p = sigmoid(logit)."""
    log_p = -math.log1p(math.exp(-logit)) if logit > 0 else logit - math.log1p(math.exp(logit))
    log_not_p = log_p - logit  # ln(1 - p) = ln p - logit
    return -(y * log_p + (1.0 - y) * log_not_p)


@MODEL
@given(SEEDS, st.sampled_from([None, 0.99, 0.95, 0.999]), st.floats(0.0, 1.0))
def test_v2_discount_target_is_gamma_times_not_terminal(seed, gamma, p_terminal):
    """DreamerV2 §2.1 "Discount predictor" and the official code: the discount head is a
    Bernoulli trained on gamma (1 - is_terminal) (gamma 0.99 by default), loss
    -[y ln p + (1 - y) ln(1 - p)]; imagination overrides the first discount with the true
    gamma (1 - is_terminal) of the replayed start state (``discount_v2``)."""
    B, T = 2, 3
    torch.manual_seed(seed)
    wm = tiny_world_model("v2", SHAPES, A)
    td = _batch(seed, B, T, p_terminal)
    kwargs = {} if gamma is None else {"gamma": gamma}
    td = world_model_loss_v2(wm, td, **kwargs)
    gamma = 0.99 if gamma is None else gamma
    with torch.no_grad():
        logits = wm.cont_head(wm.features(td)).logits  # [B, T]
    term = td[keys.IS_TERMINAL]
    for b in range(B):
        for t in range(T):
            y = gamma * (1.0 - float(term[b, t]))
            slow = _bce(y, logits[b, t].item())
            _assert_close(td[keys.loss_key("discount")][b, t].item(), slow)

    feat = _randn(seed, B * T, 4, wm.rssm.feat_dim, dtype=torch.float32)  # s_0..s_3
    with torch.no_grad():
        disc = discount_v2(wm, feat, td, gamma)
        probs = wm.cont_head(feat).logits.sigmoid()
    assert disc.shape == (B * T, 4)
    for n in range(B * T):
        first = torch.tensor(gamma * (1.0 - float(term.flatten()[n])), dtype=disc.dtype)
        assert disc[n, 0].item() == first.item()
    _assert_close(disc[:, 1:], probs[:, 1:], rtol=1e-6, atol=1e-7)


# 6. V2 actor ---------------------------------------------------------------------------


def _v2_agent(seed, discrete):
    torch.manual_seed(seed)
    wm = tiny_world_model("v2", SHAPES, A)
    feat = wm.rssm.feat_dim
    small = dict(units=16, layers=1)
    actor = (
        DiscreteActor(feat, A, norm="none", act="elu", unimix=0.0, out_scale=1.0, **small)
        if discrete
        else TruncNormalActor(feat, A, **small)
    )
    critic = MSECritic(feat, dist=MSE, **small)
    target = SlowCritic(critic, 1.0, 100)
    with torch.no_grad():  # let the target critic v' differ from the trained critic
        for p in critic.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return wm, actor, critic, target


@pytest.mark.parametrize("rho", [0.0, 1.0, 0.3])
@pytest.mark.parametrize("discrete", [True, False])
@settings(max_examples=2)
@given(SEEDS, st.floats(0.0, 0.1), st.integers(2, 4), st.floats(0.0, 1.0))
def test_v2_actor_objective_as_assembled(rho, discrete, seed, eta, horizon, lam):
    """DreamerV2 eq. 4-6 with the official code's alignment: over an imagined s_0..s_H
    with rewards r(s_t), discounts d_t (d_0 = gamma (1 - is_terminal)) and the target
    critic v', R_t = r(s_t) + d_t ((1 - lambda) v'(s_{t+1}) + lambda R_{t+1}), R_H = v'(s_H),
    w_t = prod_{i<t} d_i, and for t = 0..H-2 (action a_t earns r(s_{t+1})):
    loss_actor_t = w_t [rho (-ln pi(a_t | s_t) sg(R_{t+1} - v'(s_t))) + (1 - rho) (-R_{t+1})
    - eta H[pi(. | s_t)]]; the critic term is w_t (v(s_t) - sg(R_t))^2 (``mse``) for
    t = 0..H-1. Values and actor gradients both match the slow assembly."""
    wm, actor, critic, target = _v2_agent(seed, discrete)
    gamma = 0.99
    td = wm.observe(_batch(seed, 2, 2, p_terminal=0.4)).apply(lambda x: x.detach())
    kwargs = dict(rho=rho, eta=eta, horizon=horizon, gamma=gamma, lam=lam)
    torch.manual_seed(seed)
    out = behavior_loss_v2(wm, actor, critic, target, td, **kwargs)

    torch.manual_seed(seed)  # the same imagined trajectory, with its graph if rho < 1
    traj = imagine(wm, actor, td, horizon, backprop=rho < 1.0)
    feat, action = traj["feat"], traj["action"]
    reward = wm.reward_head(feat).mean  # [N, H+1]
    term = td[keys.IS_TERMINAL].flatten().float()
    disc = [gamma * (1.0 - term)] + [
        wm.cont_head(feat[:, t]).logits.sigmoid() for t in range(1, horizon + 1)
    ]
    v_slow = target(feat).mean
    rets = [None] * (horizon + 1)
    rets[horizon] = v_slow[:, horizon]
    for t in reversed(range(horizon)):
        rets[t] = reward[:, t] + disc[t] * ((1 - lam) * v_slow[:, t + 1] + lam * rets[t + 1])
    weights = [torch.ones_like(term)]
    for t in range(1, horizon):
        weights.append(weights[-1] * disc[t - 1].detach())
    actor_terms = []
    for t in range(horizon - 1):
        state = feat[:, t].detach()
        a_t = action[:, t].detach()
        if discrete:
            log_pi = actor.mlp(state).log_softmax(-1)
            log_prob = (a_t * log_pi).sum(-1)
            entropy = -(log_pi.exp() * log_pi).sum(-1)
        else:
            dist = actor(state)
            log_prob, entropy = dist.log_prob(a_t), dist.entropy()
        adv = (rets[t + 1] - v_slow[:, t]).detach()
        objective = rho * (-log_prob * adv) + (1 - rho) * (-rets[t + 1]) - eta * entropy
        actor_terms.append(weights[t] * objective)
    slow_actor = torch.stack(actor_terms, 1)
    _assert_close(out["loss_actor"], slow_actor.detach())
    ret = torch.stack(rets[:horizon], 1).detach()
    _assert_close(out["return"], ret)
    with torch.no_grad():
        v = critic(feat[:, :horizon]).mean
    _assert_close(out["loss_critic"], torch.stack(weights, 1) * (v - ret) ** 2)

    params = [*actor.parameters()]
    fast = torch.autograd.grad(out["loss_actor"].sum(), params, allow_unused=True)
    slow = torch.autograd.grad(slow_actor.sum(), params, allow_unused=True)
    for f, s in zip(fast, slow, strict=True):
        _assert_close(
            torch.zeros(()) if f is None else f,
            torch.zeros(()) if s is None else s,
            rtol=1e-4,
            atol=1e-5,
        )


# 7. V3 L(phi) --------------------------------------------------------------------------


@pytest.mark.parametrize("revision", [2023, 2024])
@settings(max_examples=5)
@given(SEEDS, st.floats(0.5, 4.0), st.floats(0.0, 0.5))
def test_v3_world_model_loss_is_the_beta_weighted_sum(revision, seed, spread, p_terminal):
    """DreamerV3 eq. 5: L(phi) = beta_pred L_pred + beta_dyn L_dyn + beta_rep L_rep with
    L_pred the summed prediction losses, L_dyn = max(1, KL(sg(q) || p)),
    L_rep = max(1, KL(q || sg(p))), the KL summed over all latent groups of a step
    *before* the free-bits clip, on the 1%-unimixed categoricals; beta_pred 1, beta_rep
    0.1, beta_dyn 0.5 (2023) or 1 (2024 code). The latent heads' weights are scaled by
    ``spread`` so the per-step KL falls on both sides of 1."""
    B, T = 2, 3
    torch.manual_seed(seed)
    wm = tiny_world_model(f"v3-{revision}", SHAPES, A)
    with torch.no_grad():
        wm.rssm.post_head.linear.weight.mul_(spread)
        wm.rssm.prior_head.linear.weight.mul_(spread)
    cont_target = CONT_TARGET_2024 if revision == 2024 else 1.0
    td = world_model_loss_v3(wm, _batch(seed, B, T, p_terminal), cont_target=cont_target)
    post, prior = td[keys.POST].detach().double(), td[keys.PRIOR].detach().double()
    unimix, groups, classes = 0.01, post.shape[-2], post.shape[-1]
    q_all = (1 - unimix) * post.softmax(-1) + unimix / classes
    p_all = (1 - unimix) * prior.softmax(-1) + unimix / classes
    with torch.no_grad():
        cont_logits = wm.cont_head(wm.features(td)).logits
    kl_step = {}
    for b in range(B):
        for t in range(T):
            per_group = [
                math.fsum(
                    q * (math.log(q) - math.log(p))
                    for q, p in zip(q_all[b, t, s].tolist(), p_all[b, t, s].tolist(), strict=True)
                )
                for s in range(groups)
            ]
            kl_step[b, t] = math.fsum(per_group)
            clipped = max(1.0, kl_step[b, t])
            _assert_close(td[keys.loss_key("dyn")][b, t].item(), clipped)
            _assert_close(td[keys.loss_key("rep")][b, t].item(), clipped)
            y = cont_target * (1.0 - float(td[keys.IS_TERMINAL][b, t]))
            _assert_close(td[keys.loss_key("cont")][b, t].item(), _bce(y, cont_logits[b, t].item()))

    def mean(name):
        return td[keys.loss_key(name)].detach().double().mean().item()

    pred = mean("obs") + mean("reward") + mean("cont")
    dyn = math.fsum(max(1.0, k) for k in kl_step.values()) / (B * T)
    beta_dyn = 1.0 if revision == 2024 else 0.5
    expected = 1.0 * pred + beta_dyn * dyn + 0.1 * dyn
    scales = V3_2024_SCALES if revision == 2024 else V3_2023_SCALES
    total, _ = total_loss(td, scales)
    _assert_close(total.item(), expected)


# 8. V3 critic with the slow-critic regulariser ------------------------------------------


BINS = symexp_twohot_bins(dtype=torch.float64)
BIN_LIST = BINS.tolist()


def _twohot_log_prob(log_probs: list[float], y: float) -> float:
    """sum_i twohot(y)_i ln p_i over BINS (DreamerV3 eq. 9-10): k = #{i : b_i <= y} - 1
    (at most K - 2), w_k = (b_{k+1} - y) / (b_{k+1} - b_k), w_{k+1} = 1 - w_k."""
    y = min(max(y, BIN_LIST[0]), BIN_LIST[-1])
    k = min(sum(1 for b in BIN_LIST if b <= y) - 1, len(BIN_LIST) - 2)
    lo, hi = BIN_LIST[k], BIN_LIST[k + 1]
    w_hi = (y - lo) / (hi - lo)
    return (1.0 - w_hi) * log_probs[k] + w_hi * log_probs[k + 1]


@given(SEEDS, st.integers(1, 4), st.sampled_from([1.0, 0.997]), st.floats(0.0, 2.0))
def test_v3_critic_loss_with_slow_regulariser(seed, horizon, gamma, slowreg):
    """DreamerV3 eq. 10 plus the official ``slowreg``: for t = 0..H-1,
    loss_critic_t = w_t (-ln p_v(R_t | s_t) - slowreg ln p_v(v_slow(s_t) | s_t)) with
    ln p_v the twohot log-likelihood, R_t = r_{t+1} + gamma c_{t+1} ((1 - lambda) v_{t+1}
    + lambda R_{t+1}), R_H = v_H, and w_t = prod_{i<=t} gamma c_i / gamma. The loss is
    linear in slowreg and is the twohot NLL of the return alone at slowreg 0."""
    N, K, lam = 3, BINS.shape[0], 0.95
    critic_logits = _randn(seed, N, horizon + 1, K, scale=2.0)
    reward = symexp(_randn(seed + 1, N, horizon + 1, scale=3.0))
    value = symexp(_randn(seed + 2, N, horizon + 1, scale=3.0))
    slow_value = symexp(_randn(seed + 3, N, horizon + 1, scale=3.0))
    cont = _randn(seed + 4, N, horizon + 1, scale=2.0).sigmoid()
    policy = OneHotStraightThrough(_randn(seed + 5, N, horizon + 1, A), unimix=0.0)
    action = policy.sample()

    def critic_loss(reg):
        return imagination_loss_v3(
            action=action,
            reward=reward,
            cont=cont,
            value=value,
            policy=policy,
            critic=TwoHotSymlog(critic_logits, BINS),
            slow_value=slow_value,
            normalizer=ReturnNormalizer(),
            gamma=gamma,
            lam=lam,
            slowreg=reg,
        )["loss_critic"]

    loss = critic_loss(slowreg)
    assert loss.shape == (N, horizon)
    log_probs = critic_logits.log_softmax(-1)
    nll_return = torch.zeros(N, horizon, dtype=torch.float64)
    for n in range(N):
        ret = value[n, horizon].item()
        weight = 1.0
        rets = {}
        for t in reversed(range(horizon)):
            c, v = cont[n, t + 1].item(), value[n, t + 1].item()
            ret = reward[n, t + 1].item() + gamma * c * ((1 - lam) * v + lam * ret)
            rets[t] = ret
        for t in range(horizon):
            weight = weight * gamma * cont[n, t].item() / (gamma if t == 0 else 1.0)
            lp = log_probs[n, t].tolist()
            nll = -_twohot_log_prob(lp, rets[t])
            nll_return[n, t] = weight * nll
            slow = weight * (nll - slowreg * _twohot_log_prob(lp, slow_value[n, t].item()))
            _assert_close(loss[n, t].item(), slow, rtol=1e-7, atol=1e-7)
    zero, one = critic_loss(0.0), critic_loss(1.0)
    _assert_close(zero, nll_return, rtol=1e-7, atol=1e-7)
    _assert_close(loss, zero + slowreg * (one - zero), rtol=1e-7, atol=1e-7)


# 9. The seed's twohot --------------------------------------------------------------------


TARGETS = st.one_of(
    floats(-20.0, 20.0).map(lambda u: math.copysign(math.expm1(abs(u)), u)),  # symexp(u)
    st.integers(0, 254).map(lambda i: BIN_LIST[i]),  # exactly on a bin
    floats(-100.0, 100.0),
)


@given(st.lists(TARGETS, min_size=1, max_size=6), SEEDS, floats(-30.0, 30.0))
def test_seed_twohot_encoding_and_symmetric_expectation(values, seed, constant):
    """DreamerV3 eq. 9-10 with the seed's bins B = symexp(linspace(-20, 20, 255)) in raw
    space. Index convention (``twohot_neighbours``): k = #{i : b_i <= y} - 1, capped at
    K - 2, so b_k <= y <= b_{k+1}; a y exactly on a bin b_j (j < K - 1) puts all its
    weight on b_j (w_k = 1), y = b_{K-1} all on the last bin. The two weights
    w_k = (b_{k+1} - y) / (b_{k+1} - b_k), w_{k+1} = 1 - w_k sum to 1 and reproduce
    y = sum_i w_i b_i in raw space. The prediction is softmax(f)^T B, summed
    symmetrically so uniform (or mirror-symmetric) logits give exactly 0."""
    grid = torch.linspace(-20.0, 20.0, 255, dtype=torch.float64)
    _assert_close(BINS, symexp(grid), rtol=1e-5, atol=1e-12)  # built from a float32 grid
    assert torch.equal(BINS, -BINS.flip(0)) and BINS[127].item() == 0.0
    assert bool((BINS.diff() > 0).all())
    y = torch.tensor(values, dtype=torch.float64)
    below, above, w_below, w_above = twohot_neighbours(y, BINS)
    weights = twohot_encode(y, BINS)
    for i, v in enumerate(values):
        if not BIN_LIST[0] <= v <= BIN_LIST[-1]:  # outside: all weight on the end bin
            assert weights[i, 0 if v < 0 else -1].item() == 1.0
            v = min(max(v, BIN_LIST[0]), BIN_LIST[-1])
        k = min(sum(1 for b in BIN_LIST if b <= v) - 1, 253)
        assert below[i].item() == k and above[i].item() == k + 1
        assert BIN_LIST[k] <= v <= BIN_LIST[k + 1]
        w_k = (BIN_LIST[k + 1] - v) / (BIN_LIST[k + 1] - BIN_LIST[k])
        _assert_close(w_below[i].item(), w_k, rtol=1e-12, atol=1e-12)
        _assert_close(w_above[i].item(), 1.0 - w_k, rtol=1e-12, atol=1e-12)
        if v in BIN_LIST[:-1]:
            assert w_below[i].item() == 1.0
        row = weights[i].tolist()
        assert all(row[j] == 0.0 for j in range(255) if j not in (k, k + 1))
        assert min(row) >= 0.0
        _assert_close(math.fsum(row), 1.0, rtol=1e-12, atol=1e-12)
        _assert_close(
            math.fsum(w * b for w, b in zip(row, BIN_LIST, strict=True)), v, rtol=1e-12, atol=1e-9
        )

    logits = _randn(seed, len(values), 255, scale=3.0)
    dist = TwoHotSymlog(logits, BINS)
    mean, log_prob = dist.mean.tolist(), dist.log_prob(y).tolist()
    for i in range(len(values)):
        probs = logits[i].softmax(-1).tolist()
        terms = [p * b for p, b in zip(probs, BIN_LIST, strict=True)]
        magnitude = math.fsum(abs(x) for x in terms)
        _assert_close(mean[i], math.fsum(terms), rtol=0.0, atol=1e-12 * magnitude + 1e-12)
        lp = logits[i].log_softmax(-1).tolist()
        _assert_close(log_prob[i], _twohot_log_prob(lp, values[i]), rtol=1e-9, atol=1e-9)
    uniform = TwoHotSymlog(torch.full((2, 255), constant))  # default bins, float32
    assert torch.equal(uniform.mean, torch.zeros(2))
    mirrored = TwoHotSymlog(logits + logits.flip(-1), BINS)
    assert torch.equal(mirrored.mean, torch.zeros(len(values), dtype=torch.float64))
