"""Mean ± std over seeds, and one plain rule for reading a difference against seed noise.

A difference counts as "beyond seed noise" only when the gap between the two means exceeds the sum
of their standard deviations over seeds. With 3 seeds this is a rough screen, not a significance
test; it keeps tables and READMEs from calling a 0.3-point gap a win.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def versus(a: Sequence[float], b: Sequence[float]) -> tuple[float, bool | None, str]:
    """(mean(a) - mean(b), beyond seed noise? (None with fewer than 2 seeds on a side), a short reading)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    delta, noise = ma - mb, sa + sb
    if min(len(a), len(b)) < 2:
        return delta, None, "one seed: no estimate of seed noise yet"
    beyond = abs(delta) > noise
    return delta, beyond, (f"{'beyond' if beyond else 'within'} seed noise (sum of stds {noise:.2f}; "
                           f"{len(a)} vs {len(b)} seeds)")
