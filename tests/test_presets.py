import pytest
import torch

from wmblocks import presets
from wmblocks.nn.layers import MLP


def official_v3_2024_count(s: presets.V3Size, actions: int, channels: int = 3) -> int:
    """Parameters of the official 2024 agent (world model, policy, value) for a 64x64
    image and a discrete action space, counted layer by layer from its architecture
    (dreamerv3/rssm.py, embodied/jax/heads.py, configs.yaml): kernel-5 convolutions with
    bias and RMS-norm scale, block GRU with 3 input branches, 2-layer prior, 1-layer
    posterior, block-space decoder input, 1-layer reward/continue heads, 3-layer actor
    and critic, 255 twohot bins."""

    def lin(i, o, norm=True):
        return i * o + o + (o if norm else 0)

    d, u, D, H, S, C, g = s.depth, s.units, s.deter, s.hidden, s.stoch, s.classes, s.blocks
    depths = [d * m for m in s.mults]
    n, cin = 0, channels
    for c in depths:  # encoder
        n += cin * c * 25 + 2 * c
        cin = c
    tokens = 16 * depths[-1]
    n += lin(D, H) + lin(S * C, H) + lin(actions, H)  # core inputs
    n += g * (D // g + 3 * H) * (D // g) + 2 * D + g * (D // g) * (3 * D // g) + 3 * D
    n += lin(D, H) + lin(H, H) + lin(H, S * C, False)  # prior
    n += lin(D + tokens, H) + lin(H, S * C, False)  # posterior
    space = 16 * depths[-1]
    n += g * (D // g) * (space // g) + space + lin(S * C, 2 * u) + lin(2 * u, space, False)
    n += depths[-1]
    rev = depths[::-1]
    for a, b in zip(rev[:-1], rev[1:], strict=True):
        n += a * b * 25 + 2 * b
    n += depths[0] * channels * 25 + channels
    F = D + S * C
    n += lin(F, u) + lin(u, 255, False) + lin(F, u) + lin(u, 1, False)  # reward, continue
    mlp = lambda out: lin(F, u) + (s.ac_layers - 1) * lin(u, u) + lin(u, out, False)  # noqa: E731
    return n + mlp(actions) + mlp(255)


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", ["1m", "12m", "25m", "50m", "100m", "200m"])
def test_2024_parameter_counts_within_10_percent_of_the_reference(name):
    size = presets.v3_size(name)
    with torch.device("meta"):
        wm = presets.world_model_v3({"image": (3, 64, 64)}, 6, name)
        feat = wm.rssm.feat_dim
        actor = MLP(feat, 6, units=size.units, layers=size.ac_layers)
        critic = MLP(feat, 255, units=size.units, layers=size.ac_layers)
    ours = _count(wm) + _count(actor) + _count(critic)
    ref = official_v3_2024_count(size, 6)
    assert abs(ours / ref - 1) < 0.10, (name, ours, ref)


@pytest.mark.parametrize("name", ["S", "M", "L", "XL", "debug"])
def test_2023_sizes_build(name):
    with torch.device("meta"):
        wm = presets.world_model_v3({"observation": (8,)}, 3, name, revision=2023)
    size = presets.v3_size(name, 2023)
    assert wm.rssm.deter == size.deter and wm.rssm.stoch_dim == size.stoch * size.classes


def test_unknown_preset_and_revision_are_named():
    with pytest.raises(ValueError, match="'13m'.*1m"):
        presets.v3_size("13m")
    with pytest.raises(ValueError, match="2025"):
        presets.v3_size("1m", 2025)
    with pytest.raises(ValueError, match="shape"):
        presets.world_model_v3({"observation": (3, 32, 32)}, 2, "debug")


def test_actors_and_critics_follow_the_action_space():
    import gymnasium as gym

    from wmblocks.nn.actors import (
        BoundedNormalActor,
        DiscreteActor,
        TanhNormalActor,
        TruncNormalActor,
    )
    from wmblocks.nn.critics import MSECritic, TwoHotCritic

    disc, box = gym.spaces.Discrete(4), gym.spaces.Box(-2.0, 2.0, (3,))
    assert presets.action_size(disc) == (4, True) and presets.action_size(box) == (3, False)
    assert isinstance(presets.actor_v1(box, 8), TanhNormalActor)
    assert isinstance(presets.actor_v2(box, 8), TruncNormalActor)
    assert isinstance(presets.actor_v2(disc, 8), DiscreteActor)
    assert isinstance(presets.actor_v3(box, 8, "debug"), BoundedNormalActor)
    actor = presets.actor_v3(disc, 8, "debug")
    assert isinstance(actor, DiscreteActor) and actor.unimix == 0.0  # 2024: categorical
    assert presets.actor_v3(disc, 8, "debug", 2023).unimix == 0.01  # 2023: onehot
    assert presets.rho_v2(disc) == 1.0 and presets.rho_v2(box) == 0.0
    assert isinstance(presets.critic_v2(8), MSECritic)
    assert isinstance(presets.critic_v3(8, "debug"), TwoHotCritic)
    assert presets.actor_v3(box, 8, "debug")(torch.zeros(2, 8)).sample().shape == (2, 3)


def test_unsupported_action_spaces_are_named():
    import gymnasium as gym

    with pytest.raises(ValueError, match="MultiDiscrete"):
        presets.action_size(gym.spaces.MultiDiscrete([2, 3]))
    with pytest.raises(ValueError, match="unbounded"):
        presets.action_size(gym.spaces.Box(-float("inf"), float("inf"), (2,)))
