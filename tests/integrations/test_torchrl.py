"""The torchrl bridge (wmblocks.integrations.torchrl): each TensorDictModule computes
what the wmblocks block computes, and torchrl's own ``env.rollout`` imagines the same
latent trajectory as a plain ``rssm.img_step`` loop."""

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, set_interaction_type
from torchrl.envs.utils import check_env_specs

from tests.helpers import random_batch, tiny_world_model
from wmblocks import keys, presets
from wmblocks.errors import UserError
from wmblocks.integrations import torchrl as wtrl
from wmblocks.nn.rssm import features

SHAPES = {"observation": (4,)}
SPACES = {
    "discrete": gym.spaces.Discrete(2),  # CartPole-like, one-hot actions
    "continuous": gym.spaces.Box(-1.0, 1.0, (2,)),
}
SPACES_DIM = {k: presets.action_size(s)[0] for k, s in SPACES.items()}


def v3_agent(kind: str):
    """A V3 (2024, size "debug") world model, actor and critic for an action space."""
    torch.manual_seed(0)
    space = SPACES[kind]
    action_dim, _ = presets.action_size(space)
    wm = presets.world_model_v3(SHAPES, action_dim, "debug")
    feat = wm.rssm.feat_dim
    return wm, presets.actor_v3(space, feat, "debug"), presets.critic_v3(feat, "debug")


def replay_batch(action_dim: int, discrete: bool, B=2, T=5) -> TensorDict:
    td = random_batch(SHAPES, action_dim, B=B, T=T)
    if discrete:
        td[keys.ACTION] = torch.eye(action_dim)[torch.randint(0, action_dim, (B, T))]
    td[keys.IS_FIRST][1, 3] = True
    return td


def observed(wm, kind: str) -> TensorDict:
    torch.manual_seed(1)
    return wm.observe(replay_batch(SPACES_DIM[kind], kind == "discrete"))


@pytest.mark.parametrize("version", ["v1", "v3-2023", "v3-2024"])
def test_encoder_and_observe_equal_the_world_model(version):
    torch.manual_seed(0)
    wm = tiny_world_model(version, SHAPES, 2)
    td = replay_batch(2, discrete=True)
    embed = wtrl.encoder_module(wm)(td.clone())[keys.EMBED]
    assert torch.equal(embed, wm.encoder({"observation": td["observation"]}))
    torch.manual_seed(3)
    got = wtrl.observe_module(wm)(td.clone())
    torch.manual_seed(3)
    want = wm.observe(td.clone())  # shifts the actions itself: row t holds a_t
    for key in wtrl.OBSERVED:
        assert torch.equal(got[key], want[key]), key
    assert got[keys.DETER].shape == (2, 5, wm.rssm.deter)


def test_heads_and_critic_equal_the_blocks():
    wm, _, critic = v3_agent("discrete")
    td = observed(wm, "discrete")
    h, z = td[keys.DETER], td[keys.STOCH]
    feat = features(h, z)
    nxt = TensorDict({"next": td.select(*wtrl.STATE)}, td.batch_size)
    mods = wtrl.world_model_modules(wm, critic=critic)
    reward = mods["reward"](nxt.clone())["next", keys.REWARD]
    assert torch.equal(reward, wm.reward_head(feat).mean.unsqueeze(-1))
    flags = mods["continue"](nxt.clone())["next"]
    cont = wm.cont_head(feat)
    assert torch.equal(flags[wtrl.CONT], cont.mean.unsqueeze(-1))
    assert torch.equal(flags[wtrl.TERMINATED], (cont.mode == 0).unsqueeze(-1))
    assert torch.equal(flags[wtrl.DONE], flags[wtrl.TERMINATED])
    reco = mods["decoder"](td.clone())[wtrl.reco_key("observation")]
    assert torch.equal(reco, wm.decoder(feat)["observation"].mean)
    value = mods["critic"](td.clone())[wtrl.STATE_VALUE]
    assert torch.equal(value, critic(feat).mean.unsqueeze(-1))
    assert reward.shape == value.shape == (2, 5, 1)


def test_imagine_step_equals_img_step_on_any_batch_shape():
    wm, _, _ = v3_agent("discrete")
    td = observed(wm, "discrete").select(*wtrl.STATE)
    td[keys.ACTION] = torch.eye(2)[torch.randint(0, 2, (2, 5))]
    torch.manual_seed(5)
    out = wtrl.imagine_step_module(wm)(td.clone())
    torch.manual_seed(5)
    flat = [td[k].flatten(0, 1) for k in (keys.DETER, keys.STOCH, keys.ACTION)]
    h, z = wm.rssm.img_step(*flat)
    assert torch.equal(out["next", keys.DETER], h.view(2, 5, -1))
    assert torch.equal(out["next", keys.STOCH], z.view(2, 5, -1))
    assert torch.equal(out[keys.DETER], td[keys.DETER])  # s_t stays at the root


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_actor_module_samples_and_scores_like_the_actor(kind):
    wm, actor, _ = v3_agent(kind)
    td = observed(wm, kind).select(*wtrl.STATE)
    feat = features(td[keys.DETER], td[keys.STOCH])
    policy = wtrl.actor_module(actor)
    assert {id(p) for p in policy.parameters()} == {id(p) for p in actor.parameters()}
    torch.manual_seed(7)
    out = policy(td.clone())
    torch.manual_seed(7)
    want = actor(feat).rsample()
    assert torch.equal(out[keys.ACTION], want)
    log_prob = actor(feat).log_prob(want)
    torch.testing.assert_close(out[wtrl.ACTION_LOG_PROB], log_prob)
    with set_interaction_type(InteractionType.MODE):
        mode = policy(td.clone())[keys.ACTION]
    assert torch.equal(mode, actor(feat).mode)
    assert isinstance(policy.get_dist(td), wtrl.ActionDistribution)


def imagine_by_hand(wm, actor, deter, stoch, horizon, mode):
    """The reference: wmblocks' own img_step loop with the actor's actions."""
    states, actions = [(deter, stoch)], []
    for _ in range(horizon):
        dist = actor(features(deter, stoch))
        action = dist.mode if mode else dist.rsample()
        deter, stoch = wm.rssm.img_step(deter, stoch, action)
        states.append((deter, stoch))
        actions.append(action)
    deters = torch.stack([s[0] for s in states], 1)
    stochs = torch.stack([s[1] for s in states], 1)
    return deters, stochs, torch.stack(actions, 1)


@pytest.mark.parametrize("mode", [False, True], ids=["sampled", "mode"])
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_rollout_imagines_the_img_step_trajectory(kind, mode):
    wm, actor, _ = v3_agent(kind)
    start = wtrl.start_states(observed(wm, kind))  # [N = B * T]
    env = wtrl.ImaginationEnv.from_space(wm, SPACES[kind])
    policy = wtrl.actor_module(actor)
    H, N = 5, start.shape[0]
    interaction = InteractionType.MODE if mode else InteractionType.RANDOM
    with torch.no_grad(), set_interaction_type(interaction):
        torch.manual_seed(11)
        out = env.rollout(H, policy, tensordict=start.clone(), break_when_any_done=False)
        torch.manual_seed(11)
        h, z, a = imagine_by_hand(wm, actor, start[keys.DETER], start[keys.STOCH], H, mode)
    assert out.batch_size == (N, H)
    assert torch.equal(out[keys.DETER], h[:, :H]) and torch.equal(out[keys.STOCH], z[:, :H])
    assert torch.equal(out["next", keys.DETER], h[:, 1:])
    assert torch.equal(out["next", keys.STOCH], z[:, 1:])
    assert torch.equal(out[keys.ACTION], a)
    reward = out["next", keys.REWARD]
    assert reward.shape == (N, H, 1) and torch.isfinite(reward).all()
    # The heads at each state arrived at, one [N] batch per step as the env runs them.
    per_step = [features(h[:, t], z[:, t]) for t in range(1, H + 1)]
    want = torch.stack([wm.reward_head(f).mean for f in per_step], 1)
    assert torch.equal(reward, want.unsqueeze(-1))
    cont = [wm.cont_head(f) for f in per_step]
    want = torch.stack([c.mean for c in cont], 1).unsqueeze(-1)
    assert torch.equal(out["next", wtrl.CONT], want)
    want = torch.stack([c.mode == 0 for c in cont], 1).unsqueeze(-1)
    assert torch.equal(out["next", wtrl.TERMINATED], want)
    assert not out[wtrl.DONE][:, 0].any()  # reset: not done
    c0 = wm.cont_head(features(start[keys.DETER], start[keys.STOCH])).mean  # Dreamer's c_0
    assert torch.equal(out[wtrl.CONT][:, 0], c0.unsqueeze(-1))


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_env_specs_check_and_reset_from_the_initial_state(kind):
    wm, actor, _ = v3_agent(kind)
    env = wtrl.ImaginationEnv.from_space(wm, SPACES[kind], batch_size=[3])
    check_env_specs(env)
    with torch.no_grad():
        out = env.rollout(4, wtrl.actor_module(actor), break_when_any_done=False)
    h0, z0 = wm.rssm.initial(3)
    assert out.batch_size == (3, 4)
    assert torch.equal(out[keys.DETER][:, 0], h0) and torch.equal(out[keys.STOCH][:, 0], z0)
    spec = env.action_spec
    assert spec.shape == (3, SPACES_DIM[kind])
    assert (type(spec).__name__ == "OneHot") == (kind == "discrete")


def test_learned_initial_state_of_v3_2023():
    torch.manual_seed(0)
    wm = tiny_world_model("v3-2023", SHAPES, 2)
    env = wtrl.ImaginationEnv(wm, discrete=True)
    reset = env.reset(TensorDict(batch_size=[2]))
    h0, z0 = wm.rssm.initial(2)
    assert torch.equal(reset[keys.DETER], h0) and torch.equal(reset[keys.STOCH], z0)
    assert reset.batch_size == (2,)


def test_a_v1_gaussian_world_model_imagines_and_never_terminates():
    torch.manual_seed(0)
    wm = tiny_world_model("v1", SHAPES, 2)
    actor = presets.actor_v1(SPACES["continuous"], wm.rssm.feat_dim, units=16, layers=1)
    start = wtrl.start_states(observed(wm, "continuous"))
    env = wtrl.ImaginationEnv.from_space(wm, SPACES["continuous"])
    with torch.no_grad():
        torch.manual_seed(2)
        out = env.rollout(4, wtrl.actor_module(actor), tensordict=start.clone())
        torch.manual_seed(2)
        h, z, _ = imagine_by_hand(wm, actor, start[keys.DETER], start[keys.STOCH], 4, False)
    assert out.batch_size == (start.shape[0], 4)  # the default rollout: nothing ends
    assert torch.equal(out["next", keys.STOCH], z[:, 1:])
    assert not out["next", wtrl.DONE].any() and (out["next", wtrl.CONT] == 1).all()
    assert torch.isfinite(out["next", keys.REWARD]).all()
    check_env_specs(wtrl.ImaginationEnv(wm, discrete=False, batch_size=[2]))
    with pytest.raises(UserError, match="no continue head"):
        wtrl.continue_module(wm)


@pytest.mark.parametrize("logit, steps", [(-20.0, 1), (20.0, 4)])
def test_default_rollout_stops_at_the_first_predicted_termination(logit, steps):
    wm, actor, _ = v3_agent("discrete")
    last = wm.cont_head.mlp.net[-1]
    with torch.no_grad():  # p(continue) = sigmoid(logit) everywhere
        last.weight.zero_()
        last.bias.fill_(logit)
    env = wtrl.ImaginationEnv(wm, discrete=True, batch_size=[2])
    with torch.no_grad():
        out = env.rollout(4, wtrl.actor_module(actor))
    assert out.batch_size == (2, steps)
    assert out["next", wtrl.DONE][:, -1].all() == (logit < 0)


def test_errors_name_the_missing_keys():
    wm, actor, _ = v3_agent("discrete")
    td = replay_batch(2, discrete=True)
    with pytest.raises(KeyError, match="observe_module.*lacks \\['action'\\]"):
        wtrl.observe_module(wm)(td.exclude(keys.ACTION))
    state = observed(wm, "discrete").select(*wtrl.STATE)
    with pytest.raises(KeyError, match="reward_module.*'next', 'deter'.*in_keys"):
        wtrl.reward_module(wm)(state.clone())
    env = wtrl.ImaginationEnv(wm, discrete=True)
    with pytest.raises(KeyError, match="lacks \\['stoch'\\]"):
        env.reset(state.exclude(keys.STOCH))
    with pytest.raises(UserError, match="must end in"):
        env.reset(TensorDict({keys.DETER: torch.zeros(2, 3), keys.STOCH: torch.zeros(2, 16)}, [2]))
    state[keys.ACTION] = torch.zeros(2, 5, 3)
    with pytest.raises(UserError, match="built for 2"):
        wtrl.imagine_step_module(wm)(state)
