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

import numpy as np
import torch
from torch import Tensor, nn


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

    def step(self) -> Tensor:
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        if self.weight_decay and self.params:
            with torch.no_grad():
                torch._foreach_mul_(self.params, 1.0 - self.weight_decay)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return norm

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)


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
# They are Python/numpy scalars of the Python int step: no tensors, no host sync.
_f32 = np.float32


def _bias_correction_f32(beta: float, t: int) -> float:
    """``1 - beta**t`` in float32 arithmetic, as optax's ``bias_correction``."""
    return float(_f32(1.0) - _f32(beta) ** _f32(t))


def _warmup_lr_f32(lr: float, count: int, warmup: int) -> float:
    """``lr * min(1, count / warmup)`` in float32 arithmetic, as the reference's
    ``optax.join_schedules([optax.linear_schedule(0, lr, warmup), constant(lr)])``."""
    if not warmup or count >= warmup:
        return float(_f32(lr))
    frac = _f32(1.0) - _f32(count) / _f32(warmup)
    return float(_f32(-lr) * frac + _f32(lr))


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
    reference does (see ``_bias_correction_f32``). The step count is a Python int: no
    host sync. ``step()`` returns the global gradient norm before clipping (a tensor).
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

    @torch.no_grad()
    def step(self, closure=None) -> Tensor:  # noqa: D102
        if closure is not None:
            raise ValueError("LaPropAGC.step takes no closure")
        norms = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p] = {
                        "step": 0,
                        "nu": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "mu": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
            t = self.state[params[0]]["step"] + 1
            for p in params:
                self.state[p]["step"] = t
            gnorm = torch.stack(torch._foreach_norm(grads))
            norms.append(gnorm)
            if group["agc"]:
                pnorm = torch.stack(torch._foreach_norm(params)).clamp(min=group["pmin"])
                scale = 1.0 / (gnorm / (group["agc"] * pnorm)).clamp(min=1.0)
                grads = torch._foreach_mul(grads, list(scale.unbind()))
            b1, b2 = group["beta1"], group["beta2"]
            nus = [self.state[p]["nu"] for p in params]
            mus = [self.state[p]["mu"] for p in params]
            torch._foreach_mul_(nus, b2)
            torch._foreach_addcmul_(nus, grads, grads, 1.0 - b2)
            denom = torch._foreach_div(nus, _bias_correction_f32(b2, t))
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, group["eps"])
            updates = torch._foreach_div(grads, denom)
            torch._foreach_lerp_(mus, updates, 1.0 - b1)
            lr = _warmup_lr_f32(group["lr"], t - 1, group["warmup"])
            if lr:
                torch._foreach_add_(params, mus, alpha=-lr / _bias_correction_f32(b1, t))
        if not norms:
            return torch.zeros(())
        return torch.cat(norms).square().sum().sqrt()


def laprop_agc(params: Iterable[nn.Parameter], **kwargs) -> ClippedOptimizer:
    """:class:`LaPropAGC` behind the same interface as :func:`adam` (no global clip:
    AGC clips per parameter)."""
    params = [p for p in params]
    return _Unclipped(params, LaPropAGC(params, **kwargs))


class _Unclipped(ClippedOptimizer):
    def __init__(self, params, opt):
        super().__init__(params, opt, math.inf)

    def step(self) -> Tensor:
        norm = self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return norm
