"""The value type every floor and scenario returns, so the runner can treat them alike."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Figure:
    """One measurement: the headline ``value`` in ``unit``, plus named side figures (e.g. mean latency)."""

    value: float
    unit: str
    extra: dict[str, float] = field(default_factory=dict)

    @classmethod
    def rate(cls, count: int, seconds: float, unit: str, **extra: float) -> Figure:
        """A throughput figure; guards against a zero-length interval on a coarse clock."""
        return cls(count / max(seconds, 1e-9), unit, extra)
