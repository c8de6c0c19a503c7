"""Maps from a positive trainable β = exp(log_beta) to α in (0, 1), for learnable α (../math.md §3).

    HillMap(c):  α = β / (β + c)      TanhMap(c):  α = tanh(β / c)      ExpMap(c):  α = 1 − exp(−β / c)

Each map is clamped into [ALPHA_MIN, ALPHA_MAX] = [1e-3, 1 − 1e-3] and has an inverse α -> β used
to initialise ``log_beta`` from a requested α; ``beta0``, when given, is the initial β instead.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

ALPHA_MIN = 1e-3
ALPHA_MAX = 1.0 - 1e-3


class AlphaMap:
    """Base of the β -> α maps: ``alpha(log_beta)`` (differentiable) and ``beta_of(alpha)``."""

    def __init__(self, c: float, beta0: float | None = None) -> None:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
            raise ValueError(f"c must be a finite number > 0, got {c!r}")
        if beta0 is not None and (isinstance(beta0, bool) or not isinstance(beta0, (int, float)) or not beta0 > 0):
            raise ValueError(f"beta0 must be a number > 0 or None, got {beta0!r}")
        self.c = float(c)
        self.beta0 = None if beta0 is None else float(beta0)

    def raw(self, beta: Tensor) -> Tensor:
        """The unclamped map β -> α."""
        raise NotImplementedError

    def beta_of(self, alpha: float) -> float:
        """The inverse α -> β (α clamped into [ALPHA_MIN, ALPHA_MAX] first)."""
        raise NotImplementedError

    def alpha(self, log_beta: Tensor) -> Tensor:
        """α = clamp(map(exp(log_beta)), ALPHA_MIN, ALPHA_MAX), differentiable in log_beta."""
        return self.raw(torch.exp(log_beta)).clamp(ALPHA_MIN, ALPHA_MAX)

    def initial_log_beta(self, alpha: float) -> float:
        """log β for a module asked for ``alpha``: log(beta0) when set, else log of the inverse."""
        return math.log(self.beta0 if self.beta0 is not None else self.beta_of(alpha))

    def __repr__(self) -> str:
        beta0 = "" if self.beta0 is None else f", beta0={self.beta0}"
        return f"{type(self).__name__}(c={self.c}{beta0})"


def _clamped(alpha: float) -> float:
    return min(max(float(alpha), ALPHA_MIN), ALPHA_MAX)


class HillMap(AlphaMap):
    """α = β / (β + c); inverse β = c α / (1 − α)."""

    def raw(self, beta: Tensor) -> Tensor:
        return beta / (beta + self.c)

    def beta_of(self, alpha: float) -> float:
        a = _clamped(alpha)
        return self.c * a / (1.0 - a)


class TanhMap(AlphaMap):
    """α = tanh(β / c); inverse β = c atanh(α)."""

    def raw(self, beta: Tensor) -> Tensor:
        return torch.tanh(beta / self.c)

    def beta_of(self, alpha: float) -> float:
        return self.c * math.atanh(_clamped(alpha))


class ExpMap(AlphaMap):
    """α = 1 − exp(−β / c); inverse β = −c log(1 − α)."""

    def raw(self, beta: Tensor) -> Tensor:
        return -torch.expm1(-beta / self.c)

    def beta_of(self, alpha: float) -> float:
        return -self.c * math.log1p(-_clamped(alpha))
