"""Small-sample statistics for test accuracies: Wilson intervals and McNemar's exact test.

A test split of a few dozen images measures accuracy with an uncertainty of many points
(35 images at 0.86: 95% interval about [0.71, 0.94]), so every accuracy pingo reports comes
with its interval, and two models scored on the same images are compared by a paired test.
Plain ``math``; no SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default); (0, 1) for n=0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within 0..{n}, got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def accuracy_interval(accuracy: float, n: int) -> list[float]:
    """``wilson_interval`` for an accuracy measured on ``n`` images, rounded for JSON."""
    lo, hi = wilson_interval(round(accuracy * n), n)
    return [round(lo, 4), round(hi, 4)]


def format_interval(ci: Sequence[float] | None) -> str:
    """ "[0.65, 0.95]", or "" when there is no interval."""
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on paired right/wrong outcomes of two models on the same images.

    ``b``: images only the new model gets right; ``c``: only the current one. Under "equally
    accurate" each discordant image is a fair coin, so b ~ Binomial(b + c, 1/2).
    """

    b: int
    c: int
    p_two_sided: float
    p_new_better: float  # one-sided: P(X >= b), small when the new model is better
    p_new_worse: float  # one-sided: P(X <= b), small when the new model is worse


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (integers until the one division)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def mcnemar_exact(b: int, c: int) -> McNemar:
    """McNemar's exact (binomial) test for ``b`` and ``c`` discordant pairs."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    worse = _binom_cdf_half(b, n)  # P(X <= b)
    better = 1.0 - _binom_cdf_half(b - 1, n)  # P(X >= b)
    two = min(1.0, 2 * min(worse, better))
    return McNemar(b, c, two, better, worse)


def mcnemar_from_correct(new: Sequence[bool], current: Sequence[bool]) -> McNemar:
    """``mcnemar_exact`` from per-image correctness of two models on the same images."""
    if len(new) != len(current):
        raise ValueError(f"not the same images: {len(new)} vs {len(current)} outcomes")
    b = sum(1 for x, y in zip(new, current, strict=True) if x and not y)
    c = sum(1 for x, y in zip(new, current, strict=True) if y and not x)
    return mcnemar_exact(b, c)
