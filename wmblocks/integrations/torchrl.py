"""wmblocks' blocks for torchrl: TensorDictModule forms and a model-based environment.

Everything here wraps wmblocks' own modules (no maths is redone) so that they read and
write TensorDicts under documented keys (docs/torchrl.md has the full table):

    encoder_module(wm)         observation keys                -> embed
    observe_module(wm)         obs keys, action, is_first      -> embed, deter, stoch,
                                                                  post, prior   ([B, T])
    imagine_step_module(wm)    deter, stoch, action            -> ("next", deter / stoch)
    reward_module(wm)          ("next", deter / stoch)         -> ("next", "reward")
    continue_module(wm)        ("next", deter / stoch)         -> ("next", "cont" /
                                                                  "terminated" / "done")
    decoder_module(wm)         deter, stoch                    -> "reco_<obs key>"
    actor_module(actor)        deter, stoch                    -> action, action_log_prob
    critic_module(critic)      deter, stoch                    -> state_value
    ImaginationEnv(wm, ...)    a torchrl ModelBasedEnvBase: ``env.rollout(H, policy)``
                               imagines H steps in the latent space

Two layouts meet here:

* wmblocks' replay layout (:mod:`wmblocks.keys`), read by :func:`observe_module`: a
  ``[B, T]`` batch whose row t holds o_t, a_t (the action taken *at* o_t) and
  is_first_t; the module shifts the actions itself, as
  :meth:`~wmblocks.nn.world_model.WorldModel.observe` does:
  h_t = f(h_{t-1}, z_{t-1}, a_{t-1}) with a_{-1} = 0.
* torchrl's transition layout, used by everything else: the root holds the state
  s_t = (deter h_t, stoch z_t) and the action a_t taken in it; ``("next", ...)``
  holds s_{t+1} and what comes with arriving there: the reward ``[..., 1]`` and the
  continue flags ``[..., 1]``.

Every head, the actor and the critic read ``deter`` ``[..., D]`` and ``stoch``
``[..., Z]`` and run on ``features(deter, stoch) = cat([z, h], -1)``
(:func:`wmblocks.nn.rssm.features`). Distributions are not TensorDict leaves: the
heads write their mean (or mode) and the continue head its probability and mode.

Import it on its own (``from wmblocks.integrations import torchrl as wtrl``): it loads
torchrl, which ``import wmblocks`` never does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictSequential,
    dispatch,
)
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torch.distributions import Distribution
from torchrl.data import Bounded, Categorical, Composite, OneHot, Unbounded
from torchrl.envs.model_based import ModelBasedEnvBase

from wmblocks import keys
from wmblocks.errors import UserError
from wmblocks.nn.rssm import RSSM, features
from wmblocks.nn.world_model import WorldModel

# torchrl's names (wmblocks.keys has no constant for them).
NEXT = "next"
DONE = "done"
TERMINATED = "terminated"
CONT = "cont"  # p(continue) of the continue head, [..., 1]
STATE_VALUE = "state_value"  # torchrl's value key, [..., 1]
ACTION_LOG_PROB = "action_log_prob"  # log pi(a | s), [...]

STATE = (keys.DETER, keys.STOCH)
NEXT_STATE = ((NEXT, keys.DETER), (NEXT, keys.STOCH))
OBSERVED = (keys.EMBED, keys.DETER, keys.STOCH, keys.POST, keys.PRIOR)


def reco_key(obs_key: str) -> str:
    """``reco_<obs_key>``: where :func:`decoder_module` writes the reconstruction of an
    observation key (torchrl's Dreamer writes ``reco_pixels`` for ``pixels``)."""
    return f"reco_{obs_key}"


# --- Key checks -----------------------------------------------------------------------


def _key_names(td: TensorDictBase) -> list[str]:
    return sorted(str(k) for k in td.keys(include_nested=True, leaves_only=True))


def require_keys(td: TensorDictBase, needed: Sequence[NestedKey], who: str) -> None:
    """Raise a ``KeyError`` naming the keys of ``needed`` that ``td`` lacks, the keys it
    has, and who needed them (``who``: the module's name)."""
    have = td.keys(include_nested=True)
    missing = [k for k in needed if k not in have]
    if missing:
        raise KeyError(
            f"{who}: the input tensordict lacks {missing}; it has {_key_names(td)}. "
            f"The module reads {list(needed)} (pass in_keys=... to read other keys; "
            f"see docs/torchrl.md)"
        )


class _Module(TensorDictModule):
    """A :class:`~tensordict.nn.TensorDictModule` that checks its ``in_keys`` first and
    names the missing ones, with what the input has (``who`` names the factory)."""

    def __init__(self, module: nn.Module, in_keys, out_keys, who: str):
        super().__init__(module, in_keys=list(in_keys), out_keys=list(out_keys))
        self.who = who

    @dispatch(auto_batch_size=False)
    def forward(self, tensordict: TensorDictBase, *args, **kwargs) -> TensorDictBase:
        require_keys(tensordict, self.in_keys, self.who)
        return super().forward(tensordict, *args, **kwargs)


def _pair(in_keys: Sequence[NestedKey], who: str) -> list[NestedKey]:
    if len(in_keys) != 2:
        raise UserError(f"{who}: in_keys must be the two keys (deter, stoch), got {in_keys}")
    return list(in_keys)


# --- Adapters: tensors in, tensors out, calling wmblocks' modules ----------------------


class _Encode(nn.Module):
    """``MultiEncoder`` on positional tensors in the order of its (sorted) keys."""

    def __init__(self, wm: WorldModel):
        super().__init__()
        self.encoder = wm.encoder

    def forward(self, *obs: Tensor) -> Tensor:
        return self.encoder(dict(zip(self.encoder.keys, obs, strict=True)))


class _Observe(nn.Module):
    """:meth:`WorldModel.observe` on positional tensors (observation keys, action,
    is_first), returning embed, deter, stoch, post, prior."""

    def __init__(self, wm: WorldModel):
        super().__init__()
        self.wm = wm

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        *obs, action, is_first = tensors
        if is_first.ndim == 3 and is_first.shape[-1] == 1:  # torchrl's [B, T, 1] flags
            is_first = is_first.squeeze(-1)
        batch = TensorDict(
            {**dict(zip(self.wm.obs_keys, obs, strict=True)), keys.ACTION: action},
            batch_size=is_first.shape,
        )
        batch.set(keys.IS_FIRST, is_first)
        out = self.wm.observe(batch)
        return tuple(out[k] for k in OBSERVED)


def _flat(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])


class _ImagineStep(nn.Module):
    """:meth:`RSSM.img_step` on any batch shape ``[...]``: flattened to ``[N, .]`` for
    the core and back."""

    def __init__(self, rssm: RSSM, action_dim: int | None):
        super().__init__()
        self.rssm, self.action_dim = rssm, action_dim

    def forward(self, deter: Tensor, stoch: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        if self.action_dim is not None and action.shape[-1] != self.action_dim:
            raise UserError(
                f"imagine_step_module: the action has {action.shape[-1]} entries in its "
                f"last dim but the world model was built for {self.action_dim} (one-hot "
                "for discrete actions)"
            )
        batch = deter.shape[:-1]
        action = action.to(deter.dtype)
        h, z = self.rssm.img_step(_flat(deter), _flat(stoch), _flat(action))
        return h.reshape(*batch, -1), z.reshape(*batch, -1)


class _OnFeatures(nn.Module):
    """``stat`` (``mean`` or ``mode``) of ``head(cat([z, h]))``, with a trailing dim
    of 1 added when ``unsqueeze`` (torchrl's ``[..., 1]`` rewards and values)."""

    def __init__(self, head: nn.Module, stat: str, unsqueeze: bool):
        super().__init__()
        if stat not in ("mean", "mode"):
            raise UserError(f"stat must be 'mean' or 'mode', got {stat!r}")
        self.head, self.stat, self.unsqueeze = head, stat, unsqueeze

    def forward(self, deter: Tensor, stoch: Tensor) -> Tensor:
        out = getattr(self.head(features(deter, stoch)), self.stat)
        return out.unsqueeze(-1) if self.unsqueeze else out


def continue_flags(cont_head: nn.Module | None, deter: Tensor, stoch: Tensor):
    """``(p, terminated)`` ``[..., 1]`` each at the state (deter, stoch): p the continue
    head's probability (its Bernoulli mean) and ``terminated`` = (mode == 0), i.e.
    p <= 0.5 (logit <= 0). Without a continue head (V1, V2 without a discount head),
    p = 1 and nothing terminates."""
    if cont_head is None:
        p = torch.ones_like(deter[..., :1])
        return p, torch.zeros_like(p, dtype=torch.bool)
    dist = cont_head(features(deter, stoch))
    return dist.mean.unsqueeze(-1), (dist.mode == 0).unsqueeze(-1)


class _Continue(nn.Module):
    """:func:`continue_flags` written as (cont, terminated, done = terminated)."""

    def __init__(self, cont_head: nn.Module):
        super().__init__()
        self.cont_head = cont_head

    def forward(self, deter: Tensor, stoch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        p, terminated = continue_flags(self.cont_head, deter, stoch)
        return p, terminated, terminated.clone()


class _Decode(nn.Module):
    """The ``stat`` of each observation key's decoder distribution, in the sorted key
    order of the ``MultiDecoder``."""

    def __init__(self, wm: WorldModel, stat: str):
        super().__init__()
        self.decoder, self.stat = wm.decoder, stat

    def forward(self, deter: Tensor, stoch: Tensor) -> tuple[Tensor, ...]:
        dists = self.decoder(features(deter, stoch))
        return tuple(getattr(dists[k], self.stat) for k in self.decoder.keys)


# --- The TensorDictModule forms ---------------------------------------------------------


def encoder_module(wm: WorldModel, out_key: NestedKey = keys.EMBED) -> TensorDictModule:
    """The encoder: reads every observation key of ``wm`` (``wm.obs_keys``, sorted;
    vectors ``[..., K]``, images ``[..., C, H, W]``, any batch shape) and writes
    ``embed`` ``[..., E]`` = ``wm.encoder(obs)``."""
    return _Module(_Encode(wm), wm.obs_keys, [out_key], "encoder_module")


def observe_module(wm: WorldModel) -> TensorDictModule:
    """Filtering a ``[B, T]`` replay batch: :meth:`WorldModel.observe` as a module.

    Reads (wmblocks' replay layout, :mod:`wmblocks.keys`): the observation keys
    ``[B, T, ...]`` (o_t), ``action`` ``[B, T, A]`` (a_t, the action taken at o_t;
    one-hot for discrete) and ``is_first`` ``[B, T]`` bool (``[B, T, 1]`` accepted).
    The actions are shifted inside (a_{t-1} enters step t; zeros at t = 0 and where
    is_first), and each chunk starts from the RSSM's initial state.

    Writes ``embed`` ``[B, T, E]`` (e_t), ``deter`` ``[B, T, D]`` (h_t), ``stoch``
    ``[B, T, Z]`` (z_t ~ q), ``post`` and ``prior``: the statistics of q(z_t | h_t, e_t)
    and p(z_t | h_t) (categorical logits ``[B, T, S, C]``; Gaussian ``[B, T, 2, S]``,
    mean and std). ``stoch`` is sampled: seed torch for a reproducible call.
    """
    in_keys = [*wm.obs_keys, keys.ACTION, keys.IS_FIRST]
    return _Module(_Observe(wm), in_keys, OBSERVED, "observe_module")


def _action_dim(rssm: RSSM) -> int | None:
    """A, the action size the RSSM's core was built for (every wmblocks core has an
    ``action_in`` linear layer), or None for a core without one."""
    layer = getattr(rssm.core, "action_in", None)
    return layer.in_features if isinstance(layer, nn.Linear) else None


def imagine_step_module(
    wm: WorldModel,
    in_keys: Sequence[NestedKey] = (keys.DETER, keys.STOCH, keys.ACTION),
    out_keys: Sequence[NestedKey] = NEXT_STATE,
) -> TensorDictModule:
    """One imagination step, :meth:`RSSM.img_step`: h_{t+1} = f(h_t, z_t, a_t),
    z_{t+1} ~ p(z | h_{t+1}).

    Reads ``deter`` ``[..., D]`` (h_t), ``stoch`` ``[..., Z]`` (z_t) and ``action``
    ``[..., A]`` (a_t, taken in s_t; float one-hot for discrete, [-1, 1] for
    continuous: the V3 cores clip it themselves), any batch shape. Writes
    ``("next", "deter")`` and ``("next", "stoch")`` (torchrl's transition layout).
    ``stoch`` is sampled: seed torch for a reproducible call.
    """
    return _Module(
        _ImagineStep(wm.rssm, _action_dim(wm.rssm)), in_keys, out_keys, "imagine_step_module"
    )


def reward_module(
    wm: WorldModel,
    in_keys: Sequence[NestedKey] = NEXT_STATE,
    out_key: NestedKey = (NEXT, keys.REWARD),
    stat: str = "mean",
) -> TensorDictModule:
    """The reward head: reads the state arrived at, ``("next", "deter")`` and
    ``("next", "stoch")``, and writes ``("next", "reward")`` ``[..., 1]`` = the ``stat``
    (``"mean"``: the twohot expectation (V3) or the Gaussian / MSE prediction (V1, V2);
    or ``"mode"``) of ``wm.reward_head(cat([z, h]))``: the reward for arriving at that
    state (wmblocks' r_t of o_t). For an observed wmblocks batch pass
    ``in_keys=("deter", "stoch")`` and an ``out_key`` other than ``"reward"`` (which
    holds the observed ``[B, T]`` reward there)."""
    head = _OnFeatures(wm.reward_head, stat, unsqueeze=True)
    return _Module(head, _pair(in_keys, "reward_module"), [out_key], "reward_module")


def continue_module(
    wm: WorldModel,
    in_keys: Sequence[NestedKey] = NEXT_STATE,
    out_keys: Sequence[NestedKey] = ((NEXT, CONT), (NEXT, TERMINATED), (NEXT, DONE)),
) -> TensorDictModule:
    """The continue head (V3's continue, V2's discount predictor): reads the state
    arrived at (``("next", "deter")``, ``("next", "stoch")``) and writes three
    ``[..., 1]`` entries (:func:`continue_flags`): ``cont`` = p(continue) (float; the
    V3-2024 imagined continue flag), ``terminated`` = the Bernoulli mode is 0, i.e.
    p <= 0.5 (bool; V3-2023's flag is 1 - terminated), and ``done`` = terminated.
    Raises ``UserError`` for a world model without a continue head (V1; V2 built with
    ``discount_head=False``)."""
    if wm.cont_head is None:
        raise UserError(
            "continue_module: this world model has no continue head (V1, or V2 built "
            "with discount_head=False); ImaginationEnv then never terminates"
        )
    if len(out_keys) != 3:
        raise UserError(
            f"continue_module: out_keys must be (cont, terminated, done), got {out_keys}"
        )
    body = _Continue(wm.cont_head)
    return _Module(body, _pair(in_keys, "continue_module"), out_keys, "continue_module")


def decoder_module(
    wm: WorldModel, in_keys: Sequence[NestedKey] = STATE, stat: str = "mean"
) -> TensorDictModule:
    """The decoder: reads ``deter`` and ``stoch`` and writes, for every observation key
    k, ``reco_<k>`` (:func:`reco_key`) = the ``stat`` of its distribution, shaped as
    the observation (``[..., K]``, ``[..., C, H, W]``), in the decoder's target space
    (``wm.decoder.target(k, x)``): raw values for vectors (V3's symlog prediction
    is symexp'ed back), images in [0, 1] (V3) or x / 255 - 0.5 (V1, V2)."""
    out_keys = [reco_key(k) for k in wm.decoder.keys]
    return _Module(_Decode(wm, stat), _pair(in_keys, "decoder_module"), out_keys, "decoder_module")


def critic_module(
    critic: nn.Module,
    in_keys: Sequence[NestedKey] = STATE,
    out_key: NestedKey = STATE_VALUE,
    stat: str = "mean",
) -> TensorDictModule:
    """A critic (``TwoHotCritic``, ``MSECritic`` or a ``SlowCritic``): reads ``deter`` and
    ``stoch`` and writes ``state_value`` ``[..., 1]`` = the ``stat`` of
    ``critic(cat([z, h]))`` (torchrl's value key and layout)."""
    body = _OnFeatures(critic, stat, unsqueeze=True)
    return _Module(body, _pair(in_keys, "critic_module"), [out_key], "critic_module")


class ActionDistribution(Distribution):
    """A wmblocks policy distribution seen as a ``torch.distributions.Distribution`` (what
    tensordict's probabilistic modules require); every method calls the wrapped one.

    ``rsample()`` is reparameterised for continuous actors and a straight-through
    one-hot for :class:`~wmblocks.nn.actors.DiscreteActor`; ``sample()`` is its value
    without gradient (the same random draw). ``log_prob(a)`` ``[...]``, ``entropy()``
    ``[...]``, ``mode`` and ``mean`` ``[..., A]`` are the wrapped distribution's;
    ``deterministic_sample`` is the mode. Draws of several samples at once
    (``sample_shape``) are not supported.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, dist):
        self.dist = dist
        shape = dist.mode.shape
        super().__init__(shape[:-1], shape[-1:], validate_args=False)

    @staticmethod
    def _one(sample_shape) -> None:
        if tuple(sample_shape) != ():
            raise UserError(
                f"wmblocks' policy distributions draw one sample per state; got "
                f"sample_shape={tuple(sample_shape)} (leave num_samples unset)"
            )

    def rsample(self, sample_shape=()) -> Tensor:
        self._one(sample_shape)
        return self.dist.rsample()

    def sample(self, sample_shape=()) -> Tensor:
        self._one(sample_shape)
        return self.dist.sample()

    def log_prob(self, value: Tensor) -> Tensor:
        return self.dist.log_prob(value)

    def entropy(self) -> Tensor:
        return self.dist.entropy()

    @property
    def mode(self) -> Tensor:
        return self.dist.mode

    @property
    def mean(self) -> Tensor:
        return self.dist.mean

    @property
    def deterministic_sample(self) -> Tensor:
        return self.dist.mode


class _PolicyDistribution(nn.Module):
    """The ``distribution_class`` of :func:`actor_module`: an ``nn.Module`` (so the actor's
    parameters belong to the module tree) mapping (deter, stoch) to
    :class:`ActionDistribution` of ``actor(cat([z, h]))``."""

    def __init__(self, actor: nn.Module, in_keys: Sequence[NestedKey]):
        super().__init__()
        self.actor, self.in_keys = actor, list(in_keys)

    def forward(self, deter: Tensor | None = None, stoch: Tensor | None = None):
        if deter is None or stoch is None:
            raise KeyError(
                f"actor_module: the input tensordict lacks one of {self.in_keys} "
                "(deter, stoch); pass in_keys=... to read other keys"
            )
        return ActionDistribution(self.actor(features(deter, stoch)))


def actor_module(
    actor: nn.Module,
    in_keys: Sequence[NestedKey] = STATE,
    out_key: NestedKey = keys.ACTION,
    *,
    log_prob_key: NestedKey | None = ACTION_LOG_PROB,
    default_interaction_type: InteractionType = InteractionType.RANDOM,
) -> ProbabilisticTensorDictSequential:
    """A wmblocks actor as a tensordict probabilistic policy.

    Reads ``deter`` and ``stoch`` (s_t), builds pi(. | s_t) = ``actor(cat([z, h]))``
    (:class:`ActionDistribution`) and writes ``action`` ``[..., A]`` (float one-hot for
    discrete, [-1, 1]^A-centred for continuous: V3's bounded normal samples are not
    clipped) and, unless ``log_prob_key`` is None, ``action_log_prob`` ``[...]`` =
    log pi(a | s_t).

    Which action: tensordict's interaction type, ``default_interaction_type`` when none
    is set: ``RANDOM`` (default) calls ``rsample()`` (a sample with gradient),
    ``MODE`` / ``DETERMINISTIC`` the mode, ``MEAN`` the mean; choose one with
    ``tensordict.nn.set_interaction_type`` or torchrl's ``set_exploration_type``.
    ``module.get_dist(td)`` returns the distribution (for losses).
    """
    dist = _PolicyDistribution(actor, _pair(in_keys, "actor_module"))
    prob = ProbabilisticTensorDictModule(
        in_keys={"deter": in_keys[0], "stoch": in_keys[1]},
        out_keys=[out_key],
        distribution_class=dist,
        default_interaction_type=default_interaction_type,
        return_log_prob=log_prob_key is not None,
        log_prob_key=log_prob_key,
    )
    return ProbabilisticTensorDictSequential(prob)


def transition_module(wm: WorldModel) -> TensorDictSequential:
    """One imagined transition in torchrl's layout: :func:`imagine_step_module`, then
    :func:`reward_module` and (if the world model has one) :func:`continue_module` on
    the state arrived at. Reads ``deter``, ``stoch``, ``action``; writes
    ``("next", k)`` for k in deter, stoch, reward, and cont, terminated, done when there
    is a continue head. The world model of :class:`ImaginationEnv`."""
    parts = [imagine_step_module(wm), reward_module(wm)]
    if wm.cont_head is not None:
        parts.append(continue_module(wm))
    return TensorDictSequential(*parts)


def world_model_modules(
    wm: WorldModel, actor: nn.Module | None = None, critic: nn.Module | None = None
) -> dict[str, TensorDictModule]:
    """Every module above with its default keys, by name: ``encoder``, ``observe``,
    ``imagine_step``, ``reward``, ``decoder``, ``transition``, ``continue`` (when ``wm``
    has a continue head), ``actor`` and ``critic`` (when given). They share the
    parameters of ``wm``, ``actor`` and ``critic``."""
    out: dict[str, TensorDictModule] = {
        "encoder": encoder_module(wm),
        "observe": observe_module(wm),
        "imagine_step": imagine_step_module(wm),
        "reward": reward_module(wm),
        "decoder": decoder_module(wm),
        "transition": transition_module(wm),
    }
    if wm.cont_head is not None:
        out["continue"] = continue_module(wm)
    if actor is not None:
        out["actor"] = actor_module(actor)
    if critic is not None:
        out["critic"] = critic_module(critic)
    return out


# --- The world model as a torchrl environment -------------------------------------------


def start_states(observed: TensorDictBase, detach: bool = True) -> TensorDictBase:
    """The imagination start states of an observed batch: ``deter`` and ``stoch`` of every
    step, flattened to a new ``[N]`` TensorDict (N = B * T for a ``[B, T]`` batch, as
    Dreamer imagines from every posterior state), detached by default (Dreamer's
    behaviour learning does not train the world model). Pass it as
    ``env.rollout(..., tensordict=start_states(observed))``."""
    require_keys(observed, STATE, "start_states")
    start = observed.select(*STATE).reshape(-1)
    return start.detach() if detach else start


def initial_states(rssm: RSSM, batch_size: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The RSSM's initial state (:meth:`RSSM.initial`: zeros for V1, V2, V3-2024; the
    learned h_0 and the prior mode for V3-2023) for a batch shape: ``[*batch, D]``,
    ``[*batch, Z]``."""
    batch = tuple(batch_size)
    deter, stoch = rssm.initial(math.prod(batch))
    return deter.reshape(*batch, -1), stoch.reshape(*batch, -1)


def _device_of(module: nn.Module) -> torch.device:
    return next(iter(module.parameters())).device


class ImaginationEnv(ModelBasedEnvBase):
    """A wmblocks world model as a torchrl model-based environment in its latent space.

    Args:
        wm: the :class:`~wmblocks.nn.world_model.WorldModel`.
        discrete: the action space: one-hot ``[A]`` (``OneHot`` spec, float) if True,
            else a box ``[-1, 1]^A`` (``Bounded`` spec), as wmblocks' actors act.
        action_dim: A; default the size the RSSM's core was built for.
        batch_size: the env's batch shape; ``()`` (default) accepts any batch: the
            start tensordict's shape sets it.
        device: default the world model's (torchrl moves the world model there).

    State: ``deter`` ``[..., D]`` (h) and ``stoch`` ``[..., Z]`` (z), both observations
    and state; ``cont`` ``[..., 1]`` is an observation too (p(continue) of the state,
    1 without a continue head). Reward ``[..., 1]``, ``done`` and ``terminated``
    ``[..., 1]`` bool.

    ``reset(td)`` starts from ``td["deter"]``, ``td["stoch"]`` when ``td`` has them
    (e.g. :func:`start_states` of an observed batch), else from the RSSM's initial
    state (:func:`initial_states`) for ``td``'s or the env's batch shape; done and
    terminated are False, ``cont`` is the head's at the start state (Dreamer's c_0).
    ``step`` runs :func:`transition_module`: ``rssm.img_step`` on the action, then the
    reward head's mean and the continue flags (:func:`continue_flags`: terminated where
    p(continue) <= 0.5) at the state arrived at.

    ``env.rollout(H, policy, tensordict=start, break_when_any_done=False)`` imagines
    exactly H steps, ``[N, H]``, as Dreamer does: a predicted termination is recorded,
    never reset or cut (weight the steps by the cumulative ``("next", "cont")``). With
    torchrl's default ``break_when_any_done=True`` the rollout stops after the first
    step at which any row is predicted terminal.
    """

    def __init__(
        self,
        wm: WorldModel,
        *,
        discrete: bool,
        action_dim: int | None = None,
        batch_size: Sequence[int] = (),
        device: torch.device | str | None = None,
    ):
        device = _device_of(wm) if device is None else torch.device(device)
        action_dim = _action_dim(wm.rssm) if action_dim is None else action_dim
        if action_dim is None:
            raise UserError("ImaginationEnv: pass action_dim (the core has no action_in layer)")
        super().__init__(transition_module(wm), device=device, batch_size=torch.Size(batch_size))
        self.wm, self.discrete, self.action_dim = wm, discrete, action_dim
        self._make_specs()

    @classmethod
    def from_space(cls, wm: WorldModel, space, **kwargs) -> ImaginationEnv:
        """The env for a gymnasium ``Discrete`` or 1-D ``Box`` action space (the space the
        actor was built for, :func:`wmblocks.presets.action_size`)."""
        from wmblocks.presets import action_size

        action_dim, discrete = action_size(space)
        return cls(wm, discrete=discrete, action_dim=action_dim, **kwargs)

    def _make_specs(self) -> None:
        bs, dev, rssm = tuple(self.batch_size), self.device, self.wm.rssm

        def state() -> dict:
            return {
                keys.DETER: Unbounded((*bs, rssm.deter), device=dev),
                keys.STOCH: Unbounded((*bs, rssm.stoch_dim), device=dev),
            }

        self.observation_spec = Composite(
            **state(), **{CONT: Bounded(0.0, 1.0, (*bs, 1), device=dev)}, shape=bs, device=dev
        )
        self.state_spec = Composite(**state(), shape=bs, device=dev)
        if self.discrete:
            action = OneHot(self.action_dim, (*bs, self.action_dim), dev, torch.float32)
        else:
            action = Bounded(-1.0, 1.0, (*bs, self.action_dim), device=dev)
        self.action_spec = action
        self.reward_spec = Unbounded((*bs, 1), device=dev)
        flag = {k: Categorical(2, (*bs, 1), dev, torch.bool) for k in (DONE, TERMINATED)}
        self.full_done_spec = Composite(**flag, shape=bs, device=dev)

    def _start(self, tensordict: TensorDictBase | None) -> tuple[Tensor, Tensor, torch.Size]:
        """The start state (deter, stoch) and the batch shape of a reset."""
        if tensordict is None:
            return (*initial_states(self.wm.rssm, self.batch_size), self.batch_size)
        batch = tensordict.batch_size
        have = tensordict.keys()
        if keys.DETER not in have and keys.STOCH not in have:
            return (*initial_states(self.wm.rssm, batch), batch)
        require_keys(tensordict, STATE, "ImaginationEnv.reset")
        deter, stoch = tensordict[keys.DETER], tensordict[keys.STOCH]
        want = (self.wm.rssm.deter, self.wm.rssm.stoch_dim)
        if (deter.shape[-1], stoch.shape[-1]) != want:
            raise UserError(
                f"ImaginationEnv.reset: deter and stoch must end in {want} (D, Z) for this "
                f"world model, got {tuple(deter.shape)} and {tuple(stoch.shape)}"
            )
        return deter, stoch, batch

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        deter, stoch, batch = self._start(tensordict)
        cont, _ = continue_flags(self.wm.cont_head, deter, stoch)
        no = torch.zeros_like(cont, dtype=torch.bool)
        state = {keys.DETER: deter, keys.STOCH: stoch, CONT: cont, DONE: no, TERMINATED: no.clone()}
        return TensorDict(state, batch_size=batch, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = self.world_model(tensordict.exclude(NEXT)).get(NEXT)
        result = TensorDict(batch_size=tensordict.batch_size, device=self.device)
        result.update(out.select(keys.DETER, keys.STOCH, keys.REWARD))
        if self.wm.cont_head is not None:
            return result.update(out.select(CONT, TERMINATED, DONE))
        # V1, V2 without a discount head: p(continue) = 1, never terminal.
        cont, terminated = continue_flags(None, out[keys.DETER], out[keys.STOCH])
        return result.update({CONT: cont, TERMINATED: terminated, DONE: terminated.clone()})

    def maybe_reset(self, tensordict: TensorDictBase) -> TensorDictBase:
        """No partial resets: an imagined trajectory goes on past a predicted
        termination (its ``cont`` flags say how much the steps after it count)."""
        return tensordict
