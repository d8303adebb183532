"""Golden checks of wmblocks' DreamerV3 (2024) behaviour losses against the official
``agent.imag_loss`` and ``agent.repl_loss``: the ``imag_disc/``, ``imag_cont/`` and
``repval/`` cases of ``dreamerv3_2024.npz`` (see ``shared/golden/README.md``).

:func:`wmblocks.losses.imagination_loss_v3` and :func:`replay_value_loss_v3` are pure
functions of the heads' outputs, so the stored inputs (rewards, continue probabilities,
policy and value logits, actions) are fed in directly; no network and no RNG is involved.
The imagination cases run three consecutive calls ``u0, u1, u2`` through one shared
:class:`~wmblocks.nn.normalize.ReturnNormalizer`, as the reference's return normaliser
(percentile EMAs starting at 0, no debiasing, updated before it is used).

Name map: reference ``policy_loss`` / ``value_loss`` / ``adv`` are our ``loss_actor`` /
``loss_critic`` / ``advantage``; the reference's ``weight`` has H+1 entries, as ours.

Tolerances: returns and values (up to 660 here) agree to 2e-6 relative, losses, weights
and the normaliser's state to 1e-6, so rtol 1e-5 / atol 1e-5; advantages and the actor
loss, differences of those large numbers, use the README's safe bound rtol 1e-4 /
atol 1e-5. The twohot value predictions use the stored bins (wmblocks' own bins differ
from them by up to 1.3e-6 relative).
"""

import pytest
import torch.nn.functional as F
from torch.testing import assert_close

from tests.golden.conftest import t
from wmblocks.dists import Normal, OneHotStraightThrough, TwoHotSymlog
from wmblocks.losses.behavior import imagination_loss_v3, replay_value_loss_v3
from wmblocks.nn.normalize import ReturnNormalizer

TOL = dict(rtol=1e-5, atol=1e-5)
# Advantages (and the actor loss, which scales them) are differences of returns and values
# of order 600, whose float32 resolution is 6e-5: up to 3e-5 absolute error on values of
# order 1 (half of TOL), so they get the README's safe bound.
ADV_TOL = dict(rtol=1e-4, atol=1e-5)
CALLS = ("u0", "u1", "u2")
# The 2024 recipe's imagination settings (official ``imag_loss`` config).
GAMMA, LAM, ETA, SLOWREG, HORIZON = 1.0, 0.95, 3e-4, 1.0, 333
DECAY, PERC_LO, PERC_HI, LIMIT = 0.99, 0.05, 0.95, 1.0
DISC = 1.0 - 1.0 / HORIZON  # replay value loss discount (contdisc)


def test_config_matches_the_settings_used(golden):
    """The reference's ``imag_loss`` / ``repl_loss`` config is what these tests pass, and
    :class:`ReturnNormalizer`'s defaults (what the recipe builds) are its retnorm."""
    cfg = {k[len("imag/config/") :]: v for k, v in golden.items() if k.startswith("imag/config/")}
    assert float(cfg["lam"]) == pytest.approx(LAM)
    assert float(cfg["actent"]) == pytest.approx(ETA)
    assert float(cfg["slowreg"]) == SLOWREG
    assert not cfg["slowtar"]  # targets from the current critic, not the slow one
    assert cfg["contdisc"]  # continue targets hold 1 - 1/horizon, so gamma is 1
    assert float(cfg["horizon"]) == HORIZON
    assert 1.0 - float(cfg["retnorm_rate"]) == pytest.approx(DECAY)
    assert float(cfg["retnorm_limit"]) == LIMIT
    assert float(cfg["retnorm_perclo"]) / 100 == pytest.approx(PERC_LO)
    assert float(cfg["retnorm_perchi"]) / 100 == pytest.approx(PERC_HI)
    norm = ReturnNormalizer()
    assert norm.decay == pytest.approx(DECAY) and norm.limit == LIMIT
    assert (norm.perc_low, norm.perc_high) == (PERC_LO, PERC_HI)
    assert float(golden["repval/config/lam"]) == pytest.approx(LAM)
    assert float(golden["repval/config/slowreg"]) == SLOWREG
    assert not golden["repval/config/slowtar"]
    assert float(golden["repval/config/horizon"]) == HORIZON


def _policy(golden, case, prefix):
    """The stored policy over the H+1 states and the stored actions in our form."""
    if case == "imag_disc":
        logits = t(golden[f"{prefix}/policy_logits"])  # [N, H+1, 3]
        action = F.one_hot(t(golden[f"{prefix}/act"]).long(), logits.shape[-1]).float()
        return OneHotStraightThrough(logits, unimix=0.0), action  # 2024: no unimix
    mean, std = t(golden[f"{prefix}/policy_mean"]), t(golden[f"{prefix}/policy_std"])
    return Normal(mean, std), t(golden[f"{prefix}/act"])


@pytest.mark.parametrize("case", ["imag_disc", "imag_cont"])
def test_imagination_loss_matches_reference(golden, case):
    """Three consecutive ``imag_loss`` calls with one return normaliser: returns,
    weights, the normaliser's state after each update, advantages, log pi, entropies and
    the actor and critic losses."""
    bins = t(golden["twohot/bins"])
    normalizer = ReturnNormalizer(DECAY, PERC_LO, PERC_HI, LIMIT)
    for call in CALLS:
        p = f"{case}/{call}"
        critic = TwoHotSymlog(t(golden[f"{p}/value_logits"]), bins)
        value = critic.mean
        slow = TwoHotSymlog(t(golden[f"{p}/slowvalue_logits"]), bins).mean
        assert_close(value, t(golden[f"{p}/val"]), **TOL)
        assert_close(slow, t(golden[f"{p}/slowval"]), **TOL)
        policy, action = _policy(golden, case, p)
        out = imagination_loss_v3(
            action=action,
            reward=t(golden[f"{p}/rew"]),
            cont=t(golden[f"{p}/con"]),
            value=value,
            policy=policy,
            critic=critic,
            slow_value=slow,
            normalizer=normalizer,
            gamma=GAMMA,
            lam=LAM,
            eta=ETA,
            slowreg=SLOWREG,
            backprop=False,
        )
        horizon = out["return"].shape[1]
        assert horizon == 5
        assert_close(out["return"], t(golden[f"{p}/ret"]), **TOL)
        assert_close(out["weight"], t(golden[f"{p}/weight"]), **TOL)
        assert_close(normalizer.low, t(golden[f"{p}/retnorm_lo"]), **TOL)
        assert_close(normalizer.high, t(golden[f"{p}/retnorm_hi"]), **TOL)
        assert_close(normalizer.low, t(golden[f"{p}/retnorm_offset"]), **TOL)
        assert_close(normalizer.scale(), t(golden[f"{p}/retnorm_scale"]), **TOL)
        assert_close(out["advantage"], t(golden[f"{p}/adv"]), **ADV_TOL)
        logpi = policy.log_prob(action)[:, :horizon]
        assert_close(logpi, t(golden[f"{p}/logpi"]), **TOL)
        assert_close(policy.entropy()[:, :horizon], t(golden[f"{p}/ent"]), **TOL)
        assert_close(out["loss_actor"], t(golden[f"{p}/policy_loss"]), **ADV_TOL)
        assert_close(out["loss_critic"], t(golden[f"{p}/value_loss"]), **TOL)


def test_imagination_normalizer_scale_exceeds_limit(golden):
    """The stored calls exercise both sides of max(1, hi - lo): the first call's range
    is below the limit, a later one above it (else the advantage's division by the
    scale would go unchecked)."""
    for case in ("imag_disc", "imag_cont"):
        scales = [float(golden[f"{case}/{c}/retnorm_scale"]) for c in CALLS]
        assert scales[0] == LIMIT and max(scales) > LIMIT, (case, scales)


def test_replay_value_loss_matches_reference(golden):
    """``repl_loss``: lambda returns bootstrapped from the imagined returns ``boot``,
    discount 1 - 1/333, cut at ``is_last``; twohot critic loss on the return and the slow
    critic's prediction, weighted by 1 - is_last."""
    bins = t(golden["twohot/bins"])
    critic = TwoHotSymlog(t(golden["repval/value_logits"]), bins)
    slow = TwoHotSymlog(t(golden["repval/slowvalue_logits"]), bins).mean
    assert_close(critic.mean, t(golden["repval/val"]), **TOL)
    assert_close(slow, t(golden["repval/slowval"]), **TOL)
    is_last = t(golden["repval/is_last"])
    out = replay_value_loss_v3(
        critic=critic,
        slow_value=slow,
        reward=t(golden["repval/rew"]),
        is_last=is_last,
        is_terminal=t(golden["repval/is_terminal"]),
        boot=t(golden["repval/boot"]),
        gamma=DISC,
        lam=LAM,
        slowreg=SLOWREG,
    )
    assert_close(out["return"], t(golden["repval/ret"]), **TOL)
    assert_close(out["loss_repval"], t(golden["repval/loss"]), **TOL)
    assert_close(1.0 - is_last.float(), t(golden["repval/weight"]), rtol=0, atol=0)
    assert is_last[:, :-1].any()  # the weight zeroes some loss steps
    assert not out["loss_repval"][is_last[:, :-1]].any()
