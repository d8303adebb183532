import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import seeded_randn
from wmblocks.optim import V2_OPTIM, LaPropAGC, adam, laprop_agc


def reference_laprop(params, grads_per_step, lr, agc, pmin, b1, b2, eps, warmup):
    """The update written out per parameter, as the docstring and the reference chain."""
    params = [p.clone() for p in params]
    nus = [torch.zeros_like(p) for p in params]
    mus = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if agc:
                upper = agc * max(pmin, p.norm().item())
                g = g / max(1.0, g.norm().item() / upper)
            nus[i] = b2 * nus[i] + (1 - b2) * g * g
            u = g / ((nus[i] / (1 - b2**t)).sqrt() + eps)
            mus[i] = b1 * mus[i] + (1 - b1) * u
            step_lr = lr * min(1.0, (t - 1) / warmup)
            params[i] = p - step_lr * mus[i] / (1 - b1**t)
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


def test_wrappers_step_zero_grads_and_report_the_norm():
    model = torch.nn.Linear(3, 1)
    opt = adam(model.parameters(), V2_OPTIM["critic"])
    assert isinstance(opt.opt, torch.optim.AdamW) and opt.clip == 100.0
    model(torch.full((2, 3), 1e4)).sum().backward()
    norm = opt.step()
    assert norm > 100 and all(p.grad is None for p in model.parameters())
    opt2 = laprop_agc(model.parameters())
    model(torch.ones(2, 3)).sum().backward()
    assert opt2.step() > 0 and all(p.grad is None for p in model.parameters())
