"""The server's metrics through prometheus_client: counters, latency histograms per endpoint, gauges, process."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

RATE_WINDOW_S = 60.0
TOKEN_KINDS = ("prompt_evaluated", "image", "completion", "forced")
# From a health check (milliseconds) to a product label on a busy CPU (minutes): p95 falls inside.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
GaugeReader = Callable[[], dict[str, tuple[str, float]]]  # {name: (help, value)}, read at each scrape


class _Gauges(Collector):
    """Gauges read off the engine and the queue when /metrics is scraped, not kept up to date."""

    def __init__(self, read: GaugeReader) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        for name, (help_text, value) in self.read().items():
            yield GaugeMetricFamily(name, help_text, value=value)


class Metrics:
    """One registry per server (so that several apps in one process keep their own counts)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "qvl_requests", "HTTP requests answered, by endpoint and status code.", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self._latency = Histogram(
            "qvl_request_seconds", "Time to answer a request, by endpoint.", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._images = Counter("qvl_images", "Images answered, by record status.", ["status"], registry=self.registry)
        self._tokens = Counter("qvl_tokens", "Tokens through the engine, by kind.", ["kind"], registry=self.registry)
        for kind in TOKEN_KINDS:
            self._tokens.labels(kind)  # shown from the start, at 0
        rate = Gauge(
            "qvl_images_per_second", f"Images answered per second over the last {RATE_WINDOW_S:.0f} s.",
            registry=self.registry,
        )  # fmt: skip
        rate.set_function(self.images_per_second)
        ProcessCollector(registry=self.registry)  # CPU seconds, resident memory, open files, start time
        self._lock = threading.Lock()
        self._finished: deque[float] = deque()  # when each image finished, for images/s

    def watch(self, read: GaugeReader) -> None:
        """Report these gauges at every scrape."""
        self.registry.register(_Gauges(read))

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self._requests.labels(endpoint, str(status)).inc()
        self._latency.labels(endpoint).observe(seconds)

    def image(self, status: str, tokens: dict[str, int] | None) -> None:
        self._images.labels(status).inc()
        for kind in TOKEN_KINDS:
            self._tokens.labels(kind).inc(int((tokens or {}).get(kind, 0)))
        with self._lock:
            self._finished.append(time.monotonic())

    def images_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._finished and self._finished[0] < now - RATE_WINDOW_S:
                self._finished.popleft()
            return len(self._finished) / RATE_WINDOW_S

    def render(self) -> bytes:
        """The Prometheus text exposition of everything registered."""
        return generate_latest(self.registry)
