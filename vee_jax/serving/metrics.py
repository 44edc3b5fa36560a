"""The service's Prometheus metrics (``prometheus_client``), in a registry of its own per app.

Counted as the service runs:

* ``vee_requests_total{path,code}``: HTTP requests by path and status code;
* ``vee_request_latency_seconds``: histogram of the answered ``POST /ner`` requests;
* ``vee_sentences_total{exit_layer}``: sentences answered, by exit layer (every layer from the start);
* ``vee_avg_exit_layer``: their average exit layer; ``vee_batches_total``: micro-batches run.

Read from the service at each scrape (``ServiceState``): ``vee_queue_sentences``,
``vee_policy_level``, ``vee_latency_p95_ms``, ``vee_target_p95_ms``, ``vee_compilations`` (XLA
compilations in the process, ``vee_jax.compilations``), ``vee_compilation_cache_hits``, ``vee_ready``
(1 once the warm-up is done) (gauges), ``vee_policy_info{<the policy's fields>,level}`` (value 1) and
``vee_level_changes_total{direction}``. The library adds a ``_created`` series (the start time)
to each counter and histogram, and sorts labels by name.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


@dataclasses.dataclass(frozen=True)
class ServiceState:
    """What the service is doing now, as ``/metrics`` shows it."""

    queue: int  # sentences waiting
    level: int  # ladder level in force, 0 = deepest
    policy: dict[str, Any]  # its policy (``Policy.to_dict``)
    p95_ms: float | None  # the recent p95 latency the controller sees; None: no recent answer
    target_ms: float | None  # the controller's target; None: adaptive depth off
    compilations: int  # XLA compilations in this process (``vee_jax.compilations.count``)
    steps_down: int
    steps_up: int
    cache_hits: int = 0  # programs read from JAX's persistent compilation cache instead
    ready: bool = True  # the warm-up is done


class _StateCollector:
    """The ``ServiceState`` series, read from ``state()`` at each scrape (a custom collector)."""

    def __init__(self, state: Callable[[], ServiceState]):
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state()
        for name, help_, value in (
                ("vee_queue_sentences", "Sentences waiting for a batch.", s.queue),
                ("vee_policy_level", "Ladder level in force (0 = deepest).", s.level),
                ("vee_latency_p95_ms", "Recent p95 latency the controller sees (-1: none).",
                 -1 if s.p95_ms is None else round(s.p95_ms, 3)),
                ("vee_target_p95_ms", "Latency target (-1: adaptive policy off).",
                 -1 if s.target_ms is None else s.target_ms),
                ("vee_compilations", "XLA compilations in this process (persistent-cache hits excluded).",
                 s.compilations),
                ("vee_compilation_cache_hits", "Programs read from the persistent compilation cache.", s.cache_hits),
                ("vee_ready", "1 once every program is compiled (the warm-up), else 0.", int(s.ready))):
            yield GaugeMetricFamily(name, help_, value=value)
        yield InfoMetricFamily("vee_policy", "The policy in force (labels); value 1.",
                               value={**{k: str(v) for k, v in s.policy.items()}, "level": str(s.level)})
        changes = CounterMetricFamily("vee_level_changes", "Controller steps.", labels=["direction"])
        changes.add_metric(["down"], s.steps_down)
        changes.add_metric(["up"], s.steps_up)
        yield changes


class Metrics:
    """The counters and the latency histogram of one app, and ``render`` for ``GET /metrics``."""

    def __init__(self, num_layers: int):
        self.registry = CollectorRegistry()
        self.requests = Counter("vee_requests", "HTTP requests by path and status code.", ["path", "code"],
                                registry=self.registry)
        self.latency = Histogram("vee_request_latency_seconds", "Latency of answered POST /ner requests.",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.sentences = Counter("vee_sentences", "Sentences answered, by exit layer.", ["exit_layer"],
                                 registry=self.registry)
        for m in range(1, num_layers + 1):
            self.sentences.labels(str(m))  # every layer is exported, answered or not
        self.batches = Counter("vee_batches", "Micro-batches run.", registry=self.registry)
        self._lock = threading.Lock()
        self._exits, self._exit_sum = 0, 0
        Gauge("vee_avg_exit_layer", "Average exit layer of the sentences answered so far.",
              registry=self.registry).set_function(self.avg_exit_layer)

    def watch(self, state: Callable[[], ServiceState]) -> None:
        """Export the service's state (``ServiceState``), read from ``state()`` at each scrape."""
        self.registry.register(_StateCollector(state))

    def request(self, path: str, code: int, seconds: float | None) -> None:
        """One HTTP request answered with ``code``; ``seconds``: its latency, when it is to be counted."""
        self.requests.labels(path, str(code)).inc()
        if seconds is not None:
            self.latency.observe(seconds)

    def batch(self, exit_layers: Sequence[int]) -> None:
        """One micro-batch run; ``exit_layers``: its sentences' exit layers (1-based)."""
        self.batches.inc()
        for m in exit_layers:
            self.sentences.labels(str(m)).inc()
        with self._lock:
            self._exits += len(exit_layers)
            self._exit_sum += sum(exit_layers)

    def avg_exit_layer(self) -> float:
        with self._lock:
            return self._exit_sum / self._exits if self._exits else 0.0

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition and its content type: the Prometheus text format, or OpenMetrics when
        ``accept`` (the request's Accept header) asks for it."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


__all__ = ["LATENCY_BUCKETS", "Metrics", "ServiceState"]
