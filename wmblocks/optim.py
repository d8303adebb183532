"""Optimisers of the Dreamer series with their reference defaults.

V1, V2 and V3-2023 use Adam per module (world model, actor, critic) with global-norm
gradient clipping: :func:`adam` builds torch's Adam wrapped with the clip and, for V2,
the reference's learning-rate-independent weight decay. V3-2024 uses one optimiser for
everything, :class:`LaPropAGC`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wmblocks.distributed import average_gradients


@dataclass(frozen=True)
class AdamConfig:
    """Adam with global-norm clipping. ``weight_decay`` is DreamerV2's decay: each call
    multiplies every parameter by ``1 - weight_decay``, whatever the learning rate (see
    :class:`ClippedOptimizer`)."""

    lr: float
    eps: float
    clip: float
    weight_decay: float = 0.0


# Official defaults. V1's eps is TensorFlow's Adam default (the V1 code sets none).
V1_OPTIM = {
    "model": AdamConfig(6e-4, 1e-7, 100.0),
    "actor": AdamConfig(8e-5, 1e-7, 100.0),
    "critic": AdamConfig(8e-5, 1e-7, 100.0),
}
V2_OPTIM = {
    "model": AdamConfig(1e-4, 1e-5, 100.0, 1e-6),
    "actor": AdamConfig(8e-5, 1e-5, 100.0, 1e-6),
    "critic": AdamConfig(2e-4, 1e-5, 100.0, 1e-6),
}
V3_2023_OPTIM = {
    "model": AdamConfig(1e-4, 1e-8, 1000.0),
    "actor": AdamConfig(3e-5, 1e-5, 100.0),
    "critic": AdamConfig(3e-5, 1e-5, 100.0),
}


class ClippedOptimizer:
    """A torch optimiser plus global-norm clipping and optional decoupled weight decay.

    ``step()`` does, in the order of DreamerV2's ``Optimizer.__call__``
    (danijar/dreamerv2, ``common/other.py``):

        norm = sqrt(sum_i |g_i|^2);  g <- g * min(1, clip / norm)   global-norm clip
        p    <- (1 - weight_decay) * p                               every parameter
        p    <- opt.step(p, g)                                       e.g. Adam

    (the clip is torch's ``clip_grad_norm_``, whose coefficient is clip / (norm + 1e-6)),
    then zeroes the grads and returns the pre-clip norm as a tensor (no host sync). The
    decay is the reference's ``var.assign((1 - wd) * var)`` (``wd_pattern`` ``.*``: all
    variables, with or without a gradient): it does not scale with the learning rate,
    unlike torch's AdamW (``p <- (1 - lr * wd) p``, 1e4 times weaker at lr 1e-4).

    Skipped steps: when the norm is not finite, or ``step(skip)`` gets a true ``skip``
    (a ``[]`` bool tensor, see :func:`step_if_finite`), nothing changes: no decay, no
    step, and the step counts stay. Decided on the device: torch's fused optimisers
    (:func:`adam` builds fused Adam) take the flag as ``found_inf`` (what ``GradScaler``
    uses), skip in the kernel and roll their step counts back; any other torch
    optimiser is stepped after reading the flag on the host (one sync per step).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        opt: torch.optim.Optimizer,
        clip: float,
        weight_decay: float = 0.0,
    ):
        self.params = [p for p in params]
        self.opt, self.clip, self.weight_decay = opt, clip, weight_decay

    def grad_norm(self) -> Tensor:
        """The global L2 norm of the current gradients, ``[]`` (0 without any)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads, foreach=True)

    def step(self, skip: Tensor | None = None, norm: Tensor | None = None) -> Tensor:
        """One clipped, decayed step, or none where ``skip`` or the norm is not finite;
        ``norm``: :meth:`grad_norm` of the current gradients when already computed.
        Returns the pre-clip norm ``[]``."""
        norm = self.grad_norm() if norm is None else norm
        skip = _skip(skip, norm)
        torch.nn.utils.clip_grads_with_norm_(self.params, self.clip, norm, foreach=True)
        if self.weight_decay and self.params:
            with torch.no_grad():
                keep = (~skip).to(self.params[0].dtype)  # 1: decay, 0: skipped
                torch._foreach_mul_(self.params, keep * (1.0 - self.weight_decay) + (1.0 - keep))
        if self.opt.defaults.get("fused"):
            self.opt.found_inf = skip.to(torch.float32)  # 1.0: the kernel skips the step
            self.opt.step()
        elif not bool(skip):  # no device-side skip in this optimiser: a host sync
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return norm

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)


def _skip(skip: Tensor | None, norm: Tensor) -> Tensor:
    """``skip or not isfinite(norm)``, ``[]`` bool (on the device of ``norm``)."""
    bad = ~torch.isfinite(norm)
    return bad if skip is None else skip | bad


def step_if_finite(
    optimizers: dict[str, ClippedOptimizer], loss: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Step every optimiser of one update, or none of them.

        finite = isfinite(loss) and isfinite(|g|_o) for every optimiser o
        finite:      every optimiser steps (clip, decay, Adam or LaProp)
        not finite:  nothing changes (parameters, moments, step counts)

    with ``|g|_o`` the global norm of optimiser o's gradients. ``finite`` stays on the
    device (no host sync): it masks each step (:meth:`ClippedOptimizer.step`'s
    ``skip``). One flag for all optimisers, so that a skipped update leaves no
    optimiser half a step ahead. The caller keeps its other state (slow critic, return
    normaliser, replay context) with the returned flag.

    Data-parallel training (``torchrun``, :mod:`wmblocks.distributed`): first the
    gradients and the loss are averaged over the ranks
    (:func:`~wmblocks.distributed.average_gradients`: the gradient of the global
    batch), so that every rank takes the same skip decision, the same clip and the same
    step. Without a process group nothing is averaged and no collective is called.

    Returns ``(skipped, norms)``: ``skipped`` ``[]`` bool, ``norms`` the pre-clip global
    gradient norm ``[]`` of each optimiser, by name.
    """
    params = (p for opt in optimizers.values() for p in opt.params)
    loss = average_gradients(params, loss.detach())
    norms = {name: opt.grad_norm() for name, opt in optimizers.items()}
    finite = torch.isfinite(loss)
    for norm in norms.values():
        finite = finite & torch.isfinite(norm)
    skipped = ~finite
    for name, opt in optimizers.items():
        opt.step(skip=skipped, norm=norms[name])
    return skipped, norms


def adam(params: Iterable[nn.Parameter], cfg: AdamConfig) -> ClippedOptimizer:
    """torch Adam (no coupled L2 term) behind global-norm clipping at ``cfg.clip``; a
    nonzero ``cfg.weight_decay`` multiplies the parameters by ``1 - weight_decay`` before
    each Adam step, as DreamerV2 does (:class:`ClippedOptimizer`). torch's fused Adam
    kernel (CPU and CUDA): one kernel per step, and its step counts stay on the device,
    where the foreach version reads them back to the host every step."""
    params = [p for p in params]
    opt = torch.optim.Adam(params, lr=cfg.lr, eps=cfg.eps, fused=True)
    return ClippedOptimizer(params, opt, cfg.clip, cfg.weight_decay)


# The official DreamerV3 optimiser (optax) computes its scalar constants in float32: the
# bias corrections 1 - beta^t (optax.bias_correction: a Python float to the power of the
# int32 step count) and the warmup ramp (optax.linear_schedule(0, lr, warmup): lr - lr *
# (1 - count / warmup)). In float64 they differ from it by about 1e-5 relative (e.g.
# 1 - float32(0.999) = 0.00099998713), which is larger than float32 rounding; LaPropAGC
# evaluates them the same way so that it matches the reference to float32 precision.
# They are float32 [] tensors of the device-side step count (no host sync), each op a
# float32 operation as numpy's float32 scalars would do it.


def _bias_correction(beta: float, t: Tensor) -> Tensor:
    """``1 - beta**t`` in float32 arithmetic, as optax's ``bias_correction``; ``t`` a
    float32 ``[]`` step count."""
    return 1.0 - torch.pow(beta, t)


def _warmup_lr(lr: float, count: Tensor, warmup: int) -> Tensor:
    """``lr * min(1, count / warmup)`` in float32 arithmetic (``[]``, ``count`` a float32
    ``[]``), as the reference's ``optax.join_schedules([optax.linear_schedule(0, lr,
    warmup), constant(lr)])``: lr - lr * (1 - count / warmup), and lr from ``warmup`` on."""
    frac = (1.0 - count / warmup).clamp(min=0.0) if warmup else torch.zeros_like(count)
    return -lr * frac + lr


def _global_norm(norms: list[Tensor]) -> Tensor:
    """``sqrt(sum_i n_i^2)`` over the per-tensor norms of every group ``[n_g]``."""
    return torch.cat(norms).square().sum().sqrt() if norms else torch.zeros(())


class LaPropAGC(torch.optim.Optimizer):
    """DreamerV3-2024's optimiser: adaptive gradient clipping, then RMS scaling, then
    momentum of the scaled update (LaProp order), then a linearly warmed-up step.

    Per parameter p with gradient g, at update t = 1, 2, ...:

        g  <- g / max(1, |g| / (agc * max(pmin, |p|)))          AGC, 0.3 and 1e-3
        nu <- beta2 nu + (1 - beta2) g^2;  u = g / (sqrt(nu / (1 - beta2^t)) + eps)
        mu <- beta1 mu + (1 - beta1) u;    m = mu / (1 - beta1^t)
        p  <- p - lr * min(1, (t - 1) / warmup) * m

    |.| are whole-tensor L2 norms. Reference: DreamerV3 (2024) ``Agent._make_opt`` and
    ``embodied/jax/opt.py`` (``clip_by_agc``, ``scale_by_rms``, ``scale_by_momentum``,
    then ``optax.scale_by_learning_rate`` of a linear warmup), checked against its values
    in ``tests/golden/test_golden_optim.py``. Defaults as the reference: lr 4e-5, agc 0.3,
    pmin 1e-3, beta1 0.9, beta2 0.999, eps 1e-20, warmup 1000. The scalars
    ``1 - beta^t`` and ``lr * min(1, (t - 1) / warmup)`` are computed in float32 as the
    reference does (see ``_bias_correction``).

    The step count t is a float32 ``[]`` tensor on the parameters' device (as torch's
    fused Adam keeps it), so that a skipped step can leave it unchanged without a host
    sync: when the global gradient norm is not finite, or ``step(skip=...)`` gets a true
    ``[]`` bool tensor, the gradients count as zero and the changes of p, nu, mu and t
    are multiplied by 0 (a masked step: every value keeps its old one exactly). The
    tensors of one parameter group share a dtype. ``step()`` returns the global
    gradient norm before clipping (a tensor).
    """

    def __init__(
        self,
        params,
        lr: float = 4e-5,
        agc: float = 0.3,
        pmin: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-20,
        warmup: int = 1000,
    ):
        defaults = dict(lr=lr, agc=agc, pmin=pmin, beta1=beta1, beta2=beta2, eps=eps, warmup=warmup)
        super().__init__(params, defaults)
        self._step_fn = laprop_agc_step_  # or its compiled version: compile()

    def _with_grads(self) -> list[tuple[dict, list[Tensor]]]:
        """``(group, its parameters that have a gradient)`` for every group with one."""
        groups = [(g, [p for p in g["params"] if p.grad is not None]) for g in self.param_groups]
        return [(g, params) for g, params in groups if params]

    def grad_norms(self) -> list[Tensor]:
        """Per group with gradients (:meth:`step`'s order), the L2 norms ``[n]`` of its
        parameters' gradients."""
        return [
            torch.stack(torch._foreach_norm([p.grad for p in ps])) for _, ps in self._with_grads()
        ]

    @torch.no_grad()
    def step(
        self,
        closure=None,
        *,
        skip: Tensor | None = None,
        grad_norms: list[Tensor] | None = None,
    ) -> Tensor:
        """One update of every parameter with a gradient, masked to none where ``skip``
        (``[]`` bool) is true or the global gradient norm is not finite.
        ``grad_norms``: :meth:`grad_norms` of the current gradients, when already
        computed. Returns the global gradient norm before clipping ``[]``."""
        if closure is not None:
            raise ValueError("LaPropAGC.step takes no closure")
        groups = self._with_grads()
        if not groups:
            return torch.zeros(())
        norms = self.grad_norms() if grad_norms is None else grad_norms
        total = _global_norm(norms)
        skip = _skip(skip, total)
        for (group, params), gnorm in zip(groups, norms, strict=True):
            self._update(group, params, gnorm, skip)
        return total

    def _count(self, params: list[Tensor]) -> Tensor:
        """The group's step count t (float32 ``[]`` on the parameters' device), creating
        the state (t = 0, nu = mu = 0) of new parameters; a count saved as a Python int
        (checkpoints of earlier versions) is converted."""
        for p in params:
            if not self.state[p]:
                self.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "nu": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "mu": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
        t = self.state[params[0]]["step"]
        t = t if isinstance(t, Tensor) else torch.tensor(float(t))
        return t.to(device=params[0].device, dtype=torch.float32)

    def _update(self, group: dict, params: list[Tensor], gnorm: Tensor, skip: Tensor) -> None:
        """:func:`laprop_agc_step_` of one group (gradient norms ``gnorm`` ``[n]``)."""
        hyper = {k: group[k] for k in ("lr", "agc", "pmin", "beta1", "beta2", "eps", "warmup")}
        count = self._count(params)  # first: it creates the state of new parameters
        t = self._step_fn(
            params,
            [p.grad for p in params],
            [self.state[p]["nu"] for p in params],
            [self.state[p]["mu"] for p in params],
            count,
            gnorm,
            skip,
            **hyper,
        )
        for p in params:
            self.state[p]["step"] = t

    def compile(self, **options) -> LaPropAGC:
        """Run :func:`laprop_agc_step_` compiled (``torch.compile(**options)``, static
        shapes by default): the foreach passes over every parameter fuse into a few
        loops. The step count is a tensor, so later steps reuse the first compile (no
        recompilation); changing a group's hyperparameters recompiles once. Returns
        ``self``."""
        self._step_fn = torch.compile(laprop_agc_step_, **{"dynamic": False, **options})
        return self


def laprop_agc_step_(
    params: list[Tensor],
    grads: list[Tensor],
    nus: list[Tensor],
    mus: list[Tensor],
    count: Tensor,
    gnorm: Tensor,
    skip: Tensor,
    *,
    lr: float,
    agc: float,
    pmin: float,
    beta1: float,
    beta2: float,
    eps: float,
    warmup: int,
) -> Tensor:
    """:class:`LaPropAGC`'s update of one parameter group, in place: ``params``, their
    ``grads`` (zeroed where skipped), the moments ``nus`` and ``mus`` (same shapes), the
    step count ``count`` (float32 ``[]``, before this step), per-tensor gradient norms
    ``gnorm`` ``[n]`` and ``skip`` ``[]`` bool. Every change is multiplied by ``keep`` =
    0 when ``skip``: nu by a factor 1 instead of beta2, mu by a lerp weight 0, p by a step
    size 0, t by 0. Returns the new count ``[]``."""
    for g in grads:
        g.masked_fill_(skip, 0.0)  # a skipped step sees zeros: no NaN in the maths
    gnorm = gnorm.masked_fill(skip, 0.0)
    keep = (~skip).to(torch.float32)  # [] 1: this step counts, 0: skipped
    count = count + keep
    t = count.clamp(min=1.0)  # a skipped first step (t = 0): keep 1 - beta^t from 0
    if agc:
        pnorm = torch.stack(torch._foreach_norm(params)).clamp(min=pmin)
        scale = 1.0 / (gnorm / (agc * pnorm)).clamp(min=1.0)
        grads = torch._foreach_mul(grads, list(scale.unbind()))
    k = keep.to(params[0].dtype)
    torch._foreach_mul_(nus, k * beta2 + (1.0 - k))  # beta2; 1 when skipped
    torch._foreach_addcmul_(nus, grads, grads, 1.0 - beta2)
    denom = torch._foreach_div(nus, _bias_correction(beta2, t))
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    updates = torch._foreach_div(grads, denom)
    torch._foreach_lerp_(mus, updates, [k * (1.0 - beta1)] * len(mus))  # 0 when skipped
    step = _warmup_lr(lr, t - 1.0, warmup)
    torch._foreach_add_(params, torch._foreach_mul(mus, keep * -step / _bias_correction(beta1, t)))
    return count


def laprop_agc(params: Iterable[nn.Parameter], **kwargs) -> ClippedOptimizer:
    """:class:`LaPropAGC` behind the same interface as :func:`adam` (no global clip:
    AGC clips per parameter)."""
    params = [p for p in params]
    return _Unclipped(params, LaPropAGC(params, **kwargs))


class _Unclipped(ClippedOptimizer):
    """:class:`LaPropAGC` as a :class:`ClippedOptimizer`. :meth:`grad_norm` keeps the
    per-tensor norms for the :meth:`step` given its result (AGC needs them): one pass
    over the gradients, not two."""

    def __init__(self, params, opt):
        super().__init__(params, opt, math.inf)
        self._norms: tuple[Tensor, list[Tensor]] | None = None

    def grad_norm(self) -> Tensor:
        norms = self.opt.grad_norms()
        total = _global_norm(norms)
        self._norms = (total, norms)
        return total

    def step(self, skip: Tensor | None = None, norm: Tensor | None = None) -> Tensor:
        cached, self._norms = self._norms, None
        norms = cached[1] if cached is not None and norm is cached[0] else None
        norm = self.opt.step(skip=skip, grad_norms=norms)
        self.opt.zero_grad(set_to_none=True)
        return norm
