"""Counters and histograms kept as plain numbers by label values, exported at scrape time.

prometheus-client's metric objects take a lock and walk their buckets in Python on
every update, which a run pays on every event. The observer runs on the event loop's
thread, so plain dictionaries suffice: an update is a dictionary lookup and an addition
(a `bisect` for a histogram), and the families are built only when Prometheus asks.
Money is summed as `Decimal`, exactly, like the ledger; Prometheus gets floats.

A scrape on the event loop's thread (`web.metrics_app`, `web.MetricsServer`) sees every
event whole. A scrape from another thread copies each table first, so it never fails,
but may see an event half applied (a bucket counted, the sum not yet).
"""

from __future__ import annotations

from bisect import bisect_left
from decimal import Decimal

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from web._spec import MetricSpec

__all__ = ["CounterTally", "HistogramTally"]

Labels = tuple[str, ...]


class CounterTally:
    """A counter's value per label values."""

    def __init__(self, spec: MetricSpec) -> None:
        assert spec.kind == "counter", spec.name
        self.spec = spec
        self._values: dict[Labels, int | Decimal] = {}

    def inc(self, labels: Labels, amount: int | Decimal = 1) -> None:
        """Add `amount` (not negative) to the series of `labels`."""
        values = self._values
        values[labels] = values.get(labels, 0) + amount

    def zero(self, labels: Labels) -> None:
        """Create the series of `labels` at zero, if it does not exist yet."""
        self._values.setdefault(labels, 0)

    def get(self, labels: Labels) -> float:
        """The value of the series of `labels` (0 when it does not exist)."""
        return float(self._values.get(labels, 0))

    def family(self) -> CounterMetricFamily:
        """The counter's family, for a scrape."""
        family = self.spec.counter_family()
        for labels, value in sorted(list(self._values.items()), key=_by_labels):
            family.add_metric(list(labels), float(value))
        return family


class _Buckets:
    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.total = 0.0


class HistogramTally:
    """A histogram's bucket counts and sum per label values."""

    def __init__(self, spec: MetricSpec) -> None:
        assert spec.kind == "histogram" and spec.buckets, spec.name
        self.spec = spec
        self._bounds = spec.buckets
        self._les = [repr(float(b)) for b in spec.buckets] + ["+Inf"]
        self._series: dict[Labels, _Buckets] = {}

    def observe(self, labels: Labels, value: float) -> None:
        """Count `value` in the series of `labels`."""
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _Buckets(len(self._bounds) + 1)
        # the first bucket whose upper bound is at least `value` (`le` is inclusive)
        series.counts[bisect_left(self._bounds, value)] += 1
        series.total += value

    def zero(self, labels: Labels) -> None:
        """Create the series of `labels` with nothing counted, if it does not exist yet."""
        if labels not in self._series:
            self._series[labels] = _Buckets(len(self._bounds) + 1)

    def count(self, labels: Labels) -> int:
        """Observations in the series of `labels`."""
        series = self._series.get(labels)
        return 0 if series is None else sum(series.counts)

    def family(self) -> HistogramMetricFamily:
        """The histogram's family, for a scrape."""
        spec = self.spec
        family = HistogramMetricFamily(spec.name, spec.help, labels=list(spec.labels))
        for labels, series in sorted(list(self._series.items()), key=_by_labels):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(self._les, list(series.counts), strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(list(labels), buckets, series.total)
        return family


def _by_labels(item: tuple[Labels, object]) -> Labels:
    return item[0]
