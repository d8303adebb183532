import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tensordict import TensorDict

from tests.helpers import random_batch, tiny_world_model
from tests.strategies import seeded_randn
from wmblocks import keys
from wmblocks.dists import MSE, TanhNormal
from wmblocks.losses import (
    CONT_TARGET_2024,
    V3_2024_SCALES,
    behavior_loss_v1,
    behavior_loss_v2,
    behavior_loss_v3,
    imagination_weights_v3,
    replay_value_loss_v3,
    total_loss,
    world_model_loss_v3,
)
from wmblocks.nn import ReturnNormalizer
from wmblocks.nn.actors import (
    BoundedNormalActor,
    DiscreteActor,
    TanhNormalActor,
    TruncNormalActor,
)
from wmblocks.nn.critics import MSECritic, SlowCritic, TwoHotCritic

SHAPES = {"observation": (5,)}
A, H = 3, 4


def setup(version, discrete=True):
    torch.manual_seed(0)
    wm = tiny_world_model(version, SHAPES, A)
    feat = wm.rssm.feat_dim
    small = dict(units=16, layers=1)
    if version == "v1":
        actor, critic = TanhNormalActor(feat, A, **small), MSECritic(feat, **small)
    elif version == "v2":
        actor = (
            DiscreteActor(feat, A, norm="none", act="elu", unimix=0.0, **small)
            if discrete
            else TruncNormalActor(feat, A, **small)
        )
        critic = MSECritic(feat, dist=MSE, **small)
    else:
        actor = (
            DiscreteActor(feat, A, unimix=0.0, **small)
            if discrete
            else BoundedNormalActor(feat, A, **small)
        )
        critic = TwoHotCritic(feat, **small)
    return wm, actor, critic


def run(version, wm, actor, critic, td, discrete=True):
    if version == "v1":
        return behavior_loss_v1(wm, actor, critic, td, horizon=H)
    if version == "v2":
        slow = SlowCritic(critic, 1.0, 100)
        return behavior_loss_v2(
            wm, actor, critic, slow, td, rho=1.0 if discrete else 0.0, eta=1e-3, horizon=H
        )
    slow = SlowCritic(critic, 0.02)
    return behavior_loss_v3(wm, actor, critic, slow, ReturnNormalizer(), td, horizon=H)


CASES = [("v1", False), ("v2", True), ("v2", False), ("v3-2024", True), ("v3-2024", False)]
# Steps each version trains on (the references': V1 s_1..s_{H-1}; V2 critic s_0..s_{H-1},
# actor s_0..s_{H-2}; V3 s_0..s_{H-1}).
STEPS = {"v1": (H - 1, H - 1), "v2": (H - 1, H), "v3-2024": (H, H)}


@pytest.mark.parametrize(("version", "discrete"), CASES)
def test_losses_are_per_step_and_leave_the_world_model_alone(version, discrete):
    wm, actor, critic = setup(version, discrete)
    td = wm.observe(random_batch(SHAPES, A, B=2, T=3))
    td = td.apply(lambda x: x.detach())  # as after the world-model update
    out = run(version, wm, actor, critic, td, discrete)
    assert out.batch_size == (6,)
    assert (out["loss_actor"].shape[1], out["loss_critic"].shape[1]) == STEPS[version]
    assert not out["return"].requires_grad and not out["weight"].requires_grad
    actor_loss, _ = total_loss(out, {"actor": 1.0})
    critic_loss, _ = total_loss(out, {"critic": 1.0})
    a_grads = torch.autograd.grad(
        actor_loss, [*actor.parameters()], allow_unused=True, retain_graph=True
    )
    assert any(g is not None and g.any() for g in a_grads)
    # Actor loss: nothing into the critic; critic loss: nothing into the actor.
    for params, loss in ((critic.parameters(), actor_loss), (actor.parameters(), critic_loss)):
        grads = torch.autograd.grad(loss, [*params], allow_unused=True, retain_graph=True)
        assert all(g is None or not g.any() for g in grads)
    (actor_loss + critic_loss).backward()
    assert all(p.grad is None for p in wm.parameters())


def test_dynamics_backprop_reaches_the_actor_through_the_imagined_dynamics():
    wm, actor, critic = setup("v1")
    td = wm.observe(random_batch(SHAPES, A, B=2, T=3)).apply(lambda x: x.detach())
    out = behavior_loss_v1(wm, actor, critic, td, horizon=H)
    # The first loss step (s_1) depends on a_0 only through s_1 = f(s_0, a_0): a non-zero
    # actor gradient from it proves the path through the frozen dynamics.
    (g,) = torch.autograd.grad(out["loss_actor"][:, 0].sum(), [actor.mlp.net[-1].weight])
    assert g.abs().sum() > 0


def test_the_imagining_actor_sees_stopped_states():
    # References V1/V2: policy(stop_gradient(feat)). The gradient reaches a_t only
    # through the dynamics; without the sg, s_{t+1} -> pi(s_{t+1}) adds a second path.
    wm, actor, critic = setup("v1")
    td = wm.observe(random_batch(SHAPES, A, B=2, T=3)).apply(lambda x: x.detach())
    seen = []
    hook = actor.register_forward_pre_hook(lambda _, args: seen.append(args[0].requires_grad))
    behavior_loss_v1(wm, actor, critic, td, horizon=H)
    hook.remove()
    assert len(seen) >= H and not any(seen)


def test_v1_entropy_bonus_is_linear_in_eta_and_off_by_default():
    wm, actor, critic = setup("v1")
    td = wm.observe(random_batch(SHAPES, A, B=2, T=3)).apply(lambda x: x.detach())

    def actor_loss(**kw):
        torch.manual_seed(1)  # same imagination and entropy samples for every call
        return behavior_loss_v1(wm, actor, critic, td, horizon=H, **kw)["loss_actor"]

    base = actor_loss()
    assert torch.equal(base, actor_loss(eta=0.0))
    one, two = actor_loss(eta=0.1) - base, actor_loss(eta=0.2) - base
    assert one.abs().max() > 0
    torch.testing.assert_close(two, 2 * one)
    # The bonus penalises saturation: a squashed policy pushed to the bounds has lower
    # entropy, so the bonus's gradient on the pre-tanh mean points back toward 0.
    loc = torch.tensor([4.0], requires_grad=True)
    TanhNormal(loc, torch.tensor([0.5])).entropy(samples=4000).sum().backward()
    assert loc.grad < 0


def test_v3_advantages_are_scaled_by_the_normaliser_and_never_shifted():
    wm, actor, critic = setup("v3-2024")
    with torch.no_grad():
        critic.mlp.net[-1].weight.normal_()  # non-trivial values
        wm.reward_head.mlp.net[-1].weight.normal_()
    td = wm.observe(random_batch(SHAPES, A, B=4, T=4)).apply(lambda x: x.detach())
    norm = ReturnNormalizer(decay=0.0)  # scale = max(1, P95 - P05) of this batch
    out = behavior_loss_v3(wm, actor, critic, SlowCritic(critic, 0.02), norm, td, horizon=H)
    scale = norm.scale()
    q = torch.quantile(out["return"].flatten(), torch.tensor([0.05, 0.95]))
    torch.testing.assert_close(scale, (q[1] - q[0]).clamp(min=1.0))
    torch.testing.assert_close(out["advantage"] * scale, out["return"] - out["value"])


@given(seeded_randn((3, H + 1)), st.integers(0, H - 1), st.sampled_from([1.0, 0.997]))
def test_v3_weights_vanish_after_a_predicted_terminal(raw, k, gamma):
    cont = raw.sigmoid()
    cont[:, k] = 0.0
    w = imagination_weights_v3(cont, gamma)
    assert w.shape == (3, H + 1)
    assert torch.equal(w[:, k:], torch.zeros_like(w[:, k:]))
    expected = torch.stack([(gamma * cont[:, : t + 1]).prod(1) / gamma for t in range(H + 1)], 1)
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(w[:, 0], cont[:, 0])  # w_0 = c_0, not 1 (reference)


@given(st.integers(0, 2**31 - 1), st.floats(0.5, 1.0), st.floats(0.0, 1.0))
def test_replay_value_loss_matches_a_slow_loop(seed, gamma, lam):
    B, T = 2, 6
    g = torch.Generator().manual_seed(seed)
    reward = torch.randn(B, T, generator=g)
    last = torch.rand(B, T, generator=g) < 0.3
    term = last & (torch.rand(B, T, generator=g) < 0.5)
    boot = torch.randn(B, T, generator=g)
    critic = TwoHotCritic(12, units=8, layers=1)
    feat = torch.randn(B, T, 12, generator=g)
    out = replay_value_loss_v3(
        critic=critic(feat),
        slow_value=torch.randn(B, T, generator=g),
        reward=reward,
        is_last=last,
        is_terminal=term,
        boot=boot,
        gamma=gamma,
        lam=lam,
    )
    ref = torch.zeros(B, T - 1)
    for b in range(B):
        nxt = boot[b, -1]
        for t in reversed(range(T - 1)):
            lam_t = lam * (1 - float(last[b, t + 1]))
            disc = gamma * (1 - float(term[b, t + 1]))
            ref[b, t] = reward[b, t + 1] + disc * ((1 - lam_t) * boot[b, t + 1] + lam_t * nxt)
            nxt = ref[b, t]
    torch.testing.assert_close(out["return"], ref)
    assert out["loss_repval"].shape == (B, T - 1)
    ended = last[:, : T - 1]  # a step that ends its episode has no successor: weight 0
    assert torch.equal(out["loss_repval"][ended], torch.zeros(int(ended.sum())))
    assert bool((out["loss_repval"][~ended] > 0).all())


def test_slow_critic_follows_its_ema_and_copy_rules():
    critic = TwoHotCritic(6, units=8, layers=1)
    slow = SlowCritic(critic, rate=0.02)
    before = [p.clone() for p in slow.parameters()]
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(1.0)
    slow.update(critic)
    for b, s, c in zip(before, slow.parameters(), critic.parameters(), strict=True):
        torch.testing.assert_close(s, 0.98 * b + 0.02 * c)
    assert not any(p.requires_grad for p in slow.parameters())
    hard = SlowCritic(critic, rate=1.0, every=100)
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(1.0)
    for i in range(1, 101):
        hard.update(critic)
        same = all(
            torch.equal(s, c) for s, c in zip(hard.parameters(), critic.parameters(), strict=True)
        )
        assert same == (i == 100), i
    restored = SlowCritic(critic, rate=1.0, every=100)
    restored.load_state_dict(hard.state_dict())
    assert restored.calls == 100


def test_a_tiny_agent_learns_which_action_pays():
    """Reward 1 for arriving after action 1, else 0; observations are uninformative.
    World model (V3 debug) and behaviour are trained on random-policy data; the policy
    must come to prefer action 1."""
    torch.manual_seed(0)
    wm, actor, critic = setup("v3-2024")
    slow, norm = SlowCritic(critic, 0.02), ReturnNormalizer()
    opt_wm = torch.optim.Adam(wm.parameters(), lr=3e-3)
    opt_ac = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=3e-3)
    B, T = 8, 12
    for step in range(200):
        g = torch.Generator().manual_seed(step)
        action = torch.randint(0, A, (B, T), generator=g)
        reward = torch.cat([torch.zeros(B, 1), (action[:, :-1] == 1).float()], 1)
        td = TensorDict(
            {
                "observation": torch.randn(B, T, 5, generator=g) * 0.1,
                keys.ACTION: torch.nn.functional.one_hot(action, A).float(),
                keys.REWARD: reward,
                keys.IS_FIRST: torch.arange(T).expand(B, T) == 0,
                keys.IS_TERMINAL: torch.zeros(B, T, dtype=torch.bool),
            },
            [B, T],
        )
        td = world_model_loss_v3(wm, td, cont_target=CONT_TARGET_2024)
        loss, _ = total_loss(td, V3_2024_SCALES)
        opt_wm.zero_grad()
        loss.backward()
        opt_wm.step()
        td = td.apply(lambda x: x.detach())
        out = behavior_loss_v3(wm, actor, critic, slow, norm, td, horizon=H, eta=1e-3)
        loss, _ = total_loss(out, {"actor": 1.0, "critic": 1.0})
        opt_ac.zero_grad()
        loss.backward()
        opt_ac.step()
        slow.update(critic)
    with torch.no_grad():
        probs = actor(wm.features(td)).probs.mean((0, 1))
    assert probs[1] > 0.8, probs
