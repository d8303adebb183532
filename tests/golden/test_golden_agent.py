"""Golden checks of wmblocks' DreamerV3 (2024) vector encoder / decoder and world-model
loss against the official code: the ``encdec/`` case (``rssm.Encoder`` and
``rssm.Decoder``) and the world-model part of the ``agent/`` case (``Agent.loss``) of
``dreamerv3_2024.npz`` (see ``shared/golden/README.md``).

The agent's world model is ``presets.world_model_v3`` (2024) at the golden sizes with
every official parameter of ``agent/params/{dyn,enc,dec,rew,con}`` copied in
(:func:`tests.golden.load.build_agent_world_model`). The posterior samples come from
JAX's RNG, so the posterior head's ``sample`` is swapped for one that returns the stored
``repfeat/stoch`` of each step; :func:`wmblocks.losses.world_model_loss_v3` then runs
on the reference's path, and its per-(b, t) terms are compared with ``agent/losses``.

The reference's ``policy``, ``value`` and ``repval`` losses depend on the samples JAX
draws inside imagination (actions and prior latents), which torch cannot reproduce:
they are not recomputed here (``test_golden_imagination`` checks those losses on stored
imagined inputs). They enter only as given numbers, to check the total's reduction.

Tolerances: tokens, deter, logits and predictions (order 1) agree to 6e-7 absolute, the
losses (up to 114) to 4e-6 absolute, 5e-7 relative, so rtol 1e-5 / atol 1e-5 (the
README's safe bound is rtol 1e-4 / atol 1e-5).
"""

import pytest
import torch
from tensordict import TensorDict
from torch.testing import assert_close

from tests.golden import load
from tests.golden.conftest import t
from wmblocks import keys
from wmblocks.losses.world_model import (
    CONT_TARGET_2024,
    V3_2024_SCALES,
    total_loss,
    world_model_loss_v3,
)
from wmblocks.nn.encoders import VectorDecoder, VectorEncoder
from wmblocks.nn.rssm import features
from wmblocks.presets import V3_2024, v3_revision

TOL = dict(rtol=1e-5, atol=1e-5)
FREE = 1.0  # free bits of dyn and rep
# The reference's loss names -> wmblocks' (``loss_<name>``).
WM_TERMS = {"vector": "obs", "rew": "reward", "con": "cont", "dyn": "dyn", "rep": "rep"}
# The behaviour terms and the scales the V3 recipe gives them (recipes/dreamer_v3.py:
# total_loss(beh, {"actor": 1.0, "critic": 1.0}) and rev.repval_scale).
AC_TERMS = {"policy": ("actor", 1.0), "value": ("critic", 1.0), "repval": ("repval", 0.3)}


def _encdec(golden):
    enc = VectorEncoder(load.OBS_SIZE, units=16, layers=2, norm="rms", act="silu")
    dec = VectorDecoder(load.S * load.C + load.D, load.OBS_SIZE, units=16, layers=2)
    load.load_vector_encoder(enc.mlp, golden, "encdec/params/enc")
    load.load_vector_decoder(dec.mlp, golden, "encdec/params/dec")
    return enc, dec


def test_vector_encoder_matches_reference(golden):
    """symlog(obs) -> 2 x (Linear, RMSNorm, SiLU) gives the tokens."""
    enc, _ = _encdec(golden)
    obs = t(golden["encdec/obs"])
    assert obs.abs().max() > 1  # symlog is not the identity here
    assert_close(enc(obs), t(golden["encdec/tokens"]), **TOL)


def test_vector_decoder_matches_reference(golden):
    """The decoder reads concat([stoch_flat, deter]) (wmblocks' feature order): its
    prediction is in symlog space and its loss is the symlog squared error summed over
    the features."""
    _, dec = _encdec(golden)
    feat = features(t(golden["encdec/deter"]), t(golden["encdec/stoch"]).flatten(-2))
    dist = dec(feat)
    assert_close(dist.pred, t(golden["encdec/pred"]), **TOL)
    assert_close(-dist.log_prob(t(golden["encdec/obs"])), t(golden["encdec/loss"]), **TOL)


class Replay:
    """Stands in for the posterior head's ``sample``: returns the stored sample of step
    i (``samples[:, i]`` flattened to ``[B, S*C]``) on the i-th call."""

    def __init__(self, samples: torch.Tensor):
        self.samples = samples  # [B, T, S, C]
        self.calls = 0

    def __call__(self, stats: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.samples[:, self.calls - 1].flatten(-2)


def _batch(golden) -> TensorDict:
    """The agent's replay batch in wmblocks' keys. The reference is given a_{t-1}
    (``prevact``, zero where is_first); wmblocks' batch holds a_t and shifts it, so
    action[:, t] = prevact[:, t + 1] (the last action is never read)."""
    prevact = t(golden["agent/prevact"])
    action = torch.cat([prevact[:, 1:], torch.zeros_like(prevact[:, :1])], 1)
    obs = {k[len("agent/obs/") :]: t(v) for k, v in golden.items() if k.startswith("agent/obs/")}
    assert sorted(obs) == ["is_first", "is_last", "is_terminal", "reward", "vector"]
    assert obs["is_first"][:, 0].all()  # the (zero) carry of the reference is never read
    return TensorDict(
        {
            "vector": obs["vector"],
            keys.ACTION: action,
            keys.REWARD: obs["reward"],
            keys.IS_FIRST: obs["is_first"],
            keys.IS_LAST: obs["is_last"],
            keys.IS_TERMINAL: obs["is_terminal"],
        },
        [2, 4],
    )


@pytest.fixture(scope="module")
def agent_losses(golden):
    """``world_model_loss_v3`` of the golden world model on the agent batch, replaying
    the reference's posterior samples."""
    wm = load.build_agent_world_model(golden)
    n_golden = sum(
        v.size
        for k, v in golden.items()
        if k.startswith("agent/params/") and k.split("/")[2] in ("dyn", "enc", "dec", "rew", "con")
    )
    assert sum(p.numel() for p in wm.parameters()) == n_golden  # all loaded, nothing else
    replay = Replay(t(golden["agent/repfeat/stoch"]))
    wm.rssm.post_head.sample = replay
    try:
        with torch.no_grad():
            td = world_model_loss_v3(wm, _batch(golden), free=FREE, cont_target=CONT_TARGET_2024)
    finally:
        del wm.rssm.post_head.sample
    assert replay.calls == 4
    return td


def test_agent_posterior_path_matches_reference(golden, agent_losses):
    """Tokens, deter and posterior logits of the replayed posterior path (resets at
    is_first, prevact as given)."""
    td = agent_losses
    prevact = t(golden["agent/prevact"])
    keep = (~td[keys.IS_FIRST]).float().unsqueeze(-1)
    assert torch.equal(torch.cat([prevact[:, :1], td[keys.ACTION][:, :-1]], 1) * keep, prevact)
    assert_close(td[keys.EMBED], t(golden["agent/tokens"]), **TOL)
    assert_close(td[keys.DETER], t(golden["agent/repfeat/deter"]), **TOL)
    assert_close(td[keys.POST], t(golden["agent/repfeat/logit"]), **TOL)
    assert torch.equal(td[keys.STOCH], t(golden["agent/repfeat/stoch"]).flatten(-2))


@pytest.mark.parametrize("name", list(WM_TERMS))
def test_agent_world_model_losses_match_reference(golden, agent_losses, name):
    """Per-(b, t) world-model terms: decoder symlog MSE, reward twohot NLL, continue
    Bernoulli NLL of (1 - is_terminal)(1 - 1/333), dyn and rep (free bits 1)."""
    ours = agent_losses[keys.loss_key(WM_TERMS[name])]
    assert_close(ours, t(golden[f"agent/losses/{name}"]), **TOL)


def test_agent_loss_scales_and_total_match_reference(golden, agent_losses):
    """The reference's loss scales are wmblocks' V3_2024_SCALES plus the recipe's actor,
    critic and repval scales, and ``loss_total = sum_k scale_k mean(loss_k)``. The
    policy, value and repval terms depend on JAX's RNG in imagination: they enter as the
    stored numbers, not recomputed."""
    prefix = "agent/loss_scales/"
    scales = {k[len(prefix) :]: float(v) for k, v in golden.items() if k.startswith(prefix)}
    assert scales.keys() == WM_TERMS.keys() | AC_TERMS.keys()
    assert v3_revision(2024) is V3_2024 and V3_2024.scales == V3_2024_SCALES
    for name, ours in WM_TERMS.items():
        assert V3_2024_SCALES[ours] == pytest.approx(scales[name]), name
    assert V3_2024.repval_scale == pytest.approx(scales["repval"])
    for name, (_, scale) in AC_TERMS.items():
        assert scale == pytest.approx(scales[name]), name
    wm_total, _ = total_loss(agent_losses, V3_2024_SCALES)
    ac_total = sum(
        scale * t(golden[f"agent/losses/{name}"]).mean() for name, (_, scale) in AC_TERMS.items()
    )
    assert_close(wm_total + ac_total, t(golden["agent/loss_total"]), rtol=1e-5, atol=1e-5)
