"""What one metric is: its name, type, labels and meaning (the table is `web.metrics.METRICS`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["MetricSpec"]


@dataclass(frozen=True, kw_only=True)
class MetricSpec:
    """One metric budgetflow exposes."""

    name: str
    """Its name as queried: counters end in `_total`; a histogram's series add `_bucket`,
    `_sum` and `_count`."""
    kind: Literal["counter", "gauge", "histogram"]
    """Prometheus type."""
    labels: tuple[str, ...]
    """Its label names (each bounded: `web.metrics.LABELS`)."""
    help: str
    """What it measures (the `# HELP` line)."""
    buckets: tuple[float, ...] = ()
    """Histogram bucket upper bounds."""

    @property
    def base_name(self) -> str:
        """The name without a counter's `_total` (what prometheus-client is given)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name

    def counter_family(self) -> CounterMetricFamily:
        """An empty family of this counter, for a collector to fill at scrape time."""
        assert self.kind == "counter", self.name
        return CounterMetricFamily(self.base_name, self.help, labels=list(self.labels))

    def gauge_family(self) -> GaugeMetricFamily:
        """An empty family of this gauge, for a collector to fill at scrape time."""
        assert self.kind == "gauge", self.name
        return GaugeMetricFamily(self.name, self.help, labels=list(self.labels))
