"""Golden checks of wmblocks' RSSM (block GRU core, prior, posterior, categorical latents,
KL) against the official DreamerV3 (2024) ``rssm.RSSM``: the ``core/``, ``prior/``,
``post/``, ``kl/``, ``observe/`` and ``imagine/`` cases of ``dreamerv3_2024.npz``, with
the official parameters ``rssm/params/dyn/...`` copied in by :mod:`tests.golden.load`
(see ``shared/golden/README.md`` for the cases and layouts).

The reference samples with JAX's RNG, which torch cannot reproduce. The sequence cases
therefore replay the stored samples: the latent heads' ``sample`` is swapped for a
:class:`Replay` that returns the reference's sample of each step (and records the stats
it was given), so ``observe`` and ``imagine`` run their own loops on the reference path.

Tolerances are float32: values are of order 1 and agree to about 5e-7 absolute, so most
checks use rtol 1e-5 / atol 1e-6 (the README's safe bound is rtol 1e-4 / atol 1e-5).
"""

import pytest
import torch
from torch.testing import assert_close

from tests.golden import load
from tests.golden.conftest import t
from wmblocks.functional import free_bits, kl_dyn_rep, unimix_probs
from wmblocks.nn.latents import CategoricalLatentHead

TOL = dict(rtol=1e-5, atol=1e-6)
FREE = 1.0  # kl/free_nats


@pytest.fixture(scope="module")
def rssm(golden):
    return load.build_rssm(golden)


class Replay:
    """Stands in for a latent head's ``sample``: returns the stored sample of step i
    (``samples[:, i]`` flattened to ``[N, S*C]``) on the i-th call and records the
    stats (logits) it was called with."""

    def __init__(self, samples: torch.Tensor):
        self.samples = samples  # [N, T, S, C]
        self.stats: list[torch.Tensor] = []

    def __call__(self, stats: torch.Tensor) -> torch.Tensor:
        self.stats.append(stats.detach().clone())
        return self.samples[:, len(self.stats) - 1].flatten(-2)


def _is_onehot(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all() and (x.sum(-1) == 1).all())


def _dyn_rep(post, prior):
    """The reference's dyn / rep KL per (b, t): unimixed on both sides, summed over S,
    stop-gradient on the other side."""
    head = CategoricalLatentHead(load.H, stoch=load.S, classes=load.C, unimix=load.UNIMIX)
    return kl_dyn_rep(post, prior, kl=head.kl)


def test_block_gru_core_matches_reference(golden):
    """``RSSM._core(deter, stoch, action)``, with actions |a| > 1 divided by
    sg(max(1, |a|)) inside the core, gates interleaved per group."""
    core = load.build_core()
    load.load_block_gru_core(core, golden)
    action = t(golden["core/action"])
    assert action.abs().max() > 1  # the clip inside the core matters here
    out = core(t(golden["core/deter"]), t(golden["core/stoch"]), action)
    assert_close(out, t(golden["core/out_deter"]), **TOL)


def test_prior_matches_reference(rssm, golden):
    """``RSSM._prior(deter)`` logits and the unimix (1%) probabilities."""
    logit = rssm.prior(t(golden["prior/deter"]))
    assert_close(logit, t(golden["prior/logit"]), **TOL)
    assert_close(unimix_probs(logit, 0.01), t(golden["prior/probs_unimix"]), **TOL)
    assert_close(rssm.prior_head.dist(logit).probs, t(golden["prior/probs_unimix"]), **TOL)


def test_posterior_step_with_reset_matches_reference(rssm, golden):
    """One filtering step (``obs_step``); row 1 is reset, so its deter, stoch and action
    are zeroed before the core. The posterior reads the step's new deter and tokens.
    ``stoch_sample`` comes from JAX's RNG: only its form is checked."""
    reset = t(golden["post/reset"])
    tokens = t(golden["post/tokens"])
    assert reset.tolist() == [False, True, False, False]
    deter, sample = rssm.obs_step(
        t(golden["post/carry_deter"]),
        t(golden["post/carry_stoch"]).flatten(-2),
        t(golden["post/action"]),
        tokens,
        reset,
    )
    assert_close(deter, t(golden["post/deter"]), **TOL)
    logit = rssm.posterior(deter, rssm.post_embed(tokens))
    assert_close(logit, t(golden["post/logit"]), **TOL)
    assert_close(unimix_probs(logit, 0.01), t(golden["post/probs_unimix"]), **TOL)
    assert sample.shape == (4, load.S * load.C) and _is_onehot(sample.view(4, load.S, -1))
    assert _is_onehot(t(golden["post/stoch_sample"]))


def test_kl_dyn_rep_free_bits_match_reference(golden):
    """dyn = KL(sg(post) || prior), rep = KL(post || sg(prior)) on unimixed
    distributions, summed over S, then free bits max(KL, 1) per (b, t)."""
    assert golden["kl/free_nats"] == FREE
    dyn_raw, rep_raw = _dyn_rep(t(golden["kl/post_logit"]), t(golden["kl/prior_logit"]))
    assert_close(dyn_raw, t(golden["kl/dyn_raw"]), **TOL)
    assert_close(rep_raw, t(golden["kl/rep_raw"]), **TOL)
    assert_close(free_bits(dyn_raw, FREE), t(golden["kl/dyn"]), **TOL)
    assert_close(free_bits(rep_raw, FREE), t(golden["kl/rep"]), **TOL)
    assert (dyn_raw < FREE).sum() == 3  # the clip is active somewhere


def test_kl_gradients_match_reference(golden):
    """d sum(dyn) / d prior logits and d sum(rep) / d post logits (zero where the free
    bits clip is active); dyn sends no gradient to the posterior, rep none to the prior."""
    post = t(golden["kl/post_logit"]).requires_grad_(True)
    prior = t(golden["kl/prior_logit"]).requires_grad_(True)
    dyn_raw, rep_raw = _dyn_rep(post, prior)
    dyn, rep = free_bits(dyn_raw, FREE), free_bits(rep_raw, FREE)
    grad_prior, grad_post = torch.autograd.grad(
        dyn.sum(), (prior, post), retain_graph=True, allow_unused=True
    )
    assert grad_post is None or not grad_post.any()
    assert_close(grad_prior, t(golden["kl/grad_dyn_wrt_prior_logit"]), rtol=1e-5, atol=1e-7)
    grad_post, no_grad_prior = torch.autograd.grad(rep.sum(), (post, prior), allow_unused=True)
    assert no_grad_prior is None or not no_grad_prior.any()
    assert_close(grad_post, t(golden["kl/grad_rep_wrt_post_logit"]), rtol=1e-5, atol=1e-7)
    for grad, raw in ((grad_prior, dyn_raw), (grad_post, rep_raw)):
        clipped = (raw < FREE).detach()
        assert not grad[clipped].any()
        assert grad[~clipped].abs().amax((-2, -1)).min() > 0


def _observe_replay(rssm, golden):
    """``RSSM.observe`` over the reference path: start from the stored carry, reset at
    the stored positions, prevact as given, the stored sample of step t as the carry of
    step t + 1."""
    replay = Replay(t(golden["observe/stoch"]))
    rssm.post_head.sample = replay
    try:
        out = rssm.observe(
            t(golden["observe/tokens"]),
            t(golden["observe/action"]),
            t(golden["observe/reset"]),
            state=(t(golden["observe/carry_deter"]), t(golden["observe/carry_stoch"]).flatten(-2)),
        )
    finally:
        del rssm.post_head.sample
    assert len(replay.stats) == 5
    assert_close(torch.stack(replay.stats, 1), out["post"], rtol=0.0, atol=0.0)
    return out


def test_observe_replay_matches_reference(rssm, golden):
    """deter[t], post_logit[t], prior_logit[t] and the out carry of ``observe``."""
    out = _observe_replay(rssm, golden)
    assert_close(out["deter"], t(golden["observe/deter"]), **TOL)
    assert_close(out["post"], t(golden["observe/post_logit"]), **TOL)
    assert_close(out["prior"], t(golden["observe/prior_logit"]), **TOL)
    assert_close(out["deter"][:, -1], t(golden["observe/out_carry_deter"]), **TOL)
    stoch = out["stoch"].unflatten(-1, (load.S, load.C))
    assert torch.equal(stoch, t(golden["observe/stoch"]))
    assert torch.equal(stoch[:, -1], t(golden["observe/out_carry_stoch"]))


def test_observe_losses_match_reference(rssm, golden):
    """The dyn / rep losses (free bits 1) of the replayed posteriors and priors equal the
    official ``RSSM.loss`` values ``observe/dyn``, ``observe/rep``."""
    out = _observe_replay(rssm, golden)
    dyn, rep = _dyn_rep(out["post"], out["prior"])
    assert_close(free_bits(dyn, FREE), t(golden["observe/dyn"]), **TOL)
    assert_close(free_bits(rep, FREE), t(golden["observe/rep"]), **TOL)


def test_obs_step_loop_matches_reference(rssm, golden):
    """The same path through ``obs_step`` (the acting-time filter), one step at a time."""
    tokens, action = t(golden["observe/tokens"]), t(golden["observe/action"])
    reset, samples = t(golden["observe/reset"]), t(golden["observe/stoch"])
    deter, stoch = t(golden["observe/carry_deter"]), t(golden["observe/carry_stoch"])
    deters, posts = [], []
    for i in range(tokens.shape[1]):
        deter, _ = rssm.obs_step(deter, stoch.flatten(-2), action[:, i], tokens[:, i], reset[:, i])
        deters.append(deter)
        posts.append(rssm.posterior(deter, rssm.post_embed(tokens[:, i])))
        stoch = samples[:, i]
    assert_close(torch.stack(deters, 1), t(golden["observe/deter"]), **TOL)
    assert_close(torch.stack(posts, 1), t(golden["observe/post_logit"]), **TOL)


def test_imagine_replay_matches_reference(rssm, golden):
    """``RSSM.imagine`` from ``observe``'s out carry with the stored actions (no reset
    masking; the core clips |a| > 1) and the stored prior samples as carries: deter and
    the prior logits of every step."""
    actions = t(golden["imagine/action"])  # [3, 4, 2]
    horizon = actions.shape[1]
    assert actions.abs().max() > 1
    calls = []

    def policy(feat):
        calls.append(feat)
        i = len(calls) - 1
        return actions[:, i] if i < horizon else torch.zeros_like(actions[:, 0])

    replay = Replay(t(golden["imagine/stoch"]))
    rssm.prior_head.sample = replay
    try:
        deter0 = t(golden["imagine/carry_deter"])
        stoch0 = t(golden["imagine/carry_stoch"]).flatten(-2)
        out = rssm.imagine(deter0, stoch0, policy, horizon)
    finally:
        del rssm.prior_head.sample
    assert torch.equal(out["deter"][:, 0], deter0) and torch.equal(out["stoch"][:, 0], stoch0)
    assert_close(out["deter"][:, 1:], t(golden["imagine/deter"]), **TOL)
    assert_close(torch.stack(replay.stats, 1), t(golden["imagine/prior_logit"]), **TOL)
    assert_close(rssm.prior(out["deter"][:, 1:]), t(golden["imagine/prior_logit"]), **TOL)
    stoch = out["stoch"][:, 1:].unflatten(-1, (load.S, load.C))
    assert torch.equal(stoch, t(golden["imagine/stoch"]))
