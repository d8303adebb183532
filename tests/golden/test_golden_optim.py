"""LaPropAGC against the official DreamerV3 (2024) optimiser: cases ``opt`` and ``opt_fast``.

The golden arrays (``shared/golden/README.md``, "opt/ , opt_fast/") are five steps of the
official optax chain ``Agent._make_opt`` (AGC 0.3 per tensor -> RMS scaling -> momentum ->
warmed-up learning rate) on three float32 tensors, ``lin/bias`` starting at zero so that
AGC's pmin 1e-3 is exercised; ``grad2`` is x100 so that AGC clips. ``opt`` uses the official
settings (lr 4e-5, warmup 1000), ``opt_fast`` lr 1e-2 and warmup 2.

After each step k we compare, per tensor x with golden value e, within
``|x - e| <= tol * (|e| + max|e|)`` (relative to the element and to the tensor's scale, so
that elements near zero, where momentum cancels, are not held to a precision their
tensor never had):

* ``nu{k+1}``, ``mu{k+1}``: the optimiser state of a float32 run, tol 1e-6.
* ``update{k}``: the applied update, tol 1e-6. The official updates of ``opt`` are ~1e-8
  on parameters of order 1, below float32's resolution of the parameters, so
  ``params_after - params_before`` of the float32 run cannot show them. A second run of
  the same optimiser on float64 copies of the parameters (same float32 gradients) gives
  the applied update exactly as ``p64_after - p64_before``.
* ``params{k+1}``: the float32 run's parameters, atol 1e-7.

Measured: the largest error is 2.4e-7 of the tensor's scale (elementwise, at most 6.3e-6
relative on elements near zero), i.e. float32 rounding. The tolerances are below the
~1e-5 by which float64 bias corrections or a float64 warmup ramp would differ (README,
"Tolerances"), so those are checked too.
"""

import numpy as np
import pytest
import torch

from tests.golden.conftest import t
from wmblocks.optim import LaPropAGC

NAMES = ("lin/kernel", "lin/bias", "norm/scale")
SHAPES = {"lin/kernel": (4, 3), "lin/bias": (3,), "norm/scale": (5,)}
STEPS = 5
TOL = 1e-6  # nu, mu and update: see the module docstring
ATOL_PARAMS = 1e-7


def decimal(x) -> float:
    """The config value as the official code uses it: a Python float of the config's
    decimal (e.g. 0.9). The npz stores float32 (0.89999998); numpy prints the shortest
    decimal that round-trips, which is the config's decimal."""
    return float(str(np.float32(x)))


def config(golden, case):
    cfg = {k.split("/")[-1]: v for k, v in golden.items() if k.startswith(f"{case}/config/")}
    # The chain we implement: no weight decay, momentum on, constant schedule after warmup.
    assert cfg["wd"] == 0.0
    assert bool(cfg["momentum"]) is True
    assert str(cfg["schedule"]) == "const" and int(cfg["anneal"]) == 0
    return dict(
        lr=decimal(cfg["lr"]),
        agc=decimal(cfg["agc"]),
        eps=decimal(cfg["eps"]),
        beta1=decimal(cfg["beta1"]),
        beta2=decimal(cfg["beta2"]),
        warmup=int(cfg["warmup"]),
    )


def tensors(golden, prefix, dtype=torch.float32):
    out = [t(golden[f"{prefix}/{n}"]).to(dtype) for n in NAMES]
    assert [tuple(x.shape) for x in out] == [SHAPES[n] for n in NAMES]
    return out


def close(actual, expected, what, tol=TOL):
    """``|actual - expected| <= tol * (|expected| + max|expected|)`` elementwise."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    err = (actual - expected).abs()
    scale = expected.abs() + expected.abs().max()
    ok = bool((err <= tol * scale).all())
    assert ok, f"{what}: max error {err.max():.3e}, {(err / scale).max():.2e} of the scale > {tol}"


@pytest.mark.parametrize("case", ["opt", "opt_fast"])
def test_laprop_agc_matches_the_official_optimiser(golden, case):
    kwargs = config(golden, case)
    assert kwargs["warmup"] > 0  # so that the first update is exactly 0
    p32 = [torch.nn.Parameter(x) for x in tensors(golden, f"{case}/params0")]
    p64 = [torch.nn.Parameter(x) for x in tensors(golden, f"{case}/params0", torch.float64)]
    assert torch.count_nonzero(p32[NAMES.index("lin/bias")]) == 0  # AGC's pmin is used
    opt32 = LaPropAGC(p32, **kwargs)  # pmin: the reference default 1e-3
    opt64 = LaPropAGC(p64, **kwargs)
    for k in range(STEPS):
        grads = tensors(golden, f"{case}/grad{k}")
        before64 = [p.detach().clone() for p in p64]
        before32 = [p.detach().clone() for p in p32]
        for p, q, g in zip(p32, p64, grads, strict=True):
            p.grad, q.grad = g.clone(), g.double()
        opt32.step()
        opt64.step()
        updates = [a.detach() - b for a, b in zip(p64, before64, strict=True)]
        expected = {
            key: tensors(golden, f"{case}/{key}")
            for key in (f"nu{k + 1}", f"mu{k + 1}", f"update{k}", f"params{k + 1}")
        }
        for i, name in enumerate(NAMES):
            state = opt32.state[p32[i]]
            assert state["step"] == k + 1
            where = f"{case} step {k} {name}"
            close(state["nu"], expected[f"nu{k + 1}"][i], f"{where} nu")
            close(state["mu"], expected[f"mu{k + 1}"][i], f"{where} mu")
            close(updates[i], expected[f"update{k}"][i].double(), f"{where} update")
            torch.testing.assert_close(
                p32[i].detach(),
                expected[f"params{k + 1}"][i],
                rtol=0,
                atol=ATOL_PARAMS,
                msg=lambda m, where=where: f"{where} params: {m}",
            )
            if k == 0:  # warmup: lr * (t - 1) / warmup = 0 at the first step, exactly
                assert torch.count_nonzero(expected[f"update{k}"][i]) == 0
                assert torch.count_nonzero(updates[i]) == 0
                assert torch.equal(p32[i].detach(), before32[i])
