import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import seeded_randn
from wmblocks.functional import advantage, percentile_ema, return_scale
from wmblocks.nn import ReturnNormalizer


@given(st.lists(seeded_randn((8, 15), scale=50.0), min_size=1, max_size=6), st.floats(0.5, 0.999))
def test_scale_follows_the_ema_of_the_percentile_range(batches, decay):
    low = high = torch.zeros((), dtype=torch.float64)
    ref_low = ref_high = 0.0
    for returns in batches:
        low, high = percentile_ema(low, high, returns, decay=decay)
        ref_low = decay * ref_low + (1 - decay) * np.percentile(returns.numpy(), 5)
        ref_high = decay * ref_high + (1 - decay) * np.percentile(returns.numpy(), 95)
        scale = return_scale(low, high)
        torch.testing.assert_close(scale.item(), max(1.0, ref_high - ref_low))
        assert scale >= 1


@given(st.lists(seeded_randn((4, 15), scale=30.0), min_size=1, max_size=5))
def test_module_matches_the_pure_function(batches):
    norm = ReturnNormalizer().double()
    low = high = torch.zeros((), dtype=torch.float64)
    for returns in batches:
        scale = norm.update(returns)
        low, high = percentile_ema(low, high, returns)
        torch.testing.assert_close(scale, return_scale(low, high))
    state = norm.state_dict()
    assert set(state) == {"low", "high"}


@given(seeded_randn((6, 15), scale=100.0), seeded_randn((6, 15), scale=100.0), st.floats(1.0, 1e3))
def test_normaliser_scales_advantages_and_never_shifts_them(ret, value, scale):
    adv = advantage(ret, value, torch.tensor(scale, dtype=ret.dtype))
    torch.testing.assert_close(adv * scale, ret - value)
    # zero advantage stays zero
    assert torch.equal(advantage(ret, ret, scale), torch.zeros_like(ret))


def test_reference_values():
    # Constant returns c: one update gives low = high = 0.01 c, so S = 0 and scale 1.
    low, high = percentile_ema(torch.zeros(()), torch.zeros(()), torch.full((10,), 7.0))
    torch.testing.assert_close((low, high), (torch.tensor(0.07), torch.tensor(0.07)))
    assert return_scale(low, high).item() == 1.0
    # Returns 0..100: P5 = 5, P95 = 95 (linear interpolation), S = 0.01 * 90 -> scale 1;
    # after many updates S -> 90.
    ret = torch.arange(101, dtype=torch.float64)
    low = high = torch.zeros((), dtype=torch.float64)
    for _ in range(2000):
        low, high = percentile_ema(low, high, ret)
    torch.testing.assert_close(return_scale(low, high).item(), 90.0, rtol=1e-6, atol=0)
