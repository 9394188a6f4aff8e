"""Latency samples and their percentiles, and the spread of a figure over rounds.

A figure taken once moves with the machine's load (two cores shared with other work): the
bench takes each compared figure in several rounds, the handler's and the baseline's
interleaved, and reports the median over rounds with the lowest and highest round
(``spread``). With n rounds, the chance that the median of the distribution lies outside
[min, max] is 2 × 0.5ⁿ: 6 % for 5 rounds, 0.4 % for 9.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
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


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """Median, lowest and highest of the rounds' values (None: a round without the figure
    is left out; no value at all gives None)."""
    taken = [v for v in values if v is not None]
    if not taken:
        return None
    return {"median": statistics.median(taken), "min": min(taken), "max": max(taken), "n": len(taken)}


def stratified(count: int, window: float) -> list[float]:
    """``count`` delays spread evenly over ``[0, window)`` (the middle of each of ``count``
    equal slices), in an order that alternates short and long: a p50 over them does not
    depend on the luck of a random draw, as it did with delays drawn at random (the
    baseline's one-second poll made its reply p50 move by a fifth between runs)."""
    delays = [(i + 0.5) / count * window for i in range(count)]
    return [delays[i // 2] if i % 2 == 0 else delays[count - 1 - i // 2] for i in range(count)]
