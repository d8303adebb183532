"""torchrl 0.14.1's own DreamerV3 learner update, as a benchmark peer of wmblocks.

Assembled as torchrl's maintained example does (pytorch/rl
``sota-implementations/dreamer_v3/``: ``train.py`` ``_build_learner`` and
``_make_learner_update``, ``dreamer_v3_agent.py``, ``config.yaml``) from torchrl's
classes: ``RSSMPriorV3`` (block GRU), ``RSSMPosteriorV3`` (RMSNorm), ``RSSMRolloutV3``,
``DreamerV3MLP``, ``SymExpTwoHot``, ``DreamerEnv`` + ``WorldModelWrapper``,
``DreamerV3DiscreteActor``, the three DreamerV3 losses composed by ``DreamerV3Loss``,
``SoftUpdate``, ``DreamerV3Optimizer`` (AGC 0.3 + LaProp, lr 4e-5, eps 1e-20, 1000
warm-up steps; one for all modules) and ``DreamerV3OptimizationStepper`` (eager). The
example's settings: unimix 0.01, free bits 1, dyn 1 / rep 0.1, continue target 1 - 1/333
with gamma 1, lambda 0.95, REINFORCE for both action kinds, return normalisation,
slow-critic regulariser 1 (tau 0.02), replay value loss 0.3.

Size mapping, wmblocks ``presets.SIZES_2024`` -> the example's ``networks.*``:

    wmblocks            torchrl                              1m      XS
    deter               rnn_hidden_dim                       512     256
    hidden and units    hidden_dim (RSSM and every MLP)      64      256
    stoch x classes     num_categoricals x num_classes       32 x 4  32 x 32
    layers              encoder_layers, decoder_layers       3       1
    head_layers         reward_layers (reward, continue)     1       1
    ac_layers           actor_layers, value_layers           3       1
    blocks              num_blocks                           8       8
    V3_2024 RSSM        prior_layers 2, posterior_layers 1, dynamics_layers 1

torchrl has one width for RSSM and MLPs: only presets with hidden == units map (1m, XS).
1m is the example's DMC preset (README: 640,867 parameters, obs 24, 6 actions); both
libraries count the same parameters at 1m and XS. Vector observations only (no CNN).

Differences from wmblocks' 2024 update, same widths:
* the discrete policy mixes in 1% uniform (the example's unimix); wmblocks' has none.
* replay rows: torchrl's row t is (z_t, h_t, a_t, o_{t+1}) and the chunk starts from
  zero z/h here (the example uses the posterior stored by an earlier update, at no
  extra cost); wmblocks' row t is (o_t, a_{t-1}) plus one stored-context row.
* imagination goes through TensorDicts and ``EnvBase.rollout`` (``step_mdp`` per step)
  with autograd on (``hold_out_net`` only freezes parameters); wmblocks' REINFORCE
  rollout is raw tensors and builds no graph. torchrl runs the online critic on the
  imagined states three times (bootstrap, REINFORCE baseline, value loss), wmblocks once.
* the block GRU copies the shared inputs into every group; wmblocks applies that part
  of the first layer once (same parameters and maths).
* the continuous actor is the example's own module (torchrl ships none), rewritten
  here: DreamerV3MLP trunk, mean and std heads, tanh mean, std in [0.1, 1],
  IndependentNormal; wmblocks uses its BoundedNormalActor.
* the example's lr is 4e-5; wmblocks' bench_update uses its recipe default 2e-4.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
)
from tensordict.nn import TensorDictModule as TDM
from tensordict.nn import TensorDictSequential as Seq
from torchrl.data import Bounded, Composite, OneHot, Unbounded
from torchrl.envs.model_based.dreamer import DreamerEnv
from torchrl.modules import (
    DreamerV3DiscreteActor,
    DreamerV3MLP,
    RSSMPosteriorV3,
    RSSMPriorV3,
    RSSMRolloutV3,
    SymExpTwoHot,
    WorldModelWrapper,
)
from torchrl.modules.distributions.continuous import IndependentNormal
from torchrl.modules.models.model_based import _dreamer_v3_init
from torchrl.objectives import (
    DreamerV3ActorLoss,
    DreamerV3Loss,
    DreamerV3ModelLoss,
    DreamerV3ValueLoss,
    symexp,
    symlog,
)
from torchrl.objectives.utils import SoftUpdate, ValueEstimators
from torchrl.trainers.algorithms import DreamerV3OptimizationStepper, DreamerV3Optimizer

# wmblocks presets (wmblocks/presets.py SIZES_2024) in torchrl's argument names.
SIZES = {
    "1m": dict(deter=512, hidden=64, stoch=32, classes=4, layers=3, head_layers=1, ac_layers=3),
    "XS": dict(deter=256, hidden=256, stoch=32, classes=32, layers=1, head_layers=1, ac_layers=1),
}
BINS, BLOCKS, EPS, UNIMIX, CONT_HORIZON = 255, 8, 1e-4, 0.01, 333.0
# The example's loss and optimiser settings (config.yaml, train.py _build_learner).
WM_LOSS = dict(num_reward_bins=BINS, unimix=UNIMIX, free_bits=1.0, kl_mode="separate")
WM_LOSS.update(lambda_dynamic=1.0, lambda_representation=0.1, lambda_continue=1.0)
WM_LOSS.update(continue_target_scale=1 - 1 / CONT_HORIZON, global_average=False)
ACTOR_LOSS = dict(use_reinforce=True, return_normalization_rate=0.01)
ACTOR_LOSS.update(return_normalization_min_scale=1.0)
VALUE_LOSS = dict(value_loss="two_hot", num_value_bins=BINS, slow_critic_regularization=1.0)
LEARNER = dict(replay_value_loss_weight=0.3, continuation_horizon=CONT_HORIZON, lmbda=0.95)
OPTIM = dict(lr=4e-5, agc=0.3, eps=1e-20, warmup_steps=1000)


def _float(key) -> TDM:
    return TDM(lambda x: x.float(), in_keys=[key], out_keys=[key])


def _nxt(*keys) -> list:
    return [("next", k) for k in keys]


class _VectorDecoder(torch.nn.Module):
    """The example's vector decoder: trunk on cat([z, h]) and a linear head (symlog)."""

    def __init__(self, in_features: int, obs_dim: int, units: int, layers: int):
        super().__init__()
        self.trunk = DreamerV3MLP(in_features, None, depth=layers, num_cells=units, norm_eps=EPS)
        self.head = torch.nn.Linear(units, obs_dim)
        self.head.apply(_dreamer_v3_init)

    def forward(self, state, belief):
        return self.head(self.trunk(state, belief))


class _GaussianActorNet(torch.nn.Module):
    """The example's continuous DreamerV3 policy: trunk, mean and std heads."""

    def __init__(self, in_features: int, action_dim: int, units: int, layers: int):
        super().__init__()
        self.trunk = DreamerV3MLP(in_features, None, depth=layers, num_cells=units, norm_eps=EPS)
        self.mean = torch.nn.Linear(units, action_dim)
        self.std = torch.nn.Linear(units, action_dim)
        for head in (self.mean, self.std):
            head.apply(_dreamer_v3_init)
            with torch.no_grad():
                head.weight.mul_(0.01)

    def forward(self, state, belief):
        x = self.trunk(belief, state)
        std = 0.9 * torch.sigmoid(self.std(x) + 2.0) + 0.1  # in [0.1, 1]
        return self.mean(x).tanh(), std


def _modules(s: SimpleNamespace, obs_dim: int, action_dim: int, discrete: bool):
    """World model, imagination model, continuation model, actor and critic."""
    feat, units = s.stoch * s.classes + s.deter, s.hidden
    latent = dict(num_categoricals=s.stoch, num_classes=s.classes, unimix=UNIMIX, norm_eps=EPS)
    prior = RSSMPriorV3(
        action_shape=torch.Size([action_dim]), action_dim=action_dim, **latent,
        hidden_dim=units, rnn_hidden_dim=s.deter, recurrent_model="block_gru",
        num_blocks=BLOCKS, num_layers=1, prior_num_layers=2,
    )  # fmt: skip
    posterior = RSSMPosteriorV3(
        hidden_dim=units, rnn_hidden_dim=s.deter, obs_embed_dim=units, **latent,
        use_rms_norm=True, num_layers=1,
    )  # fmt: skip
    mlp = dict(num_cells=units, norm_eps=EPS)
    enc = DreamerV3MLP(obs_dim, None, depth=s.layers, **mlp)
    dec = _VectorDecoder(feat, obs_dim, units, s.layers)
    reward_net = DreamerV3MLP(feat, BINS, depth=s.head_layers, outscale=0.0, **mlp)
    cont_net = DreamerV3MLP(feat, 1, depth=s.head_layers, **mlp)
    two_hot = SymExpTwoHot(BINS)
    world_model = Seq(
        TDM(symlog, _nxt("observation"), _nxt("symlog_obs")),
        TDM(enc, _nxt("symlog_obs"), _nxt("encoded_latents")),
        RSSMRolloutV3(
            TDM(prior, ["state", "belief", "action"], _nxt("prior_logits", "state", "belief")),
            TDM(posterior, _nxt("belief", "encoded_latents"), _nxt("posterior_logits", "state")),
            reset_key="is_init",
        ),
        TDM(dec, _nxt("state", "belief"), _nxt("reco_symlog")),
        _float(("next", "reco_symlog")),
        TDM(symexp, _nxt("reco_symlog"), _nxt("reco_pixels")),
        TDM(reward_net, _nxt("belief", "state"), _nxt("reward_logits")),
        _float(("next", "reward_logits")),
        TDM(two_hot, _nxt("reward_logits"), _nxt("reward")),
        TDM(cont_net, _nxt("belief", "state"), _nxt("continue_pred")),
    )
    imagination = WorldModelWrapper(
        TDM(prior, ["state", "belief", "action"], ["_", "state", "belief"]),
        Seq(
            TDM(reward_net, ["belief", "state"], ["reward_logits"]),
            _float("reward_logits"),
            TDM(two_hot, ["reward_logits"], ["reward"]),
        ),
    )
    continuation = Seq(
        TDM(cont_net, ["belief", "state"], ["continue_logits"]),
        TDM(torch.sigmoid, ["continue_logits"], ["continuation"]),
    )
    if discrete:
        actor = DreamerV3DiscreteActor(feat, action_dim, depth=s.ac_layers, unimix=UNIMIX, **mlp)
    else:
        net = _GaussianActorNet(feat, action_dim, units, s.ac_layers)
        actor = ProbabilisticTensorDictSequential(
            TDM(net, ["state", "belief"], ["loc", "scale"]),
            ProbabilisticTensorDictModule(
                in_keys=["loc", "scale"],
                out_keys=["action"],
                default_interaction_type=InteractionType.RANDOM,
                distribution_class=IndependentNormal,
                return_log_prob=True,
                log_prob_key="action_log_prob",
            ),
        )
    value_net = DreamerV3MLP(feat, BINS, depth=s.ac_layers, outscale=0.0, **mlp)
    critic = Seq(
        TDM(value_net, ["belief", "state"], ["state_value_logits"]),
        _float("state_value_logits"),
        TDM(SymExpTwoHot(BINS), ["state_value_logits"], ["state_value"]),
    )
    return world_model, imagination, continuation, actor, critic


def _imagination_env(imagination, s: SimpleNamespace, action_dim: int, discrete: bool, dev):
    stoch = s.stoch * s.classes
    env = DreamerEnv(imagination, torch.Size([stoch]), torch.Size([s.deter]), device=dev)
    env.observation_spec = Composite(state=Unbounded(stoch), belief=Unbounded(s.deter))
    env.state_spec = env.observation_spec.clone()
    action = OneHot(action_dim) if discrete else Bounded(-1.0, 1.0, (action_dim,))
    env.action_spec = action.to(dev)
    env.reward_spec = Unbounded((1,))
    return env.to(dev)


def build(
    size: str,
    batch: int,
    length: int,
    horizon: int,
    obs_dim: int,
    action_dim: int,
    discrete: bool,
    device="cpu",
) -> tuple[Callable[[], None], int]:
    """``(update, n_params)`` for torchrl's DreamerV3 at wmblocks' size ``size``
    ("1m" or "XS"). ``update()`` runs one full learner update (world-model loss,
    imagination of ``horizon`` steps from all ``batch * length`` posterior states,
    actor, critic and replay-value losses, one backward, the optimiser step and the
    slow-critic update) on a fixed random replay batch of ``batch`` x ``length``
    steps, built once here and cloned per call; the last call's detached losses are
    left in ``update.losses``. ``n_params`` counts the trainable parameters of the
    world model, actor and critic."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    torch.manual_seed(0)
    dev = torch.device(device)
    s = SimpleNamespace(**SIZES[size])
    world_model, imagination, continuation, actor, critic = (
        m.to(dev) for m in _modules(s, obs_dim, action_dim, discrete)
    )
    env = _imagination_env(imagination, s, action_dim, discrete, dev)
    model_loss = DreamerV3ModelLoss(world_model, **WM_LOSS, detach_output=False).to(dev)
    model_loss.set_keys(pixels="observation")
    actor_loss = DreamerV3ActorLoss(
        actor,
        critic,
        env,
        continuation_model=continuation,
        imagination_horizon=horizon,
        **ACTOR_LOSS,
    )
    actor_loss.make_value_estimator(ValueEstimators.TDLambda, gamma=1.0, lmbda=0.95)
    actor_loss.to(dev)
    value_loss = DreamerV3ValueLoss(critic, actor_loss=actor_loss, **VALUE_LOSS).to(dev)
    target_updater = SoftUpdate(value_loss, tau=0.02)
    params = [*world_model.parameters(), *actor.parameters(), *value_loss.parameters()]
    optimizer = DreamerV3Optimizer(params, **OPTIM)
    loss = DreamerV3Loss(model_loss, actor_loss, value_loss, **LEARNER)
    stepper = DreamerV3OptimizationStepper(
        loss, optimizer, target_updater, compile_train_step=False, cudagraph=False
    )
    B, T = batch, length
    if discrete:
        action = torch.nn.functional.one_hot(torch.randint(0, action_dim, (B, T)), action_dim)
    else:
        action = torch.rand(B, T, action_dim) * 2 - 1
    flag = torch.zeros(B, T, 1, dtype=torch.bool)
    nxt = dict(observation=torch.randn(B, T, obs_dim), reward=torch.randn(B, T, 1))
    nxt.update(done=flag, terminated=flag.clone())
    fixed = TensorDict(
        state=torch.zeros(B, T, s.stoch * s.classes), belief=torch.zeros(B, T, s.deter),
        action=action.float(), is_init=torch.rand(B, T, 1) < 0.01, next=nxt,
        batch_size=[B, T], device=dev,
    )  # fmt: skip
    n_params = sum(p.numel() for p in {id(p): p for p in params if p.requires_grad}.values())

    def update() -> None:
        update.losses = stepper.step(None, fixed.clone())

    return update, n_params


if __name__ == "__main__":
    for discrete in (True, False):
        update, n = build("1m", 16, 64, 15, 24, 6, discrete)
        for _ in range(2):
            update()
        losses = {k: float(v) for k, v in update.losses.items() if k.startswith("loss_")}
        finite = bool(torch.isfinite(torch.tensor(list(losses.values()))).all())
        kind = "discrete" if discrete else "continuous"
        print(f"torchrl DreamerV3 1m {kind}: {n:,} params; losses finite: {finite}")
        print("  " + ", ".join(f"{k}={v:.3f}" for k, v in sorted(losses.items())))
