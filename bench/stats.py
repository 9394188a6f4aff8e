"""Latency samples and their percentiles."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Samples:
    """Latencies in seconds; summarised in milliseconds."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    def pct(self, p: float) -> float:
        """Nearest-rank percentile."""
        ordered = sorted(self.values)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    def summary_ms(self) -> dict[str, float]:
        return {"p50_ms": self.pct(50) * 1000, "p99_ms": self.pct(99) * 1000, "n": len(self.values)}
