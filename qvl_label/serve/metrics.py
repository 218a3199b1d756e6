"""The server's counters and gauges, rendered in the Prometheus text exposition format."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

RATE_WINDOW_S = 60.0
TOKEN_KINDS = ("prompt_evaluated", "image", "completion", "forced")


class Metrics:
    """Thread-safe counters; `render` adds the gauges the caller reads off the engine."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.images: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter(dict.fromkeys(TOKEN_KINDS, 0))  # shown from the start, at 0
        self.request_seconds = 0.0
        self.request_count = 0
        self._finished: deque[float] = deque()  # when each image finished, for images/s

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1
            self.request_seconds += seconds
            self.request_count += 1

    def image(self, status: str, tokens: dict[str, int] | None) -> None:
        now = time.monotonic()
        with self._lock:
            self.images[status] += 1
            self._finished.append(now)
            for kind in TOKEN_KINDS:
                self.tokens[kind] += int((tokens or {}).get(kind, 0))

    def images_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._finished and self._finished[0] < now - RATE_WINDOW_S:
                self._finished.popleft()
            return len(self._finished) / RATE_WINDOW_S

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """The exposition text: counters, then `gauges` ({name: (help, value)})."""
        rate = self.images_per_second()
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("qvl_requests_total", "counter", "HTTP requests answered, by endpoint and status code.")
            for (endpoint, status), count in sorted(self.requests.items()):
                lines.append(f'qvl_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
            family("qvl_images_total", "counter", "Images answered, by record status.")
            for record_status, count in sorted(self.images.items()):
                lines.append(f'qvl_images_total{{status="{record_status}"}} {count}')
            family("qvl_tokens_total", "counter", "Tokens through the engine, by kind.")
            for kind, count in sorted(self.tokens.items()):
                lines.append(f'qvl_tokens_total{{kind="{kind}"}} {count}')
            family("qvl_request_seconds", "summary", "Time to answer a request.")
            lines.append(f"qvl_request_seconds_sum {self.request_seconds:.6f}")
            lines.append(f"qvl_request_seconds_count {self.request_count}")
        family("qvl_images_per_second", "gauge", f"Images answered per second over the last {RATE_WINDOW_S:.0f} s.")
        lines.append(f"qvl_images_per_second {rate:.6f}")
        for name, (help_text, value) in gauges.items():
            family(name, "gauge", help_text)
            lines.append(f"{name} {value:g}")
        return "\n".join(lines) + "\n"
