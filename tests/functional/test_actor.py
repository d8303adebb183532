import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import seeded_randn
from wmblocks.functional import (
    advantage,
    backprop_loss,
    entropy_loss,
    reinforce_loss,
    rho_mix,
)


@given(seeded_randn((4, 15)), seeded_randn((4, 15)), seeded_randn((4, 15)))
def test_reinforce_gradient_is_minus_advantage_and_stops_at_the_advantage(logp, ret, value):
    logp, ret, value = (t.clone().requires_grad_(True) for t in (logp, ret, value))
    adv = advantage(ret, value, 2.0)
    loss = reinforce_loss(logp, adv).sum()
    g_logp, g_ret, g_value = torch.autograd.grad(loss, [logp, ret, value], allow_unused=True)
    torch.testing.assert_close(g_logp, -(ret - value).detach() / 2.0)
    assert g_ret is None and g_value is None


def test_reinforce_raises_the_probability_of_the_better_action():
    logits = torch.zeros(2, requires_grad=True)
    adv = torch.tensor([1.0, -1.0])  # action 0 is better
    logp = logits.log_softmax(-1)
    (g,) = torch.autograd.grad(reinforce_loss(logp, adv).sum(), logits)
    stepped = (logits - 0.1 * g).softmax(-1)
    assert stepped[0] > 0.5 > stepped[1]


@given(seeded_randn((3, 5)), st.floats(0.0, 1.0))
def test_entropy_and_backprop_terms(ret, eta):
    ret = ret.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(backprop_loss(ret).sum(), ret)
    assert torch.equal(g, -torch.ones_like(ret))
    ent = ret.detach().abs()
    torch.testing.assert_close(entropy_loss(ent, eta), -eta * ent)


@given(seeded_randn((3, 5)), seeded_randn((3, 5)), st.floats(0.0, 1.0))
def test_rho_mix_interpolates(a, b, rho):
    torch.testing.assert_close(rho_mix(a, b, rho), rho * a + (1 - rho) * b)
    assert torch.equal(rho_mix(a, b, 1.0), a)
    assert torch.equal(rho_mix(a, b, 0.0), b)
