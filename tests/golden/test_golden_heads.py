"""Golden checks of wmblocks' policy, value and continue heads against the official
DreamerV3 (2024) ``MLPHead`` (2 layers of 16 units, RMS norm, SiLU): the ``heads/`` case
of ``dreamerv3_2024.npz`` (``pol_cont`` bounded_normal, ``pol_disc`` categorical without
unimix, ``val`` symexp_twohot, ``con`` binary; see ``shared/golden/README.md``).

Each head runs twice: on ``x`` as given, and with ``x`` read as the reference's feature
``concat([deter, stoch])`` (deter 16, stoch 8) and fed as wmblocks' ``features(deter,
stoch) = concat([stoch, deter])``, with the first layer's kernel rows permuted by
:func:`tests.golden.load.head_kernel_rows`: the permutation the world-model heads need.

Tolerances: the outputs are of order 1 and agree to about 1e-7, so rtol 1e-5 / atol 1e-6
(the README's safe bound is rtol 1e-4 / atol 1e-5); the value prediction (up to 3e5 here)
uses wmblocks' own bins, 2e-6 relative from the reference's, and rtol 2e-5.
"""

import pytest
import torch
from torch.testing import assert_close

from tests.golden import load
from tests.golden.conftest import t
from wmblocks.dists import TwoHotSymlog
from wmblocks.nn.rssm import features

TOL = dict(rtol=1e-5, atol=1e-6)
SPLIT = (16, 8)  # the reference's x = concat([deter (16), stoch (8)])


def _input(golden, feat_split):
    x = t(golden["heads/x"])
    if feat_split is None:
        return x
    deter, stoch = x.split(feat_split, -1)
    return features(deter, stoch)


pytestmark = pytest.mark.parametrize("feat_split", [None, SPLIT], ids=["x", "features"])


def test_bounded_normal_policy_matches_reference(golden, feat_split):
    """mean = tanh(m), std = 0.9 sigmoid(s + 2) + 0.1; the official ``mean`` and
    ``stddev`` output linears are our one output layer's two halves."""
    actor = load.build_pol_cont(golden, feat_split)
    dist = actor(_input(golden, feat_split))
    assert_close(dist.mean, t(golden["heads/pol_cont/mean"]), **TOL)
    assert_close(dist.scale, t(golden["heads/pol_cont/std"]), **TOL)


def test_discrete_policy_matches_reference(golden, feat_split):
    """Categorical logits (no unimix in the 2024 categorical policy)."""
    actor = load.build_pol_disc(golden, feat_split)
    x = _input(golden, feat_split)
    ref = t(golden["heads/pol_disc/logits"])
    assert_close(actor.mlp(x), ref, **TOL)
    dist = actor(x)
    assert_close(dist.logits, ref.log_softmax(-1), **TOL)
    assert_close(dist.probs, ref.softmax(-1), **TOL)


def test_value_head_matches_reference(golden, feat_split):
    """Twohot logits over the 2024 symexp bins and the raw-space prediction."""
    head = load.build_val(golden, feat_split)
    dist = head(_input(golden, feat_split))
    assert_close(dist.logits, t(golden["heads/val/logits"]), **TOL)
    assert_close(dist.mean, t(golden["heads/val/pred"]), rtol=2e-5, atol=1e-5)
    # With the reference's stored bins only the logits' rounding remains.
    same_bins = TwoHotSymlog(dist.logits, t(golden["twohot/bins"]))
    assert_close(same_bins.mean, t(golden["heads/val/pred"]), rtol=1e-5, atol=1e-5)


def test_continue_head_matches_reference(golden, feat_split):
    """Bernoulli logit and prob1."""
    head = load.build_con(golden, feat_split)
    dist = head(_input(golden, feat_split))
    assert_close(dist.logits, t(golden["heads/con/logit"]), **TOL)
    assert_close(dist.mean, t(golden["heads/con/prob1"]), **TOL)
    assert torch.equal(dist.mode, (t(golden["heads/con/logit"]) > 0).float())
