"""How sure a number is: 95 % bootstrap intervals of a per-item metric, and whether two runs on the same items
differ (a paired bootstrap of the difference, and McNemar's exact test on the items where exactly one is right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BOOTSTRAP_SAMPLES = 1000


def bootstrap_means(values: torch.Tensor, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> torch.Tensor:
    """Means of `samples` resamples (with replacement) of per-item `values`, drawn in chunks so that 50k items x
    1000 resamples never hold more than a few tens of MB."""
    values = torch.as_tensor(values).double().flatten()
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, min(samples, 2_000_000 // max(1, len(values))))
    means = [
        values[torch.randint(len(values), (min(chunk, samples - start), len(values)), generator=generator)].mean(dim=1)
        for start in range(0, samples, chunk)
    ]
    return torch.cat(means)


def bootstrap_ci(
    values: torch.Tensor, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-item `values` (e.g. 1.0 right, 0.0 wrong)."""
    if len(torch.as_tensor(values).flatten()) == 0:
        return (float("nan"), float("nan"))
    means = bootstrap_means(values, samples, seed)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=means.dtype))
    return float(low), float(high)


@dataclass
class Comparison:
    """Run B minus run A on the same items: the mean difference, its 95 % paired-bootstrap interval, the
    bootstrap's two-sided p-value, and McNemar's exact p-value (from the discordant items `a_only` / `b_only`)."""

    difference: float
    low: float
    high: float
    bootstrap_p: float
    mcnemar_p: float
    a_only: int
    b_only: int

    @property
    def significant(self) -> bool:
        return self.mcnemar_p < 0.05 and not (self.low <= 0.0 <= self.high)

    def line(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (
            f"{self.difference * 100:+.2f} points [{self.low * 100:+.2f}, {self.high * 100:+.2f}], McNemar p="
            f"{self.mcnemar_p:.3g} ({self.a_only} vs {self.b_only} discordant): {verdict} at 5 %"
        )


def paired_bootstrap(
    a: torch.Tensor, b: torch.Tensor, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """(low, high, two-sided p) of mean(b - a) resampling items jointly."""
    diff = torch.as_tensor(b).double() - torch.as_tensor(a).double()
    if len(diff) == 0:
        return (float("nan"), float("nan"), 1.0)
    means = bootstrap_means(diff, samples, seed)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=means.dtype))
    p = 2 * min(float((means <= 0).float().mean()), float((means >= 0).float().mean()))
    return float(low), float(high), min(1.0, p)


def mcnemar(a: torch.Tensor, b: torch.Tensor) -> tuple[float, int, int]:
    """McNemar's exact two-sided p-value for paired right/wrong outcomes, with the discordant counts
    (right only in A, right only in B): a binomial test of b_only among the discordant items at 1/2."""
    a, b = torch.as_tensor(a).bool(), torch.as_tensor(b).bool()
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0, a_only, b_only
    # P(X <= k) for X ~ Binomial(n, 1/2), summed in log space (exact integers would take seconds at n = 20k)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(value - top) for value in logs)
    return min(1.0, 2 * tail), a_only, b_only


def compare(a: torch.Tensor, b: torch.Tensor, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Comparison:
    """Compare two runs' per-item right/wrong outcomes on the same items (B minus A)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        from ..errors import InputError

        raise InputError(f"runs to compare must cover the same items ({tuple(a.shape)} vs {tuple(b.shape)})")
    low, high, p = paired_bootstrap(a, b, samples, seed)
    mcnemar_p, a_only, b_only = mcnemar(a, b)
    difference = float(b.double().mean() - a.double().mean()) if len(a) else 0.0
    return Comparison(difference, low, high, p, mcnemar_p, a_only, b_only)
