"""The web side of budgetflow: Prometheus metrics of runs and the app that serves them.

`BudgetflowMetrics` puts the metrics of `METRICS` on a registry you give it and hands
out observers that feed them from runs' events; `metrics_app` serves a registry to
Prometheus, and `MetricsServer` serves it on a port of a process that runs workflows.
The HTTP API (`web.api`) mounts `metrics_app` on its own registry; the dashboard joins later.
"""

from web.metrics import LABELS, METRICS, OTHER, BudgetflowMetrics, MetricLimits, MetricsObserver, MetricSpec
from web.metrics_app import MetricsServer, metrics_app

__all__ = [
    "LABELS",
    "METRICS",
    "OTHER",
    "BudgetflowMetrics",
    "MetricLimits",
    "MetricSpec",
    "MetricsObserver",
    "MetricsServer",
    "metrics_app",
]
