import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from wmblocks.functional import symexp, symlog


@given(st.lists(st.floats(-1e300, 1e300, allow_nan=False), min_size=1, max_size=64))
def test_symexp_inverts_symlog_float64(values):
    x = torch.tensor(values, dtype=torch.float64)
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-12, atol=1e-300)


@given(
    st.lists(
        st.floats(-1e30, 1e30, allow_nan=False).map(
            lambda v: float(torch.tensor(v, dtype=torch.float32))
        ),
        min_size=1,
        max_size=64,
    )
)
def test_symexp_inverts_symlog_float32(values):
    x = torch.tensor(values, dtype=torch.float32)
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-5, atol=1e-30)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=64))
def test_symlog_is_odd_and_monotonic(values):
    x = torch.tensor(sorted(values), dtype=torch.float64)
    y = symlog(x)
    assert torch.equal(symlog(-x), -y)
    assert bool((y[1:] >= y[:-1]).all())


def test_reference_values():
    # symlog(e - 1) = ln(e) = 1; symlog is ~identity near 0 (slope 1 at the origin).
    x = torch.tensor([math.e - 1, -(math.e - 1), 0.0, 1e-8], dtype=torch.float64)
    torch.testing.assert_close(symlog(x), torch.tensor([1.0, -1.0, 0.0, 1e-8], dtype=torch.float64))
