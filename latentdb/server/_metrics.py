"""Request counters and latency histograms, rendered in Prometheus' text format."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterable

__all__ = ["Metrics"]

# Seconds: from a cached one-vector query (~0.5 ms) to a bulk add or an optimize().
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


class Metrics:
    """What the server counts; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._errors: dict[str, int] = defaultdict(int)
        # route -> (bucket counts, count, sum)
        self._latency: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            counts, totals = self._latency.setdefault(route, ([0] * len(BUCKETS), [0.0, 0.0]))
            position = bisect.bisect_left(BUCKETS, seconds)
            if position < len(BUCKETS):
                counts[position] += 1
            totals[0] += 1
            totals[1] += seconds

    def error(self, code: str) -> None:
        """Count one error reply by its stable code."""
        with self._lock:
            self._errors[code] += 1

    def render(
        self, rows: dict[str, int], recalls: dict[str, tuple[float, int]] | None = None
    ) -> str:
        """The metrics in Prometheus' text exposition format (version 0.0.4).

        Args:
            rows: Records per collection, measured now.
            recalls: Per collection with one measured, its live recall@10 and the
                recorded queries it was measured on.
        """
        lines = [
            "# HELP latentdb_requests_total HTTP requests answered.",
            "# TYPE latentdb_requests_total counter",
        ]
        with self._lock:
            requests = sorted(self._requests.items())
            errors = sorted(self._errors.items())
            latency = sorted((route, (list(c), list(t))) for route, (c, t) in self._latency.items())
        for (method, route, status), count in requests:
            labels = _labels([("method", method), ("route", route), ("status", status)])
            lines.append(f"latentdb_requests_total{labels} {count}")
        lines += [
            "# HELP latentdb_errors_total Error replies, by stable error code.",
            "# TYPE latentdb_errors_total counter",
        ]
        for code, count in errors:
            lines.append(f"latentdb_errors_total{_labels([('code', code)])} {count}")
        lines += [
            "# HELP latentdb_request_duration_seconds Time to answer a request.",
            "# TYPE latentdb_request_duration_seconds histogram",
        ]
        for route, (counts, (total, seconds)) in latency:
            cumulative = 0
            for bound, count in zip(BUCKETS, counts, strict=True):
                cumulative += count
                labels = _labels([("route", route), ("le", repr(bound))])
                lines.append(f"latentdb_request_duration_seconds_bucket{labels} {cumulative}")
            labels = _labels([("route", route), ("le", "+Inf")])
            lines.append(f"latentdb_request_duration_seconds_bucket{labels} {int(total)}")
            route_label = _labels([("route", route)])
            lines.append(f"latentdb_request_duration_seconds_sum{route_label} {seconds}")
            lines.append(f"latentdb_request_duration_seconds_count{route_label} {int(total)}")
        lines += [
            "# HELP latentdb_collection_rows Records per collection.",
            "# TYPE latentdb_collection_rows gauge",
        ]
        for name, count in sorted(rows.items()):
            lines.append(f"latentdb_collection_rows{_labels([('collection', name)])} {count}")
        lines += [
            "# HELP latentdb_live_recall Recall@10 on recorded user queries (index_status).",
            "# TYPE latentdb_live_recall gauge",
        ]
        for name, (recall, _) in sorted((recalls or {}).items()):
            lines.append(f"latentdb_live_recall{_labels([('collection', name)])} {recall}")
        lines += [
            "# HELP latentdb_live_recall_queries Recorded queries the live recall is measured on.",
            "# TYPE latentdb_live_recall_queries gauge",
        ]
        for name, (_, queries) in sorted((recalls or {}).items()):
            lines.append(f"latentdb_live_recall_queries{_labels([('collection', name)])} {queries}")
        return "\n".join(lines) + "\n"
