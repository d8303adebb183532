import pytest
import torch

from wmblocks.functional import backprop_loss, reinforce_loss
from wmblocks.nn.actors import (
    BoundedNormalActor,
    DiscreteActor,
    TanhNormalActor,
    TruncNormalActor,
    explore,
)

F, A = 10, 3


@pytest.mark.parametrize(
    "actor",
    [
        DiscreteActor(F, A, units=8, layers=2),
        BoundedNormalActor(F, A, units=8, layers=2),
        TanhNormalActor(F, A, units=8, layers=2),
        TruncNormalActor(F, A, units=8, layers=2),
    ],
    ids=["discrete", "bounded", "tanh", "trunc"],
)
def test_actor_shapes_and_action_range(actor):
    dist = actor(torch.randn(4, 5, F))
    a = dist.sample()
    assert a.shape == (4, 5, A) and dist.log_prob(a).shape == (4, 5)
    assert dist.entropy().shape == (4, 5) and dist.mode.shape == (4, 5, A)
    if not isinstance(actor, BoundedNormalActor):  # V3 clips before the environment
        assert bool((a.abs() <= 1).all())


def test_reinforce_in_a_one_step_bandit_prefers_the_better_arm():
    torch.manual_seed(0)
    actor = DiscreteActor(F, A, units=16, layers=1, unimix=0.01)
    payoff = torch.tensor([0.0, 1.0, 0.2])
    feat = torch.randn(64, F)
    opt = torch.optim.Adam(actor.parameters(), lr=1e-2)
    for _ in range(100):
        dist = actor(feat)
        a = dist.sample()
        r = (a * payoff).sum(-1)
        loss = reinforce_loss(dist.log_prob(a), r - r.mean()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    probs = actor(feat).probs.mean(0)
    assert probs[1] > 0.9, probs


@pytest.mark.parametrize(
    "make",
    [
        # V1's init_std 5 saturates tanh (samples near +-1), where the optimum is the
        # better end, not 0.5; a small initial std tests the gradient path itself.
        lambda: TanhNormalActor(F, 1, units=16, layers=1, init_std=0.3),
        lambda: BoundedNormalActor(F, 1, units=16, layers=1),
        lambda: TruncNormalActor(F, 1, units=16, layers=1),
    ],
    ids=["tanh", "bounded", "trunc"],
)
def test_dynamics_backprop_moves_a_continuous_action_toward_higher_value(make):
    torch.manual_seed(0)
    actor = make()
    feat = torch.randn(64, F)
    value = lambda a: -(a - 0.5).square().sum(-1)  # noqa: E731, best action 0.5
    opt = torch.optim.Adam(actor.parameters(), lr=1e-2)
    start = actor(feat).sample((256,)).mean().item()  # the expected action
    start_value = value(actor(feat).sample((256,))).mean().item()
    for _ in range(300):  # the truncated normal first saturates its loc, then narrows
        loss = backprop_loss(value(actor(feat).rsample())).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = actor(feat).sample((256,)).mean().item()
    assert abs(end - 0.5) < 0.1 and abs(end - 0.5) < abs(start - 0.5), (start, end)
    assert value(actor(feat).sample((256,))).mean().item() > start_value + 0.05


def test_exploration_noise_is_clipped():
    a = explore(torch.full((10_000, 1), 0.9), 0.3)
    assert bool((a <= 1).all()) and a.std() > 0.1
