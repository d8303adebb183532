"""Symmetric log transform (DreamerV3, Hafner et al. 2023, eq. 1)."""

from __future__ import annotations

from torch import Tensor


def symlog(x: Tensor) -> Tensor:
    """symlog(x) = sign(x) * ln(1 + |x|), elementwise, any shape.

    Compresses large magnitudes while staying close to the identity around 0
    (DreamerV3, 2023, eq. 1). Inverse: :func:`symexp`.
    """
    return x.sign() * x.abs().log1p()


def symexp(x: Tensor) -> Tensor:
    """symexp(x) = sign(x) * (exp(|x|) - 1), elementwise, any shape.

    The inverse of :func:`symlog` (DreamerV3, 2023, eq. 2).
    """
    return x.sign() * x.abs().expm1()
