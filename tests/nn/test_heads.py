"""heads_on / mlps_on: several heads on one input, their first layers as one matmul."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wmblocks.nn import (
    MLP,
    BernoulliHead,
    BoundedNormalActor,
    DiscreteActor,
    MSECritic,
    SlowCritic,
    TanhNormalActor,
    TruncNormalActor,
    TwoHotCritic,
    TwoHotHead,
    heads_on,
    mlps_on,
)

F = 12


def _all_heads():
    critic = TwoHotCritic(F, units=8, layers=2, bins=15)
    return [
        TwoHotHead(F, units=8, layers=1, bins=15, out_scale=1.0),
        BernoulliHead(F, units=6, layers=2),
        critic,
        SlowCritic(critic, rate=0.02),
        MSECritic(F, units=5, layers=1),
        DiscreteActor(F, 3, units=8, layers=1),
        BoundedNormalActor(F, 2, units=4, layers=2),
        TanhNormalActor(F, 2, units=4, layers=1),
        TruncNormalActor(F, 2, units=4, layers=1),
    ]


def _stats(dist) -> torch.Tensor:
    return dist.mean if not hasattr(dist, "logits") else dist.logits


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 8), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_heads_on_equals_each_head_alone_values_and_gradients(picks, seed):
    torch.manual_seed(seed)
    heads = _all_heads()
    for head in heads:
        for p in head.parameters():
            if p.requires_grad:
                torch.nn.init.normal_(p, 0.0, 0.3)  # the zero-initialised outputs too
    chosen = [heads[i] for i in picks]
    feat = torch.randn(7, 3, F, requires_grad=True)
    fused = heads_on(feat, *chosen)
    alone = [head(feat) for head in chosen]
    params = list({id(p): p for h in chosen for p in h.parameters() if p.requires_grad}.values())
    grads = []
    for dists in (fused, alone):
        assert [type(d) for d in dists] == [type(d) for d in alone]
        loss = sum(_stats(d).float().square().sum() for d in dists)
        grads.append(torch.autograd.grad(loss, [feat, *params], allow_unused=True))
        for d, ref in zip(dists, alone, strict=True):
            torch.testing.assert_close(_stats(d), _stats(ref), rtol=1e-5, atol=1e-6)
    for g, ref in zip(*grads, strict=True):
        if ref is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)


def test_mlps_on_fuses_the_first_layers_into_one_matmul():
    torch.manual_seed(0)
    mlps = [
        MLP(F, 4, units=8, layers=1),
        MLP(F, 1, units=6, layers=2),
        MLP(F, None, units=5, layers=0),
    ]
    x = torch.randn(9, F)
    shapes = []

    class Watch(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.addmm.default and args[1].shape[-1] == F:
                shapes.append(tuple(args[2].shape))
            return func(*args, **(kwargs or {}))

    with Watch():
        outs = mlps_on(x, mlps)
    assert shapes == [(F, 8 + 6)]  # one matmul for both first layers; the empty MLP as it is
    assert [o.shape for o in outs] == [(9, 4), (9, 1), (9, F)]
    for out, mlp in zip(outs, mlps, strict=True):
        torch.testing.assert_close(out, mlp(x))


@pytest.mark.parametrize("count", [0, 1])
def test_mlps_on_with_fewer_than_two_layers_to_fuse_calls_them_as_they_are(count):
    mlps = [MLP(F, 3, units=4, layers=1)][:count] + [MLP(F, None, units=4, layers=0)]
    x = torch.randn(2, F)
    for out, mlp in zip(mlps_on(x, mlps), mlps, strict=True):
        torch.testing.assert_close(out, mlp(x))


def test_mlps_on_names_an_input_width_that_a_first_layer_does_not_take():
    mlps = [MLP(F, 3, units=4, layers=1), MLP(F + 1, 3, units=4, layers=1)]
    with pytest.raises(ValueError, match=r"12 features.*\[12, 13\]"):
        mlps_on(torch.randn(2, F), mlps)
