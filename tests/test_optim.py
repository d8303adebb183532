import dataclasses

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import seeded_randn
from wmblocks.optim import V2_OPTIM, AdamConfig, LaPropAGC, adam, laprop_agc

F32 = np.float32


def reference_laprop(params, grads_per_step, lr, agc, pmin, b1, b2, eps, warmup):
    """The update written out per parameter, as the docstring and the reference chain.

    Its scalars are float32 as in the official optax chain (golden README, "Tolerances";
    ``tests/golden/test_golden_optim.py`` pins them to the official values): the bias
    corrections 1 - beta^t, and the warmup ramp of ``optax.linear_schedule(0, lr, warmup)``,
    lr - lr * (1 - count / warmup) with count = t - 1.
    """
    params = [p.clone() for p in params]
    nus = [torch.zeros_like(p) for p in params]
    mus = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        bc1 = float(F32(1) - F32(b1) ** F32(t))
        bc2 = float(F32(1) - F32(b2) ** F32(t))
        ramp = F32(1) - min(F32(t - 1) / F32(warmup), F32(1))
        step_lr = float(F32(-lr) * ramp + F32(lr))
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if agc:
                upper = agc * max(pmin, p.norm().item())
                g = g / max(1.0, g.norm().item() / upper)
            nus[i] = b2 * nus[i] + (1 - b2) * g * g
            u = g / ((nus[i] / bc2).sqrt() + eps)
            mus[i] = b1 * mus[i] + (1 - b1) * u
            params[i] = p - step_lr * mus[i] / bc1
    return params


@given(
    seeded_randn((3, 4)),
    seeded_randn((5,)),
    st.lists(
        st.tuples(seeded_randn((3, 4), scale=10.0), seeded_randn((5,), scale=0.01)),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([0.0, 0.3]),
    st.sampled_from([1, 3]),
)
def test_laprop_agc_matches_the_written_out_update(w, b, grads, agc, warmup):
    params = [w.clone().requires_grad_(True), b.clone().requires_grad_(True)]
    opt = LaPropAGC(params, lr=0.1, agc=agc, eps=1e-20, warmup=warmup)
    for gw, gb in grads:
        params[0].grad, params[1].grad = gw.clone(), gb.clone()
        opt.step()
    ref = reference_laprop([w, b], grads, 0.1, agc, 1e-3, 0.9, 0.999, 1e-20, warmup)
    for p, r in zip(params, ref, strict=True):
        torch.testing.assert_close(p.detach(), r)


def test_laprop_agc_scalars_are_float32_as_the_reference():
    """Reference value: at t = 1, 1 - beta2^t is 1 - float32(0.999) = 0.0009999871253967285
    in the official code, not 1e-3. One step with g = 1, beta1 = 0 (so m = u), lr 1, no
    warmup: nu = 1e-3 and p = -u = -sqrt(0.0009999871253967285 / 1e-3) = -0.99999356..."""
    p = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
    opt = LaPropAGC([p], lr=1.0, agc=0.0, beta1=0.0, warmup=0)
    p.grad = torch.ones((), dtype=torch.float64)
    opt.step()
    expected = torch.tensor(-((0.0009999871253967285 / (1 - 0.999)) ** 0.5), dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=0)
    assert abs(p.item() + 1.0) > 6e-6  # float64 constants would give -1 to 1e-15


def test_warmup_starts_at_zero_and_agc_bounds_the_gradient():
    p = torch.nn.Parameter(torch.ones(4))
    opt = LaPropAGC([p], lr=1.0, warmup=10)
    p.grad = torch.full((4,), 1e6)
    norm = opt.step()
    assert torch.equal(p.detach(), torch.ones(4))  # first update: lr * 0
    torch.testing.assert_close(norm, torch.tensor(2e6))
    # AGC: the clipped gradient has norm 0.3 * |p| = 0.6; nu holds (1 - 0.999) g^2.
    nu = opt.state[p]["nu"]
    torch.testing.assert_close(nu.sum().sqrt(), torch.tensor(0.6 * 0.001**0.5))


# DreamerV2's configs, and the same with a decay large enough to dominate the Adam step.
V2_CONFIGS = [
    *V2_OPTIM.values(),
    *(dataclasses.replace(c, weight_decay=0.01) for c in V2_OPTIM.values()),
]


def reference_v2_adam(params, grads_per_step, cfg: AdamConfig, b1=0.9, b2=0.999):
    """DreamerV2's ``Optimizer.__call__`` (danijar/dreamerv2, common/other.py) written out:
    global norm, clip (torch's clip_grad_norm_ coefficient clip / (norm + 1e-6); the TF
    code's clip / max(norm, clip) differs by 1e-6 / norm relative), then every variable
    times (1 - wd), then one Adam step (torch's eps placement)."""
    params = [p.clone() for p in params]
    ms = [torch.zeros_like(p) for p in params]
    vs = [torch.zeros_like(p) for p in params]
    norms = []
    for t, grads in enumerate(grads_per_step, start=1):
        norm = sum(float(g.square().sum()) for g in grads) ** 0.5
        norms.append(norm)
        coef = min(1.0, cfg.clip / (norm + 1e-6))
        for i, g in enumerate(grads):
            g = g * coef
            p = params[i] * (1 - cfg.weight_decay)
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            m_hat = ms[i] / (1 - b1**t)
            v_hat = vs[i] / (1 - b2**t)
            params[i] = p - cfg.lr * m_hat / (v_hat.sqrt() + cfg.eps)
    return params, norms


@given(
    seeded_randn((3, 4)),
    seeded_randn((5,)),
    st.sampled_from(V2_CONFIGS),
    st.integers(1, 3),
)
def test_v2_weight_decay_is_one_minus_wd_per_step_whatever_the_lr(w, b, cfg, steps):
    """With zero gradients Adam moves nothing, so after n steps p = p (1 - wd)^n exactly
    (multiplied step by step). torch's AdamW would give p (1 - lr wd)^n, 1e4 times less
    decay at lr 1e-4."""
    params = [torch.nn.Parameter(w.clone()), torch.nn.Parameter(b.clone())]
    opt = adam(params, cfg)
    expected = [w.clone(), b.clone()]
    for _ in range(steps):
        for p in params:
            p.grad = torch.zeros_like(p)
        assert opt.step() == 0
        expected = [e * (1 - cfg.weight_decay) for e in expected]
    for p, e in zip(params, expected, strict=True):
        assert torch.equal(p.detach(), e)
    assert not torch.equal(params[0].detach(), w)  # the decay is visible in float64


@given(
    seeded_randn((3, 4)),
    seeded_randn((5,)),
    st.lists(
        st.tuples(seeded_randn((3, 4)), seeded_randn((5,))),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from([1e-3, 1.0, 100.0]),
    st.sampled_from(V2_CONFIGS),
)
def test_v2_step_is_clip_then_decay_then_adam(w, b, grads, gscale, cfg):
    """Nonzero gradients (clipped when gscale is 100: norm ~ 1200 > clip 100): each step
    is p <- (1 - wd) p followed by Adam on the clipped gradient, in that order."""
    grads = [(gscale * gw, gscale * gb) for gw, gb in grads]
    params = [torch.nn.Parameter(w.clone()), torch.nn.Parameter(b.clone())]
    opt = adam(params, cfg)
    norms = []
    for gw, gb in grads:
        params[0].grad, params[1].grad = gw.clone(), gb.clone()
        norms.append(opt.step())
        assert all(p.grad is None for p in params)
    ref, ref_norms = reference_v2_adam([w, b], grads, cfg)
    torch.testing.assert_close(torch.stack(norms), torch.tensor(ref_norms).double())
    for p, r in zip(params, ref, strict=True):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)


def test_wrappers_step_zero_grads_and_report_the_norm():
    model = torch.nn.Linear(3, 1)
    opt = adam(model.parameters(), V2_OPTIM["critic"])
    assert type(opt.opt) is torch.optim.Adam and opt.clip == 100.0
    assert opt.weight_decay == 1e-6 and opt.opt.defaults["weight_decay"] == 0
    model(torch.full((2, 3), 1e4)).sum().backward()
    norm = opt.step()
    assert norm > 100 and all(p.grad is None for p in model.parameters())
    opt2 = laprop_agc(model.parameters())
    model(torch.ones(2, 3)).sum().backward()
    assert opt2.step() > 0 and all(p.grad is None for p in model.parameters())


def test_compiled_laprop_step_equals_eager_and_compiles_once():
    """LaPropAGC.compile(): the same parameters, moments and counts as the eager step over
    five steps (one skipped for a NaN gradient, one masked by skip=True), and one graph
    for all of them (the count is a tensor: no recompilation per step)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    torch.manual_seed(0)
    shapes = [(8, 5), (5,), (3, 2, 4)]
    eager = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    comp = [torch.nn.Parameter(p.detach().clone()) for p in eager]
    opts = [LaPropAGC(eager, lr=1e-2, warmup=2), LaPropAGC(comp, lr=1e-2, warmup=2)]
    opts[1].compile(backend=counter)
    for step in range(5):
        grads = [torch.randn(s) for s in shapes]
        if step == 2:
            grads[1][0] = float("nan")
        for params, opt in zip((eager, comp), opts, strict=True):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step(skip=torch.tensor(step == 3))
        for a, b in zip(eager, comp, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
            for key in ("nu", "mu", "step"):
                torch.testing.assert_close(opts[0].state[a][key], opts[1].state[b][key])
    assert float(opts[1].state[comp[0]]["step"]) == 3.0  # steps 2 and 3 did not count
    assert counter.frame_count == 1
