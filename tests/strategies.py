"""Hypothesis strategies shared by the tests: small tensors drawn as nested lists."""

import torch
from hypothesis import strategies as st


def floats(lo=-1e3, hi=1e3):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def tensors(draw, shape, lo=-10.0, hi=10.0, dtype=torch.float64):
    n = 1
    for s in shape:
        n *= s
    values = draw(st.lists(floats(lo, hi), min_size=n, max_size=n))
    return torch.tensor(values, dtype=dtype).reshape(shape)


@st.composite
def shapes(draw, min_dims=1, max_dims=3, min_side=1, max_side=5):
    ndim = draw(st.integers(min_dims, max_dims))
    return tuple(draw(st.integers(min_side, max_side)) for _ in range(ndim))


@st.composite
def seeded_randn(draw, shape, scale=3.0, dtype=torch.float64):
    """A random normal tensor of ``shape`` from a drawn seed (fast for big shapes)."""
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(shape, generator=g, dtype=dtype)
