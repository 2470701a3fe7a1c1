"""Mean ± std over seeds, and a paired comparison of two variants that share seeds.

Variants of one sweep run with the same seeds (same initialisation stream, same data order), so the
fair question is per seed: how much did A gain over B? ``paired`` takes the per-seed differences
A - B on the seeds both have, and reports their mean with a 95% confidence interval from the paired
t distribution (mean ± t_{0.975, n-1} · sd / √n). With 3 seeds the interval is wide (t = 4.30);
an interval that excludes 0 is evidence of a difference at that seed count, not proof, and among
many comparisons one such interval is expected by chance now and then.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def t_quantile(df: int, q: float = 0.975) -> float:
    """Student-t quantile (scipy, imported only when a comparison is made)."""
    from scipy.stats import t

    return float(t.ppf(q, df))


@dataclass(frozen=True)
class Paired:
    """A - B over common seeds: mean difference, 95% CI (None below 2 pairs or when every difference is the
    same), pairs and a reading."""

    delta: float
    low: float | None
    high: float | None
    n: int
    reading: str
    diffs: tuple[float, ...] = ()  # the per-seed differences A - B, by seed

    def as_dict(self) -> dict:
        """The comparison as summary.json keeps it."""
        return {"delta": self.delta, "ci95": [self.low, self.high], "n": self.n, "reading": self.reading}

    @classmethod
    def from_dict(cls, d: Mapping) -> Paired:
        """A comparison read back from summary.json (without its per-seed differences, which it does not keep)."""
        return cls(d["delta"], *d["ci95"], d["n"], d["reading"])

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)

    @property
    def ci(self) -> str:
        return "" if self.low is None else f"{self.low:+.2f}..{self.high:+.2f}"


def mean_interval(mean: float, std: float, n: int) -> tuple[float, float] | None:
    """95% t interval of a mean over ``n`` seeds from its sample std (None below 2 seeds or with no spread, as for
    :func:`paired`: a zero-width interval would claim a certainty the seeds do not give)."""
    if n < 2 or std < 1e-9 * max(1.0, abs(mean)):
        return None
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


def paired(a: Mapping[int, float], b: Mapping[int, float], a_name: str = "A", b_name: str = "B") -> Paired:
    """Paired comparison of per-seed values ``{seed: value}``; only seeds present in both are paired, and the
    reading says so when some are left out."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"{a_name} and {b_name} share no seed: nothing to pair")
    diffs = [a[s] - b[s] for s in seeds]
    delta, n = statistics.mean(diffs), len(diffs)
    unpaired = len(set(a) | set(b)) - n
    common = "the 1 common seed" if n == 1 else f"the {n} common seeds"
    note = f"; paired on {common} ({a_name} has {len(a)}, {b_name} {len(b)})" if unpaired else ""
    if n < 2:
        return Paired(delta, None, None, n, "one seed: no interval" + note, tuple(diffs))
    spread = statistics.stdev(diffs)
    if spread < 1e-9 * max(1.0, abs(delta)):  # equal differences up to rounding (common on a small test set):
        # the t interval would have zero width and claim certainty it does not have
        return Paired(delta, None, None, n, f"all {n} paired differences equal ({delta:+.2f}): no spread, "
                                            "no interval; run more seeds" + note, tuple(diffs))
    half = t_quantile(n - 1) * spread / math.sqrt(n)
    low, high = delta - half, delta + half
    interval = f"95% CI {low:+.2f}..{high:+.2f}"
    if low > 0:
        reading = f"{a_name} above {b_name} ({interval}, {n} paired seeds)"
    elif high < 0:
        reading = f"{a_name} below {b_name} ({interval}, {n} paired seeds)"
    else:
        reading = f"no evidence of a difference ({interval} covers 0, {n} paired seeds)"
    return Paired(delta, low, high, n, reading + note, tuple(diffs))


def by_seed(runs: Sequence[Mapping], split: str, metric: str, scale: float = 100.0) -> dict[int, float]:
    """``{seed: scale * run[split][metric]}`` from results dicts (runs without that metric are left out)."""
    return {r["config"]["seed"]: scale * r[split][metric] for r in runs
            if (r.get(split) or {}).get(metric) is not None}
