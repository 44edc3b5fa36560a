"""The depth controller and the latency window it watches.

``DepthController`` (pure: no clock, no I/O) holds the service's level on the ladder, 0 the
deepest. With a latency target it moves one rung down when the recent p95 latency or the queue's
expected wait (queued sentences x measured ms per sentence) passes the target, and one rung back
up after ``hold`` calm observations in a row (both below ``restore_fraction`` of the target):
hysteresis, so that it does not flap. A step up also needs headroom when the caller knows the
arrival rate and the deeper rung's cost: the rung above must be able to carry the arrivals at
``max_utilisation`` of the worker (else, near its capacity, each step up built a queue and the
next step down followed: the level oscillated and p95 passed the target). ``LatencyWindow`` gives
it the recent p95, ``RateWindow`` the arrival rate.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading


@dataclasses.dataclass
class DepthController:
    """Chooses the ladder level (0 = deepest) from the load, with hysteresis. Pure: no clock, no I/O.

    ``observe(queue, p95_ms, ms_per_sentence)`` is called once per dispatched batch (and on idle
    ticks). Pressure: the recent p95 latency, or the queue's expected wait ``queue x
    ms_per_sentence``, is above ``target_ms``; then the level goes one down (shallower), at most
    once every ``cooldown`` observations so that the effect of a step is seen before the next.
    Calm: both at or below ``restore_fraction x target_ms`` (a missing p95 counts as calm);
    after ``hold`` calm observations in a row the level goes one up, if the rung above has
    headroom: ``arrivals_per_s x ms_above`` (its measured ms per sentence) at most
    ``max_utilisation`` of one second (unknown rate or cost: headroom assumed). In between, the
    level stays.
    Without a target (``target_ms=None``) the level is always 0: the adaptive policy is off.
    """

    num_levels: int
    target_ms: float | None = None
    restore_fraction: float = 0.5
    max_utilisation: float = 0.7
    cooldown: int = 2
    hold: int = 8
    level: int = 0
    steps_down: int = 0
    steps_up: int = 0
    _since_step: int = 1 << 30
    _calm: int = 0

    def __post_init__(self):
        if self.num_levels < 1:
            raise ValueError("the ladder needs at least one policy")
        if self.target_ms is not None and not self.target_ms > 0:
            raise ValueError(f"target_ms must be > 0, got {self.target_ms}")
        if not 0 < self.restore_fraction < 1:
            raise ValueError(f"restore_fraction must be in (0, 1), got {self.restore_fraction}")
        if not 0 < self.max_utilisation <= 1:
            raise ValueError(f"max_utilisation must be in (0, 1], got {self.max_utilisation}")

    def observe(self, queue: int, p95_ms: float | None, ms_per_sentence: float | None = None,
                arrivals_per_s: float | None = None, ms_above: float | None = None) -> int:
        """Update and return the level for the next batch.

        queue: sentences waiting; p95_ms: recent p95 latency (None: no recent answers);
        ms_per_sentence: this level's measured cost; arrivals_per_s: sentences arriving per second
        recently; ms_above: the measured cost of the rung above (one deeper), None if unknown.
        """
        if self.target_ms is None:
            return self.level
        wait = queue * (ms_per_sentence or 0.0)
        pressure = (p95_ms is not None and p95_ms > self.target_ms) or wait > self.target_ms
        low = self.restore_fraction * self.target_ms
        calm = (p95_ms is None or p95_ms <= low) and wait <= low
        self._since_step += 1
        if pressure:
            self._calm = 0
            if self.level < self.num_levels - 1 and self._since_step >= self.cooldown:
                self.level, self._since_step, self.steps_down = self.level + 1, 0, self.steps_down + 1
        elif calm:
            self._calm += 1
            headroom = arrivals_per_s is None or ms_above is None or (
                arrivals_per_s * ms_above / 1e3 <= self.max_utilisation)
            if self.level > 0 and self._calm >= self.hold and headroom:
                self.level, self._calm, self._since_step, self.steps_up = self.level - 1, 0, 0, self.steps_up + 1
        else:
            self._calm = 0
        return self.level


class RateWindow:
    """Sentences that arrived in the last ``seconds``: the controller's arrival rate."""

    def __init__(self, seconds: float = 2.0):
        self.seconds = seconds
        self.samples: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    def add(self, now: float, n: int) -> None:
        with self._lock:
            self.samples.append((now, n))

    def per_s(self, now: float) -> float:
        with self._lock:
            while self.samples and now - self.samples[0][0] > self.seconds:
                self.samples.popleft()
            return sum(n for _, n in self.samples) / self.seconds


class LatencyWindow:
    """The last ``size`` request latencies no older than ``max_age_s``: the controller's recent p95."""

    def __init__(self, size: int = 100, max_age_s: float = 5.0):
        self.samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=size)
        self.max_age_s = max_age_s
        self._lock = threading.Lock()

    def add(self, now: float, ms: float) -> None:
        with self._lock:
            self.samples.append((now, ms))

    def p95(self, now: float) -> float | None:
        with self._lock:
            recent = sorted(ms for t, ms in self.samples if now - t <= self.max_age_s)
        if not recent:
            return None
        return recent[min(len(recent) - 1, math.ceil(0.95 * len(recent)) - 1)]


__all__ = ["DepthController", "LatencyWindow", "RateWindow"]
