"""Summary statistics of repeated measurements. Pure."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def distribution(values: Sequence[float]) -> dict[str, float]:
    """count, mean, std (sample, ddof=1; 0 for one value), min, quartiles and max."""
    if len(values) == 0:
        raise ValueError("no values")
    x = np.asarray(values, dtype=float)
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return {
        "count": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()),
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
        "max": float(x.max()),
    }
