import math

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Categorical, Independent, Normal

from tests.strategies import floats, seeded_randn
from wmblocks.dists import (
    Bernoulli,
    BoundedNormal,
    OneHotStraightThrough,
    SymlogMSE,
    TanhNormal,
    TwoHotSymlog,
    TwoHotSymlog2023,
    UnitNormal,
)
from wmblocks.functional import symexp, symexp_twohot_bins, symlog, twohot_bins, twohot_encode


def test_twohot_symlog_predicts_exactly_zero_from_zero_logits():
    for cls in (TwoHotSymlog, TwoHotSymlog2023):
        dist = cls(torch.zeros(4, 7, 255))
        assert dist.mean.shape == (4, 7)
        assert torch.equal(dist.mean, torch.zeros(4, 7))


def test_twohot_symlog_uses_the_seeds_symexp_bins():
    """Seed / 2024: B = symexp(linspace(-20, 20, 255)), exactly antisymmetric."""
    bins = TwoHotSymlog(torch.zeros(255)).bins
    grid = torch.linspace(-20, 20, 255, dtype=torch.float64)
    torch.testing.assert_close(bins.double(), symexp(grid), rtol=5e-6, atol=1e-12)
    assert torch.equal(bins, -bins.flip(0)) and bins[127] == 0.0


@given(st.lists(floats(-4e8, 4e8), min_size=1, max_size=16))
def test_twohot_symlog_mean_recovers_the_encoded_value_in_raw_space(values):
    # Seed eq. 9-10: the target is two-hot in *raw* space over the symexp bins and the
    # prediction is softmax(f)^T B, no symexp afterwards.
    x = torch.tensor(values, dtype=torch.float64)
    bins = symexp_twohot_bins(dtype=torch.float64)
    logits = (twohot_encode(x, bins) + 1e-300).log()
    torch.testing.assert_close(TwoHotSymlog(logits, bins).mean, x, rtol=1e-9, atol=1e-9)


@given(
    seeded_randn((3, 255), dtype=torch.float32), st.lists(floats(-1e6, 1e6), min_size=3, max_size=3)
)
def test_twohot_symlog_log_prob_is_negative_cross_entropy_in_raw_space(logits, values):
    x = torch.tensor(values, dtype=torch.float32)
    dist = TwoHotSymlog(logits)
    expected = (twohot_encode(x, dist.bins) * logits.log_softmax(-1)).sum(-1)
    torch.testing.assert_close(dist.log_prob(x), expected)
    assert torch.equal(dist.mode, dist.bins[logits.argmax(-1)])


@given(st.lists(floats(-1e6, 1e6), min_size=1, max_size=16))
def test_twohot_2023_mean_recovers_the_encoded_value(values):
    x = torch.tensor(values, dtype=torch.float64)
    bins = twohot_bins(dtype=torch.float64)
    logits = (twohot_encode(symlog(x), bins) + 1e-300).log()
    torch.testing.assert_close(TwoHotSymlog2023(logits, bins).mean, x, rtol=1e-9, atol=1e-9)


@given(
    seeded_randn((3, 255), dtype=torch.float32), st.lists(floats(-1e4, 1e4), min_size=3, max_size=3)
)
def test_twohot_2023_log_prob_is_negative_cross_entropy_in_symlog_space(logits, values):
    x = torch.tensor(values, dtype=torch.float32)
    dist = TwoHotSymlog2023(logits)
    expected = (twohot_encode(symlog(x), dist.bins) * logits.log_softmax(-1)).sum(-1)
    torch.testing.assert_close(dist.log_prob(x), expected)
    assert dist.mode.shape == (3,)


def test_twohot_symlog_rejects_mismatched_bins():
    try:
        TwoHotSymlog(torch.zeros(2, 255), twohot_bins(41))
    except ValueError as e:
        assert "255" in str(e) and "41" in str(e)
    else:
        raise AssertionError("mismatched bins must raise")


@given(seeded_randn((2, 3, 5), scale=100.0))
def test_symlog_mse(x):
    perfect = SymlogMSE(symlog(x))
    torch.testing.assert_close(perfect.log_prob(x), torch.zeros(2, 3, dtype=x.dtype))
    torch.testing.assert_close(perfect.mean, x)
    off = SymlogMSE(symlog(x) + 0.5)
    torch.testing.assert_close(off.log_prob(x), torch.full((2, 3), -1.25, dtype=x.dtype))


@given(seeded_randn((2, 3, 4, 4)), seeded_randn((2, 3, 4, 4)))
def test_unit_normal_matches_torch(mean, x):
    ours = UnitNormal(mean, event_dims=2)
    ref = Independent(Normal(mean, torch.ones_like(mean)), 2)
    torch.testing.assert_close(ours.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(ours.entropy(), ref.entropy())


@given(seeded_randn((2, 3, 4, 8), scale=5.0), st.sampled_from([0.0, 0.01]))
def test_onehot_straight_through_on_latents(logits, unimix):
    dist = OneHotStraightThrough(logits.requires_grad_(True), unimix=unimix)
    sample = dist.rsample(torch.Generator().manual_seed(0))
    assert sample.shape == (2, 3, 4, 8)
    assert torch.equal(sample.detach().sum(-1), torch.ones(2, 3, 4, dtype=logits.dtype))
    assert dist.log_prob(sample).shape == (2, 3, 4)
    ref = Categorical(probs=dist.probs.detach())
    torch.testing.assert_close(dist.entropy().detach(), ref.entropy())
    torch.testing.assert_close(
        dist.log_prob(sample).detach(), ref.log_prob(sample.detach().argmax(-1))
    )
    assert bool((dist.probs >= unimix / 8 * (1 - 1e-9)).all())
    (g,) = torch.autograd.grad((sample * torch.arange(8.0, dtype=logits.dtype)).sum(), logits)
    assert g.abs().sum() > 0
    assert torch.equal(dist.mode.detach().argmax(-1), logits.argmax(-1))


def test_onehot_straight_through_on_actions():
    dist = OneHotStraightThrough(torch.randn(16, 3))
    a = dist.sample()
    assert a.shape == (16, 3) and dist.log_prob(a).shape == (16,) and dist.entropy().shape == (16,)


@given(seeded_randn((4, 2)), seeded_randn((4, 2), scale=0.5), seeded_randn((4, 2), scale=0.9))
def test_tanh_normal_log_prob_matches_numerical_change_of_variables(mean, log_std, pre):
    std = log_std.exp()
    action = pre.tanh().clamp(-0.999, 0.999)
    ours = TanhNormal(mean, std).log_prob(action)
    # Reference: log N(atanh(a)) + log |d atanh(a)/da|, the derivative by central differences.
    h = 1e-6
    jac = ((action + h).atanh() - (action - h).atanh()) / (2 * h)
    ref = (Normal(mean, std).log_prob(action.atanh()) + jac.abs().log()).sum(-1)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


@given(seeded_randn((3, 2)), seeded_randn((3, 2), scale=0.5))
def test_tanh_normal_sample_log_prob_is_consistent(mean, log_std):
    dist = TanhNormal(mean, log_std.exp())
    torch.manual_seed(0)
    a, logp = dist.rsample_with_log_prob()
    inside = a.abs().max(-1).values < 0.999  # away from saturation, where atanh is exact
    torch.testing.assert_close(logp[inside], dist.log_prob(a)[inside], rtol=1e-6, atol=1e-6)
    assert bool((a.abs() <= 1).all())


def test_tanh_normal_entropy_estimate_matches_quadrature():
    mean, std = (
        torch.tensor([[0.4]], dtype=torch.float64),
        torch.tensor([[0.8]], dtype=torch.float64),
    )
    dist = TanhNormal(mean, std)
    # H = -E_u[log p(tanh u)], by quadrature over u on a fine grid.
    u = torch.linspace(-8, 8, 200_001, dtype=torch.float64) * std[0, 0] + mean[0, 0]
    density = Normal(mean[0, 0], std[0, 0]).log_prob(u).exp()
    log_p = dist._log_prob_pre_tanh(u[:, None, None])[:, 0]
    exact = -(density * log_p).sum() * (u[1] - u[0])
    torch.manual_seed(0)
    estimate = dist.entropy(samples=200_000)[0]
    assert abs(estimate - exact) < 0.01, (estimate, exact)


@given(seeded_randn((5, 3), scale=10.0), seeded_randn((5, 3), scale=10.0), seeded_randn((5, 3)))
def test_bounded_normal(mean_raw, std_raw, action):
    dist = BoundedNormal(mean_raw, std_raw)
    assert bool((dist.scale >= 0.1).all() and (dist.scale <= 1.0).all())
    assert bool((dist.mean.abs() <= 1).all())
    ref = Independent(Normal(dist.loc, dist.scale), 1)
    torch.testing.assert_close(dist.log_prob(action), ref.log_prob(action))
    torch.testing.assert_close(dist.entropy(), ref.entropy())
    # Zero raw std gives the reference's initial std (1 - 0.1) * sigmoid(2) + 0.1.
    init = BoundedNormal(torch.zeros(1), torch.zeros(1)).scale
    torch.testing.assert_close(init, torch.tensor([0.9 / (1 + math.exp(-2.0)) + 0.1]))


def test_bernoulli_soft_targets_and_mode():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    target = torch.tensor([0.0, 0.997, 1.0])
    dist = Bernoulli(logits)
    expected = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, reduction="none"
    )
    torch.testing.assert_close(dist.log_prob(target), expected)
    assert torch.equal(dist.mode, torch.tensor([0.0, 0.0, 1.0]))


def test_import_path_of_the_readme():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "from wmblocks.dists import TwoHotSymlog; print(TwoHotSymlog)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "TwoHotSymlog" in out.stdout


@given(seeded_randn((2,)), seeded_randn((2,), scale=1.0))
def test_truncated_normal_density_mean_and_entropy_match_quadrature(raw_loc, raw_scale):
    from wmblocks.dists import TruncatedNormal

    loc, scale = raw_loc.tanh(), raw_scale.sigmoid() * 2 + 0.1
    dist = TruncatedNormal(loc[:, None], scale[:, None])
    x = torch.linspace(-1, 1, 40_001, dtype=torch.float64)
    dx = x[1] - x[0]
    logp = dist.log_prob(x[:, None, None])  # [K, 2]
    p = logp.exp()
    torch.testing.assert_close(
        (p * dx).sum(0), torch.ones(2, dtype=torch.float64), rtol=1e-3, atol=0
    )
    torch.testing.assert_close((p * x[:, None] * dx).sum(0), dist.mean[:, 0], rtol=0, atol=1e-3)
    torch.testing.assert_close(-(p * logp * dx).sum(0), dist.entropy(), rtol=0, atol=1e-3)


def test_truncated_normal_samples_stay_inside_and_are_differentiable():
    from wmblocks.dists import TruncatedNormal

    loc = torch.tensor([[0.9]], requires_grad=True)
    scale = torch.tensor([[0.5]], requires_grad=True)
    dist = TruncatedNormal(loc, scale)
    torch.manual_seed(0)
    x = dist.rsample((200_000,))
    assert bool((x > -1).all() and (x < 1).all())
    torch.testing.assert_close(x.mean().detach(), dist.mean.detach()[0, 0], rtol=0, atol=5e-3)
    (g,) = torch.autograd.grad(x.mean(), loc)
    assert g > 0
