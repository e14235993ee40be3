"""Prometheus text-format metrics for the server, written by hand (no dependency): counters, gauges, histograms.

Everything the server counts lives in one `ServeMetrics`: requests and errors by route and type, request
latency, model batch sizes per queue, queue depth (read live from the batchers), label-cache hits and misses.
Label values are bounded sets (route templates, error types, queue names), so the series count stays small.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    escaped = (str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'{name}="{value}"' for name, value in zip(names, escaped)) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    """A monotonically increasing count per label tuple."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Gauge:
    """A value read when the metrics are scraped: `set()` it, or give a callback per label tuple."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self._values: dict[tuple[str, ...], float | Callable[[], float]] = {}

    def set(self, value: float | Callable[[], float], *labels: str) -> None:
        self._values[labels] = value

    def add(self, amount: float, *labels: str) -> None:
        current = self._values.get(labels, 0.0)
        self._values[labels] = (current() if callable(current) else current) + amount

    def samples(self) -> list[str]:
        out = []
        for key, value in sorted(self._values.items(), key=lambda item: item[0]):
            out.append(f"{self.name}{_labels(self.label_names, key)} {_number(value() if callable(value) else value)}")
        return out


class Histogram:
    """Cumulative buckets, sum and count per label tuple."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self.buckets = tuple(buckets)
        self._series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., +Inf count, sum
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            series = self._series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += 1
            series[-1] += value

    def count(self, *labels: str) -> float:
        series = self._series.get(labels)
        return series[-2] if series else 0.0

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        out = []
        for key, series in items:
            for bound, count in zip((*self.buckets, math.inf), series[:-1]):
                labels = _labels((*self.label_names, "le"), (*key, _number(bound)))
                out.append(f"{self.name}_bucket{labels} {_number(count)}")
            out.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(series[-1])}")
            out.append(f"{self.name}_count{_labels(self.label_names, key)} {_number(series[-2])}")
        return out


class ServeMetrics:
    """The server's metrics; `render()` is the body of `GET /metrics`."""

    def __init__(self) -> None:
        self.requests = Counter("siglip_requests_total", "HTTP requests by route and status code.", ("route", "status"))
        self.errors = Counter("siglip_errors_total", "Error responses by route and error type.", ("route", "type"))
        self.latency = Histogram(
            "siglip_request_duration_seconds", "Request latency by route.", LATENCY_BUCKETS, ("route",)
        )
        self.in_flight = Gauge("siglip_requests_in_flight", "Requests being handled now.")
        self.in_flight.set(0.0)
        self.batch_size = Histogram("siglip_batch_size", "Items per model batch, by queue.", BATCH_BUCKETS, ("queue",))
        self.queue_depth = Gauge("siglip_queue_depth", "Items waiting for a model batch, by queue.", ("queue",))
        self.items = Counter("siglip_items_total", "Items embedded by the model, by queue.", ("queue",))
        self.cache = Counter("siglip_label_cache_total", "Label-embedding cache lookups by result.", ("result",))
        self.cache_size = Gauge("siglip_label_cache_entries", "Label embeddings held in the cache.")
        self.ready = Gauge("siglip_ready", "1 when /readyz is green.")

    def all(self) -> list[Counter | Gauge | Histogram]:
        return [value for value in vars(self).values() if isinstance(value, Counter | Gauge | Histogram)]

    def render(self) -> str:
        lines = []
        for metric in self.all():
            lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}", *metric.samples()]
        return "\n".join(lines) + "\n"
