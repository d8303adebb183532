import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import VERSIONS, random_batch, tiny_world_model
from wmblocks import keys
from wmblocks.nn.rssm import features
from wmblocks.nn.world_model import shift_actions

SHAPES = {"observation": (5,)}
A = 2


@pytest.mark.parametrize("version", VERSIONS)
def test_observe_and_imagine_shapes(version):
    wm = tiny_world_model(version, SHAPES, A)
    td = wm.observe(random_batch(SHAPES, A, B=3, T=6))
    D, Z = wm.rssm.deter, wm.rssm.stoch_dim
    assert td[keys.DETER].shape == (3, 6, D) and td[keys.STOCH].shape == (3, 6, Z)
    stats = (3, 6, 2, 8) if version == "v1" else (3, 6, 4, 4)
    assert td[keys.POST].shape == stats and td[keys.PRIOR].shape == stats
    assert wm.features(td).shape == (3, 6, D + Z)
    start = td[keys.DETER].flatten(0, 1), td[keys.STOCH].flatten(0, 1)
    policy = torch.nn.Linear(D + Z, A)
    out = wm.rssm.imagine(*start, policy, horizon=5)
    assert out["deter"].shape == (18, 6, D) and out["stoch"].shape == (18, 6, Z)
    assert out["feat"].shape == (18, 6, D + Z) and out["action"].shape == (18, 6, A)
    torch.testing.assert_close(out["feat"], features(out["deter"], out["stoch"]))
    assert torch.equal(out["deter"][:, 0], start[0])


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=5)
@given(reset=st.integers(1, 5), seed=st.integers(0, 1000))
def test_state_after_a_reset_ignores_everything_before_it(version, reset, seed):
    torch.manual_seed(0)
    wm = tiny_world_model(version, SHAPES, A)
    td = random_batch(SHAPES, A, B=2, T=6, seed=seed)
    td[keys.IS_FIRST][:, reset] = True
    changed = td.clone()
    changed["observation"][:, :reset] += 5.0
    changed[keys.ACTION][:, : reset - 1] += 3.0  # a_{t-1} for t < reset, not a_{reset-1}
    changed[keys.ACTION][:, reset - 1] -= 7.0  # the action that "led" to the reset step
    torch.manual_seed(seed)
    out1 = wm.observe(td)
    torch.manual_seed(seed)
    out2 = wm.observe(changed)
    for key in (keys.DETER, keys.STOCH, keys.POST, keys.PRIOR):
        torch.testing.assert_close(out1[key][:, reset:], out2[key][:, reset:])
    # The change did reach the steps before the reset (the posterior sees o_t).
    assert not torch.allclose(out1[keys.POST][:, :reset], out2[keys.POST][:, :reset])


@pytest.mark.parametrize("version", VERSIONS)
def test_fast_observe_equals_a_plain_step_loop(version):
    """The hoisted action/embedding projections and the batched prior change nothing."""
    torch.manual_seed(0)
    wm = tiny_world_model(version, SHAPES, A)
    td = random_batch(SHAPES, A, B=2, T=5)
    td[keys.IS_FIRST][:, 3] = True
    rssm = wm.rssm
    torch.manual_seed(1)
    fast = wm.observe(td.clone())
    torch.manual_seed(1)
    embed = wm.encoder({"observation": td["observation"]})
    prev = shift_actions(td[keys.ACTION])
    init = rssm.initial(2)
    deter, stoch = init
    for t in range(5):
        first = td[keys.IS_FIRST][:, t, None]
        deter = torch.where(first, init[0], deter)
        stoch = torch.where(first, init[1], stoch)
        action = torch.where(first, 0.0, prev[:, t])
        deter = rssm.core(deter, stoch, action)
        hidden = rssm.post_deter(deter) + rssm.post_embed(embed[:, t])
        post = rssm.post_head(rssm.post_act(rssm.post_norm(hidden)))
        stoch = rssm.post_head.sample(post)
        torch.testing.assert_close(fast[keys.DETER][:, t], deter)
        torch.testing.assert_close(fast[keys.POST][:, t], post)
        torch.testing.assert_close(fast[keys.PRIOR][:, t], rssm.prior(deter))


def test_learned_initial_state_of_v3_2023():
    wm = tiny_world_model("v3-2023", SHAPES, A)
    deter, stoch = wm.rssm.initial(3)
    assert torch.equal(deter, torch.tanh(wm.rssm.init_deter).expand(3, -1))
    assert torch.equal(stoch.detach(), wm.rssm.prior_head.mode(wm.rssm.prior(deter)).detach())
    zeros = tiny_world_model("v3-2024", SHAPES, A).rssm.initial(3)
    assert not zeros[0].any() and not zeros[1].any()


def test_imagine_without_grad_builds_no_graph_and_with_grad_reaches_the_policy():
    wm = tiny_world_model("v3-2024", SHAPES, A)
    D, Z = wm.rssm.deter, wm.rssm.stoch_dim
    policy = torch.nn.Linear(D + Z, A)
    start = torch.zeros(4, D), torch.zeros(4, Z)
    with torch.no_grad():
        out = wm.rssm.imagine(*start, policy, 3)
    assert not out["deter"].requires_grad
    out = wm.rssm.imagine(*start, policy, 3)
    (g,) = torch.autograd.grad(out["deter"][:, -1].sum(), policy.weight)
    assert g.abs().sum() > 0


def test_features_order():
    assert torch.equal(
        features(torch.ones(2, 3), torch.zeros(2, 4)), torch.tensor([[0.0] * 4 + [1.0] * 3] * 2)
    )
