import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import seeded_randn
from wmblocks.dists import TwoHotSymlog
from wmblocks.nn.layers import MLP, BlockLinear, make_act, make_norm


@given(seeded_randn((4, 16), dtype=torch.float32), st.sampled_from(["rms", "layer", "none"]))
def test_zero_init_output_predicts_exactly_zero(x, norm):
    head = MLP(16, 255, units=8, layers=2, norm=norm, out_scale=0.0)
    assert torch.equal(head(x), torch.zeros(4, 255))
    assert torch.equal(TwoHotSymlog(head(x)).mean, torch.zeros(4))


@given(seeded_randn((5, 4, 3), dtype=torch.float32), st.integers(0, 2**31 - 1))
def test_block_linear_is_a_block_diagonal_dense_map(x, seed):
    torch.manual_seed(seed)
    layer = BlockLinear(12, 8, blocks=4)
    dense = torch.block_diag(*layer.weight)  # [12, 8]
    expected = x.reshape(5, 12) @ dense + layer.bias.reshape(-1)
    torch.testing.assert_close(layer(x).reshape(5, 8), expected)


def test_bad_names_and_sizes_are_named_in_the_error():
    with pytest.raises(ValueError, match="batch"):
        make_norm("batch", 4)
    with pytest.raises(ValueError, match="tanh"):
        make_act("tanh")
    with pytest.raises(ValueError, match="divisible"):
        BlockLinear(10, 8, blocks=4)
