import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import floats, seeded_randn
from wmblocks.functional import (
    is_antisymmetric,
    symexp_twohot_bins,
    twohot_bins,
    twohot_cross_entropy,
    twohot_decode,
    twohot_encode,
)

BINS = twohot_bins()


def test_default_bins_match_dreamerv3():
    assert BINS.shape == (255,)
    assert BINS[0].item() == -20.0 and BINS[-1].item() == 20.0 and BINS[127].item() == 0.0
    assert torch.equal(BINS, -BINS.flip(0))  # exactly antisymmetric
    torch.testing.assert_close(BINS.diff(), torch.full((254,), 40 / 254))


@given(st.lists(floats(-30, 30), min_size=1, max_size=32))
def test_encode_weights_are_a_twohot(values):
    x = torch.tensor(values, dtype=torch.float32)
    w = twohot_encode(x, BINS)
    assert w.shape == (len(values), 255)
    assert bool((w >= 0).all())
    torch.testing.assert_close(w.sum(-1), torch.ones(len(values)))
    assert int((w > 0).sum(-1).max()) <= 2
    nz = (w > 0).nonzero()
    for row in range(len(values)):  # the non-zeros are neighbours
        cols = nz[nz[:, 0] == row, 1]
        assert cols.numel() in (1, 2) and (cols.numel() == 1 or cols[1] - cols[0] == 1)


@given(st.lists(floats(-20, 20), min_size=1, max_size=32))
def test_encode_then_decode_is_identity_inside_range(values):
    x = torch.tensor(values, dtype=torch.float64)
    bins = twohot_bins(dtype=torch.float64)
    torch.testing.assert_close(twohot_decode(twohot_encode(x, bins), bins), x)


@given(st.lists(floats(20, 1e6), min_size=1, max_size=8))
def test_values_outside_range_go_to_end_bins(values):
    x = torch.tensor(values, dtype=torch.float32)
    assert torch.equal(twohot_encode(x, BINS)[:, -1], torch.ones(len(values)))
    assert torch.equal(twohot_encode(-x, BINS)[:, 0], torch.ones(len(values)))


@given(st.integers(2, 300), floats(-50, 50), st.integers(1, 4))
def test_uniform_probabilities_decode_to_exactly_zero(num, constant, batch):
    bins = twohot_bins(num)
    logits = torch.full((batch, num), constant)
    assert torch.equal(twohot_decode(logits.softmax(-1), bins), torch.zeros(batch))


@given(seeded_randn((3, 255), dtype=torch.float32))
def test_mirror_symmetric_probabilities_decode_to_exactly_zero(logits):
    probs = (logits + logits.flip(-1)).softmax(-1)
    assert torch.equal(twohot_decode(probs, BINS), torch.zeros(3))


@given(seeded_randn((4, 255)), st.booleans())
def test_symmetric_decode_equals_plain_expectation(logits, fast):
    bins = twohot_bins(dtype=torch.float64)
    probs = logits.softmax(-1)
    expected = (probs * bins).sum(-1)
    torch.testing.assert_close(twohot_decode(probs, bins, symmetric=fast), expected)


@given(st.integers(1, 150), floats(-50, 50), seeded_randn((3, 301), dtype=torch.float32))
def test_matmul_decode_keeps_exact_zeros(half, constant, logits):
    num = 2 * half + 1
    for bins in (twohot_bins(num), symexp_twohot_bins(num)):
        assert is_antisymmetric(bins)
        uniform = torch.full((2, num), constant).softmax(-1)
        assert torch.equal(twohot_decode(uniform, bins, symmetric=True), torch.zeros(2))
        sym = logits[:, :num] + logits[:, :num].flip(-1)
        mirror = sym.softmax(-1)
        assert torch.equal(twohot_decode(mirror, bins, symmetric=True), torch.zeros(3))
        torch.testing.assert_close(
            twohot_decode(logits[:, :num].softmax(-1), bins, symmetric=True),
            twohot_decode(logits[:, :num].softmax(-1), bins),
            rtol=1e-5,
            atol=1e-5 * float(bins[-1]),
        )


def test_antisymmetry_check():
    assert is_antisymmetric(twohot_bins()) and is_antisymmetric(symexp_twohot_bins())
    assert not is_antisymmetric(twohot_bins(254))  # even: no zero middle bin
    assert not is_antisymmetric(twohot_bins(255, -20.0, 10.0))


def test_reference_values():
    bins = torch.tensor([-1.0, 0.0, 1.0])
    w = twohot_encode(torch.tensor([0.5, -0.25, 1.0, 3.0]), bins)
    expected = torch.tensor([[0.0, 0.5, 0.5], [0.25, 0.75, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(w, expected)
    # Cross-entropy of a target on a bin = -log softmax at that bin.
    logits = torch.tensor([[0.3, -1.2, 2.0]])
    ce = twohot_cross_entropy(logits, torch.tensor([0.0]), bins)
    torch.testing.assert_close(ce, -logits.log_softmax(-1)[:, 1])


@given(
    seeded_randn((6, 255), dtype=torch.float64), st.lists(floats(-20, 20), min_size=6, max_size=6)
)
def test_cross_entropy_is_minimised_by_the_twohot_itself(logits, values):
    bins = twohot_bins(dtype=torch.float64)
    target = torch.tensor(values, dtype=torch.float64)
    w = twohot_encode(target, bins)
    best = twohot_cross_entropy((w + 1e-300).log(), target, bins)
    entropy = -(w * (w + 1e-300).log()).sum(-1)
    torch.testing.assert_close(best, entropy)  # Gibbs: CE(p, q) >= H(p), equality at q = p
    assert bool((twohot_cross_entropy(logits, target, bins) >= entropy - 1e-9).all())


def test_cross_entropy_sends_no_gradient_into_the_target():
    target = torch.tensor([1.5], requires_grad=True)
    logits = torch.zeros(1, 255, requires_grad=True)
    twohot_cross_entropy(logits, target, BINS).sum().backward()
    assert target.grad is None and logits.grad is not None
