"""Golden checks of wmblocks' output distributions against the official DreamerV3 (2024)
code: the ``twohot/``, ``symlog_mse/`` and ``binary/`` cases of ``dreamerv3_2024.npz``
(``outs.TwoHot`` with the 2024 symexp bins, ``outs.Agg(outs.MSE(pred, symlog))`` and
``outs.Binary``; see ``shared/golden/README.md``).

Tolerances are float32: the README's rtol 1e-4 / atol 1e-5 or tighter where the values
allow; twohot ``pred`` on random logits reaches 1e7 and is compared relatively.
"""

import torch
from torch.testing import assert_close

from tests.golden.conftest import t
from wmblocks.dists import Bernoulli, SymlogMSE, TwoHotSymlog
from wmblocks.functional import symexp, symexp_twohot_bins, symlog


def test_twohot_pred_loss_and_grad_match_reference(golden):
    """pred = softmax . bins in raw space (row 0: uniform logits -> exactly 0), the NLL of
    the raw-space twohot target, and d sum(NLL) / d logits = softmax - twohot(target)."""
    logits = t(golden["twohot/logits"]).requires_grad_(True)
    dist = TwoHotSymlog(logits, t(golden["twohot/bins"]))
    pred = dist.mean
    assert pred[0].item() == 0.0  # exactly, not a rounding residue
    assert_close(pred.detach(), t(golden["twohot/pred"]), rtol=1e-5, atol=1e-6)
    loss = -dist.log_prob(t(golden["twohot/target"]))
    assert_close(loss.detach(), t(golden["twohot/loss"]), rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert_close(grad, t(golden["twohot/grad_logits"]), rtol=1e-5, atol=1e-6)


def test_twohot_default_bins_match_reference_bins(golden):
    """wmblocks' own 2024 bins: the stored ones up to XLA's expm1 last bits (rtol 5e-6),
    built as a negative half plus its mirror (exactly antisymmetric, middle bin 0)."""
    ref = t(golden["twohot/bins"])
    bins = symexp_twohot_bins()
    assert bins.shape == ref.shape == (255,) and bins.dtype == torch.float32
    assert_close(bins, ref, rtol=5e-6, atol=0.0)
    assert torch.equal(bins, -bins.flip(0)) and bins[127].item() == 0.0
    assert torch.equal(ref, -ref.flip(0)) and ref[127].item() == 0.0
    assert torch.all(bins[1:] > bins[:-1])
    # The default head bins give the same predictions (rows 4-13 peak near their targets).
    logits = t(golden["twohot/logits"])
    assert_close(TwoHotSymlog(logits).mean, t(golden["twohot/pred"]), rtol=1e-5, atol=1e-6)


def test_symlog_mse_matches_reference(golden):
    """loss_elem = (pred - symlog(target))^2, loss = its sum over the 5 features; the
    reference's ``pred()`` is the raw output in symlog space (``SymlogMSE.pred``), while
    wmblocks' ``mean`` / ``mode`` are that output symexp-ed back to raw space."""
    pred, target = t(golden["symlog_mse/pred"]), t(golden["symlog_mse/target"])
    elem = -SymlogMSE(pred, event_dims=0).log_prob(target)
    assert_close(elem, t(golden["symlog_mse/loss_elem"]), rtol=1e-6, atol=1e-6)
    dist = SymlogMSE(pred)
    assert_close(-dist.log_prob(target), t(golden["symlog_mse/loss"]), rtol=1e-6, atol=1e-6)
    assert torch.equal(dist.pred, t(golden["symlog_mse/pred_out"]))
    assert_close(symlog(dist.mean), t(golden["symlog_mse/pred_out"]), rtol=1e-5, atol=1e-6)
    assert torch.equal(dist.mode, symexp(dist.pred))


def test_binary_matches_reference(golden):
    """The continue head's Bernoulli: sigmoid cross-entropy with the soft target
    (1 - 1/333 = 0.996997), prob1 and pred = logit > 0."""
    logit, target = t(golden["binary/logit"]), t(golden["binary/target"])
    assert torch.isclose(target, torch.tensor(1.0 - 1.0 / 333.0), rtol=1e-6, atol=0.0).any()
    dist = Bernoulli(logit)
    assert_close(-dist.log_prob(target), t(golden["binary/loss"]), rtol=1e-6, atol=1e-6)
    assert_close(dist.mean, t(golden["binary/prob1"]), rtol=1e-6, atol=1e-7)
    assert torch.equal(dist.mode, t(golden["binary/pred"]).float())
