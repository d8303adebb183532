"""Each recipe is assembled from its own version's blocks: built in-process from its
``build`` and run for one update while the loss functions it must use are watched."""

import pytest
import torch

import wmblocks.losses.behavior as behavior
import wmblocks.losses.world_model as world_model
from tests.helpers import random_batch, with_context
from tests.recipes.common import TINY, load
from wmblocks.nn.actors import (
    BoundedNormalActor,
    DiscreteActor,
    TanhNormalActor,
    TruncNormalActor,
)
from wmblocks.nn.cores import BlockGRUCore, GRUCore, LayerNormGRUCore
from wmblocks.nn.critics import MSECritic, SlowCritic, TwoHotCritic
from wmblocks.nn.latents import CategoricalLatentHead, GaussianLatentHead
from wmblocks.nn.normalize import ReturnNormalizer
from wmblocks.optim import LaPropAGC
from wmblocks.train.config import parse_config
from wmblocks.train.envs import Envs


def build(recipe, env_id, *args, device="cpu"):
    module = load(recipe)
    cfg = parse_config(module.Config, [*TINY[recipe], "--batch", "3", "--length", "6", *args])
    env = Envs(env_id)
    agent = module.build(cfg, env, torch.device(device))
    env.close()
    return agent, env


class Spy:
    """Records the calls of a module-level function while the patch is in place."""

    def __init__(self, monkeypatch, module, name):
        self.calls, self.fn = [], getattr(module, name)
        monkeypatch.setattr(module, name, self)

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.fn(*args, **kwargs)


def two_updates(agent, env):
    """Two updates (the 2024 optimiser's warm-up starts at lr 0); the world model moves."""
    batch = with_context(random_batch(env.obs_shapes, env.action_dim, B=3, T=6), agent)
    before = [p.detach().clone() for p in agent.wm.parameters()]
    agent.update(batch)
    metrics = agent.update(batch)
    after = list(agent.wm.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values())
    return metrics


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "CartPole-v1"])
def test_v1_gaussian_rssm_elbo_free_nats_and_dynamics_backprop(monkeypatch, env_id):
    agent, env = build("dreamer_v1", env_id)
    rssm = agent.wm.rssm
    assert isinstance(rssm.core, GRUCore)
    assert isinstance(rssm.prior_head, GaussianLatentHead)
    assert isinstance(rssm.post_head, GaussianLatentHead)
    assert agent.wm.cont_head is None  # V1: fixed discount, no continue predictor
    expected = TanhNormalActor if env_id == "Pendulum-v1" else DiscreteActor
    assert isinstance(agent.actor, expected)
    assert isinstance(agent.modules["critic"], MSECritic)
    assert "slow" not in agent.modules  # V1 has no target critic
    assert agent.noise == 0.3
    assert set(agent.optimizers) == {"model", "actor", "critic"}
    assert all(isinstance(o.opt, torch.optim.Adam) for o in agent.optimizers.values())
    nats = Spy(monkeypatch, world_model, "free_nats")
    imagine = Spy(monkeypatch, behavior, "imagine")
    metrics = two_updates(agent, env)
    assert {"wm/obs", "wm/reward", "wm/kl"} <= set(metrics)
    assert [c[0][1] for c in nats.calls] == [3.0] * 2
    assert [c[1]["backprop"] for c in imagine.calls] == [True] * 2


def test_v1_nce_objective_uses_the_state_model(monkeypatch):
    agent, env = build("dreamer_v1", "Pendulum-v1", "--objective", "nce")
    assert "state_model" in agent.modules
    nce = Spy(monkeypatch, world_model, "state_nce")
    metrics = two_updates(agent, env)
    assert "wm/state" in metrics and "wm/obs" not in metrics and len(nce.calls) == 2


@pytest.mark.parametrize(("env_id", "rho"), [("CartPole-v1", 1.0), ("Pendulum-v1", 0.0)])
def test_v2_categorical_kl_balance_discount_rho_and_slow_copy(monkeypatch, env_id, rho):
    agent, env = build("dreamer_v2", env_id)
    rssm = agent.wm.rssm
    assert isinstance(rssm.core, LayerNormGRUCore)
    assert isinstance(rssm.prior_head, CategoricalLatentHead)
    assert rssm.prior_head.unimix == 0.0  # V2 has no unimix
    # The discount predictor: on for discrete actions (Atari-style), off for continuous
    # ones (the reference's DMC config, pred_discount False).
    assert (agent.wm.cont_head is not None) == (env_id == "CartPole-v1")
    expected = DiscreteActor if env_id == "CartPole-v1" else TruncNormalActor
    assert isinstance(agent.actor, expected)
    slow = agent.modules["slow"]
    assert isinstance(slow, SlowCritic) and (slow.rate, slow.every) == (1.0, 100)
    assert isinstance(agent.modules["critic"], MSECritic)
    # Plain Adam plus the reference's lr-independent decay (1 - 1e-6) per step.
    assert all(type(o.opt) is torch.optim.Adam for o in agent.optimizers.values())
    assert all(o.weight_decay == 1e-6 for o in agent.optimizers.values())
    balance = Spy(monkeypatch, world_model, "kl_balance")
    imagine = Spy(monkeypatch, behavior, "imagine")
    beh = Spy(monkeypatch, load("dreamer_v2"), "behavior_loss_v2")  # looked up at call time
    metrics = two_updates(agent, env)
    assert {"wm/obs", "wm/reward", "wm/kl"} <= set(metrics)
    assert ("wm/discount" in metrics) == (env_id == "CartPole-v1")
    assert [c[0][2] for c in balance.calls] == [0.8] * 2
    assert [c[1]["rho"] for c in beh.calls] == [rho] * 2
    assert [c[1]["backprop"] for c in imagine.calls] == [rho < 1.0] * 2


@pytest.mark.parametrize("revision", ["2024", "2023"])
def test_v3_blocks_per_revision(monkeypatch, revision):
    agent, env = build("dreamer_v3", "CartPole-v1", "--revision", revision)
    rssm = agent.wm.rssm
    core = BlockGRUCore if revision == "2024" else LayerNormGRUCore
    assert isinstance(rssm.core, core)
    assert isinstance(rssm.prior_head, CategoricalLatentHead)
    assert rssm.prior_head.unimix == 0.01 and rssm.post_head.unimix == 0.01
    # 2024's policy is the reference's "categorical" (no unimix), 2023's its "onehot".
    assert isinstance(agent.actor, DiscreteActor)
    assert agent.actor.unimix == (0.0 if revision == "2024" else 0.01)
    assert isinstance(agent.modules["critic"], TwoHotCritic)
    slow = agent.modules["slow"]
    assert isinstance(slow, SlowCritic) and (slow.rate, slow.every) == (0.02, 1)
    assert isinstance(agent.modules["normalizer"], ReturnNormalizer)
    if revision == "2024":
        assert list(agent.optimizers) == ["all"]
        assert isinstance(agent.optimizers["all"].opt, LaPropAGC)
    else:
        assert set(agent.optimizers) == {"model", "actor", "critic"}
    bits = Spy(monkeypatch, world_model, "free_bits")
    imagine = Spy(monkeypatch, behavior, "imagine")
    metrics = two_updates(agent, env)
    assert {"wm/obs", "wm/reward", "wm/cont", "wm/dyn", "wm/rep"} <= set(metrics)
    assert [c[0][1] for c in bits.calls] == [1.0] * 4  # dyn and rep, on the summed KL
    assert [c[1]["backprop"] for c in imagine.calls] == [False] * 2  # REINFORCE
    assert ("ac/repval" in metrics) == (revision == "2024")


def test_v3_continuous_actor_is_bounded_normal():
    agent, _ = build("dreamer_v3", "Pendulum-v1")
    assert isinstance(agent.actor, BoundedNormalActor)
