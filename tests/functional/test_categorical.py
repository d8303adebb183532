import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import seeded_randn
from wmblocks.functional import (
    onehot,
    onehot_straight_through,
    sample_onehot,
    unimix_logits,
    unimix_probs,
)


@given(seeded_randn((2, 3, 4, 6), scale=20.0), st.sampled_from([0.0, 0.01, 0.1, 0.5]))
def test_unimix_floor_and_normalisation(logits, unimix):
    probs = unimix_probs(logits, unimix)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 4, dtype=logits.dtype))
    assert bool((probs >= unimix / 6 * (1 - 1e-12)).all())
    torch.testing.assert_close(unimix_logits(logits, unimix).exp(), probs)


@given(seeded_randn((5, 8, 7)), st.integers(0, 2**31 - 1))
def test_straight_through_is_onehot_forward_with_softmax_gradient(logits, seed):
    logits = logits.requires_grad_(True)
    weights = torch.randn(
        5, 8, 7, dtype=logits.dtype, generator=torch.Generator().manual_seed(seed)
    )
    probs = logits.softmax(-1)
    sample = onehot_straight_through(probs, torch.Generator().manual_seed(seed))
    assert set(sample.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(sample.detach().sum(-1), torch.ones(5, 8, dtype=logits.dtype))
    (g_st,) = torch.autograd.grad((sample * weights).sum(), logits)
    (g_soft,) = torch.autograd.grad((logits.softmax(-1) * weights).sum(), logits)
    torch.testing.assert_close(g_st, g_soft)


def test_samples_follow_the_probabilities():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    n = 200_000
    counts = sample_onehot(probs.expand(n, 4), torch.Generator().manual_seed(0)).sum(0)
    # Chi-square with 3 dof; 16.27 is its 0.999 quantile.
    chi2 = ((counts - n * probs) ** 2 / (n * probs)).sum()
    assert chi2 < 16.27, chi2


@given(st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_onehot_equals_torch_one_hot(classes, seed):
    index = torch.randint(0, classes, (4, 5), generator=torch.Generator().manual_seed(seed))
    out = onehot(index, classes, torch.float64)
    assert out.dtype == torch.float64
    assert torch.equal(out, F.one_hot(index, classes).double())
