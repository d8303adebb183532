import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from tests.strategies import seeded_randn
from wmblocks.functional import (
    free_bits,
    free_nats,
    kl_balance,
    kl_categorical,
    kl_dyn_rep,
    kl_normal,
)

S, C, D = 4, 5, 6


@given(seeded_randn((3, D)), seeded_randn((3, D)), seeded_randn((3, D)), seeded_randn((3, D)))
def test_kl_normal_matches_torch_and_is_nonnegative(m1, s1, m2, s2):
    s1, s2 = s1.exp() * 0.1 + 1e-2, s2.exp() * 0.1 + 1e-2
    kl = kl_normal(m1, s1, m2, s2)
    ref = kl_divergence(Independent(Normal(m1, s1), 1), Independent(Normal(m2, s2), 1))
    torch.testing.assert_close(kl, ref)
    assert bool((kl >= 0).all())
    torch.testing.assert_close(
        kl_normal(m1, s1, m1, s1), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0
    )


@given(seeded_randn((2, 3, S, C)), seeded_randn((2, 3, S, C)))
def test_kl_categorical_sums_torch_kl_over_groups(lq, lp):
    kl = kl_categorical(lq, lp)
    assert kl.shape == (2, 3)
    ref = kl_divergence(Categorical(logits=lq), Categorical(logits=lp)).sum(-1)
    torch.testing.assert_close(kl, ref)
    assert bool((kl >= -1e-12).all())
    torch.testing.assert_close(
        kl_categorical(lq, lq), torch.zeros(2, 3, dtype=torch.float64), atol=1e-12, rtol=0
    )


def _leaves(*tensors):
    return [t.clone().requires_grad_(True) for t in tensors]


@given(seeded_randn((3, S, C)), seeded_randn((3, S, C)))
def test_dyn_trains_only_the_prior_and_rep_only_the_posterior(lq, lp):
    post, prior = _leaves(lq, lp)
    dyn, rep = kl_dyn_rep(post, prior)
    torch.testing.assert_close(dyn, rep)
    g_post, g_prior = torch.autograd.grad(dyn.sum(), [post, prior], allow_unused=True)
    assert g_post is None and g_prior is not None and g_prior.abs().sum() > 0
    g_post, g_prior = torch.autograd.grad(rep.sum(), [post, prior], allow_unused=True)
    assert g_prior is None and g_post is not None and g_post.abs().sum() > 0


@given(seeded_randn((3, D)), seeded_randn((3, D)), seeded_randn((3, D)), seeded_randn((3, D)))
def test_dyn_rep_routing_for_gaussians(m1, s1, m2, s2):
    mq, sq, mp, sp = _leaves(m1, s1.exp(), m2, s2.exp())
    dyn, rep = kl_dyn_rep((mq, sq), (mp, sp), kl=kl_normal)
    grads = torch.autograd.grad(dyn.sum(), [mq, sq, mp, sp], allow_unused=True)
    assert grads[0] is None and grads[1] is None and grads[2] is not None
    grads = torch.autograd.grad(rep.sum(), [mq, sq, mp, sp], allow_unused=True)
    assert grads[2] is None and grads[3] is None and grads[0] is not None


@given(seeded_randn((3, S, C)), seeded_randn((3, S, C)), st.floats(0.0, 1.0))
def test_kl_balance_sends_alpha_to_prior_and_one_minus_alpha_to_posterior(lq, lp, alpha):
    post, prior = _leaves(lq, lp)
    full_post, full_prior = torch.autograd.grad(kl_categorical(post, prior).sum(), [post, prior])
    loss = kl_balance(*kl_dyn_rep(post, prior), alpha=alpha).sum()
    g_post, g_prior = torch.autograd.grad(loss, [post, prior])
    torch.testing.assert_close(g_prior, alpha * full_prior)
    torch.testing.assert_close(g_post, (1 - alpha) * full_post)
    torch.testing.assert_close(loss, kl_categorical(lq, lp).sum())


@given(seeded_randn((4, S, C), scale=0.3), seeded_randn((4, S, C), scale=0.3))
def test_free_bits_zero_gradient_below_threshold(lq, lp):
    post = lq.clone().requires_grad_(True)
    kl = kl_categorical(post, lp)
    free = float(kl.detach().max()) + 0.1  # every step below the threshold
    loss = free_bits(kl, free)
    assert torch.equal(loss, torch.full_like(loss, free))
    (g,) = torch.autograd.grad(loss.sum(), [post])
    assert torch.equal(g, torch.zeros_like(g))


def test_free_bits_act_on_the_sum_over_groups_not_each_group():
    # q = [0.9, 0.1] against a uniform prior: each group's KL is 0.368 < 1 nat, but the
    # step's sum over S = 4 groups is 1.47 > 1. The V3 clip must keep this gradient; a
    # per-group clip would zero it.
    q = torch.tensor([0.9, 0.1], dtype=torch.float64)
    post = q.log().expand(S, 2).clone().requires_grad_(True)
    prior = torch.zeros(S, 2, dtype=torch.float64)
    per_group = kl_categorical(post[:, None], prior[:, None])  # [S]: one group each
    assert bool((per_group < 1).all()) and per_group.sum() > 1
    (g_step,) = torch.autograd.grad(free_bits(kl_categorical(post, prior), 1.0), post)
    (g_group,) = torch.autograd.grad(free_bits(per_group, 1.0).sum(), post)
    assert g_step.abs().sum() > 0
    assert torch.equal(g_group, torch.zeros_like(g_group))


@given(seeded_randn((5, 7)), st.floats(0.0, 5.0))
def test_free_nats_clip_the_batch_mean(raw, free):
    kl = raw.exp().requires_grad_(True)
    out = free_nats(kl, free)
    assert out.shape == kl.shape
    torch.testing.assert_close(out.mean(), torch.clamp(kl.mean(), min=free))
    (g,) = torch.autograd.grad(out.mean(), kl)
    if kl.mean() >= free:
        torch.testing.assert_close(g, torch.full_like(g, 1 / kl.numel()))
    else:
        assert torch.equal(g, torch.zeros_like(g))
