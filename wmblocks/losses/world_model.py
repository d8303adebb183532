"""World-model objectives of DreamerV1, V2 and V3.

Each ``*_loss`` function observes a ``[B, T]`` batch with the world model and writes
per-(B, T) loss terms ``loss_<name>`` (to be minimised, before scaling) into it;
:func:`total_loss` is the one place where they are scaled and averaged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from tensordict import TensorDictBase
from torch import Tensor, nn

from wmblocks import keys
from wmblocks.functional.contrastive import state_nce
from wmblocks.functional.kl import free_bits, free_nats, kl_balance, kl_dyn_rep
from wmblocks.nn.world_model import Start, WorldModel

# Loss scales, named as the terms (``loss_<name>``).
V1_SCALES = {"obs": 1.0, "reward": 1.0, "kl": 1.0}  # beta = 1
V1_NCE_SCALES = {"state": 1.0, "reward": 1.0, "kl": 1.0}
V2_SCALES = {"obs": 1.0, "reward": 1.0, "discount": 1.0, "kl": 1.0}  # Atari: kl 0.1, discount 5
V2_SCALES_NO_DISCOUNT = {"obs": 1.0, "reward": 1.0, "kl": 1.0}  # pred_discount False (DMC)
V3_2023_SCALES = {"obs": 1.0, "reward": 1.0, "cont": 1.0, "dyn": 0.5, "rep": 0.1}
V3_2024_SCALES = {"obs": 1.0, "reward": 1.0, "cont": 1.0, "dyn": 1.0, "rep": 0.1}


def observation_nll(wm: WorldModel, td: TensorDictBase, feat: Tensor) -> Tensor:
    """``-sum_keys log p(o_t^key | s_t)``, ``[B, T]``: each key's decoder returns its
    distribution and says what space it predicts in (``decoder.target``)."""
    total = torch.zeros(feat.shape[:-1], dtype=feat.dtype, device=feat.device)
    for key, dist in wm.decoder(feat).items():
        total = total - dist.log_prob(wm.decoder.target(key, td[key]).to(feat.dtype))
    return total


def _continues(td: TensorDictBase, like: Tensor) -> Tensor:
    return 1.0 - td[keys.IS_TERMINAL].to(like.dtype)


CONT_TARGET_2024 = 1.0 - 1.0 / 333  # V3-2024: the continue head predicts the discount


def world_model_loss_v3(
    wm: WorldModel,
    td: TensorDictBase,
    *,
    start: Start | None = None,
    free: float = 1.0,
    cont_target: float = 1.0,
):
    """DreamerV3 (Hafner et al. 2023, eq. 3-5): writes ``loss_obs`` (symlog MSE for
    vectors, MSE for images), ``loss_reward`` (the reward head's twohot), ``loss_cont``
    (Bernoulli on ``cont_target`` * (1 - is_terminal): 1 in the 2023 revision,
    :data:`CONT_TARGET_2024` = 1 - 1/333 in the 2024 one, whose imagination then uses
    gamma = 1) and ``loss_dyn`` = max(free, KL(sg(q) || p)),
    ``loss_rep`` = max(free, KL(q || sg(p))), the KLs summed over groups first.
    ``start``: the stored state a chunk starts from (2024 replay context).
    Scales: :data:`V3_2023_SCALES` or :data:`V3_2024_SCALES`. L(phi) of the paper is
    :func:`total_loss` of these terms with those scales."""
    td = wm.observe(td, start)
    feat = wm.features(td)
    td.set(keys.loss_key("obs"), observation_nll(wm, td, feat))
    td.set(keys.loss_key("reward"), -wm.reward_head(feat).log_prob(td[keys.REWARD]))
    cont = wm.cont_head(feat)
    td.set(keys.loss_key("cont"), -cont.log_prob(cont_target * _continues(td, feat)))
    dyn, rep = kl_dyn_rep(td[keys.POST], td[keys.PRIOR], kl=wm.rssm.post_head.kl)
    td.set(keys.loss_key("dyn"), free_bits(dyn, free))
    td.set(keys.loss_key("rep"), free_bits(rep, free))
    return td


def world_model_loss_v2(
    wm: WorldModel,
    td: TensorDictBase,
    *,
    alpha: float = 0.8,
    free: float = 0.0,
    gamma: float = 0.99,
):
    """DreamerV2 (Hafner et al. 2021, eq. 2 and Alg. 2): ``loss_obs`` and
    ``loss_reward`` from the decoder's and reward head's distributions (squared error
    for vectors and rewards, unit Gaussian for images, as the reference's ``mse`` and
    Normal(mean, 1)), ``loss_discount`` (Bernoulli on gamma (1 - is_terminal), the
    reference's discount target; only when the world model has a discount head), and
    ``loss_kl`` = alpha max(mean dyn, free) + (1 - alpha) max(mean rep, free) as the V2
    code (free 0 on Atari, 1 on DMC). Scales: :data:`V2_SCALES` (without ``discount``
    when there is no head)."""
    td = wm.observe(td)
    feat = wm.features(td)
    td.set(keys.loss_key("obs"), observation_nll(wm, td, feat))
    td.set(keys.loss_key("reward"), -wm.reward_head(feat).log_prob(td[keys.REWARD]))
    if wm.cont_head is not None:
        disc = wm.cont_head(feat)
        td.set(keys.loss_key("discount"), -disc.log_prob(gamma * _continues(td, feat)))
    dyn, rep = kl_dyn_rep(td[keys.POST], td[keys.PRIOR], kl=wm.rssm.post_head.kl)
    td.set(keys.loss_key("kl"), kl_balance(free_nats(dyn, free), free_nats(rep, free), alpha))
    return td


def _v1_reward_kl(wm: WorldModel, td: TensorDictBase, feat: Tensor, free: float) -> None:
    td.set(keys.loss_key("reward"), -wm.reward_head(feat).log_prob(td[keys.REWARD]))
    kl = wm.rssm.post_head.kl(td[keys.POST], td[keys.PRIOR])
    td.set(keys.loss_key("kl"), free_nats(kl, free))


def world_model_loss_v1(wm: WorldModel, td: TensorDictBase, *, free: float = 3.0):
    """DreamerV1 (Hafner et al. 2020, eq. 10): ``loss_obs`` = -ln p(o_t | s_t),
    ``loss_reward`` = -ln p(r_t | s_t) (unit-variance Gaussians), ``loss_kl`` =
    KL(q || p) with free nats on the batch mean (free 3). Scales: :data:`V1_SCALES`
    (kl is beta); the sum is -J_REC of the paper's eq. 10."""
    td = wm.observe(td)
    feat = wm.features(td)
    td.set(keys.loss_key("obs"), observation_nll(wm, td, feat))
    _v1_reward_kl(wm, td, feat, free)
    return td


def world_model_loss_v1_nce(
    wm: WorldModel, state_model: nn.Module, td: TensorDictBase, *, free: float = 3.0
):
    """DreamerV1's contrastive objective (Hafner et al. 2020, eq. 12): the
    reconstruction term is replaced by ``loss_state`` = -J_S with
    J_S = ln q(s_t | o_t) - ln sum_{o'} q(s_t | o'), the o' ranging over the B*T
    observations of the batch; ``state_model`` maps the embedding e_t to Gaussian stats
    ``[..., 2, Z]`` (a :class:`~wmblocks.nn.latents.GaussianLatentHead` on an MLP).
    Reward and KL terms as :func:`world_model_loss_v1`. Scales: :data:`V1_NCE_SCALES`."""
    td = wm.observe(td)
    feat = wm.features(td)
    stats = state_model(td[keys.EMBED]).flatten(0, 1)  # [B*T, 2, Z]
    mean, std = stats.unbind(-2)
    j_s = state_nce(td[keys.STOCH].flatten(0, 1), mean, std)
    td.set(keys.loss_key("state"), -j_s.view(td.batch_size))
    _v1_reward_kl(wm, td, feat, free)
    return td


def total_loss(td: TensorDictBase, scales: Mapping[str, float]) -> tuple[Tensor, dict[str, Tensor]]:
    """The one reduction point: ``sum_k scales[k] * mean_{B,T}(loss_k)``.

    Returns the scalar loss and detached per-term means (on device: read them every N
    updates, not every update)."""
    missing = [k for k in scales if keys.loss_key(k) not in td.keys()]
    if missing:
        raise KeyError(f"total_loss: no loss terms for {missing} in the batch")
    means = {k: td[keys.loss_key(k)].mean() for k in scales}
    total = sum(scales[k] * means[k] for k in scales)
    return total, {k: v.detach() for k, v in means.items()}
