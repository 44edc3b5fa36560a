"""The micro-batcher: one queue, one worker thread, batches run under the controller's policy.

Requests wait in one queue; the worker takes whole requests in arrival order into a micro-batch of
at most the predictor's ``batch_size`` sentences (waiting at most ``max_wait_ms`` for company),
asks the ``DepthController`` for the level when the batch is dispatched, and runs it through the
engine (``Predictor.run_batch``), where every sentence exits on its own. Nothing is dropped: a
request is answered, or refused at once (``Overloaded``) when the queue is full.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from typing import Any, Sequence

from ..policies import Policy
from ..predict import Predictor
from .controller import DepthController, LatencyWindow
from .ladder import Level
from .metrics import Metrics

log = logging.getLogger("vee_jax")


class Overloaded(Exception):
    """The queue is full: answer 503 with ``Retry-After: retry_after_s``."""

    def __init__(self, retry_after_s: int):
        super().__init__(f"the queue is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclasses.dataclass
class Job:
    """One request's sentences waiting for the engine; ``done`` is set with the result or an error."""

    encoded: list
    policy: Policy | None  # None: the controller's level at dispatch
    arrival: float
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    results: list | None = None
    policy_used: Policy | None = None
    level: int | None = None
    error: BaseException | None = None
    callback: Any = None  # called (in the worker thread) when done

    @property
    def sentences(self) -> int:
        """Sentences in ``encoded``: a sentence past the subword limit is several window rows, the
        first at word offset 0 (``Predictor.run_batch`` answers once per sentence)."""
        return sum(getattr(e, "offset", 0) == 0 for e in self.encoded)


class MicroBatcher:
    """A worker thread that runs queued requests in micro-batches under the controller's policy.

    ``submit`` never blocks: it raises ``Overloaded`` when ``max_queue`` sentences already wait.
    """

    def __init__(self, predictor: Predictor, ladder: Sequence[Level], controller: DepthController,
                 metrics: Metrics, *, max_wait_ms: float = 5.0, max_queue: int = 256, tick_s: float = 0.1,
                 clock=time.perf_counter):
        self.predictor, self.ladder, self.controller, self.metrics = predictor, list(ladder), controller, metrics
        self.max_rows, self.max_wait_s = predictor.batch_size, max_wait_ms / 1e3
        self.max_queue, self.tick_s = max_queue, tick_s
        self.clock = clock
        self.latency = LatencyWindow()
        self.ms_per_sentence: dict[int, float] = {}  # EWMA per level (batch time / sentences)
        self._queue: collections.deque[Job] = collections.deque()
        self._rows = 0
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    # --- state ----------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Sentences waiting."""
        return self._rows

    def current(self) -> tuple[int, Policy]:
        lvl = self.controller.level
        return lvl, self.ladder[lvl].policy

    def observe(self) -> int:
        """Feed the controller the current load; the level for the next batch."""
        lvl = self.controller.level
        return self.controller.observe(self._rows, self.latency.p95(self.clock()), self.ms_per_sentence.get(lvl))

    # --- requests -------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        """Queue ``job`` (all its sentences go into one batch) or raise ``Overloaded``."""
        if not 1 <= len(job.encoded) <= self.max_rows:
            raise ValueError(f"a request holds 1..{self.max_rows} sentences (one batch), got {len(job.encoded)}")
        with self._cv:
            if self._stop:
                raise Overloaded(1)
            n = len(job.encoded)
            if self._rows + n > self.max_queue:
                ms = self.ms_per_sentence.get(self.controller.level, 50.0)
                raise Overloaded(max(1, math.ceil(self._rows * ms / 1e3)))
            self._queue.append(job)
            self._rows += n
            self._cv.notify()
        return job

    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="vee-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the batch in progress; jobs still queued get an error (answered 503)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread:
            self._thread.join(timeout=60)
        with self._cv:
            while self._queue:
                self._finish(self._queue.popleft(), error=Overloaded(1))
            self._rows = 0

    # --- the worker -----------------------------------------------------------------------
    def _take(self) -> tuple[list[Job], Policy, int | None] | None:
        """Wait for work, let a batch fill for up to ``max_wait``, pick the level, take whole jobs."""
        with self._cv:
            while not self._queue and not self._stop:
                if not self._cv.wait(self.tick_s):
                    self.observe()  # idle tick: lets the level come back up without traffic
            if self._stop:
                return None
            deadline = self._queue[0].arrival + self.max_wait_s
            while self._rows < self.max_rows and not self._stop and self.clock() < deadline:
                self._cv.wait(max(0.0, deadline - self.clock()))
            level = self.observe()
            head = self._queue[0].policy
            taken, rows, keep = [], 0, collections.deque()
            while self._queue:
                job = self._queue.popleft()
                if job.policy == head and rows + len(job.encoded) <= self.max_rows:
                    taken.append(job)
                    rows += len(job.encoded)
                else:
                    keep.append(job)
            self._queue = keep
            self._rows -= rows
        if head is None:
            return taken, self.ladder[level].policy, level
        return taken, head, None

    def _run(self) -> None:
        while True:
            got = self._take()
            if got is None:
                return
            jobs, policy, level = got
            encoded = [e for j in jobs for e in j.encoded]
            t0 = self.clock()
            try:
                results = self.predictor.run_batch(encoded, policy)
            except Exception as e:  # answered 500, the service goes on
                log.exception("batch of %d sentences failed", len(encoded))
                for j in jobs:
                    self._finish(j, error=e)
                continue
            ms = (self.clock() - t0) * 1e3 / len(encoded)
            if level is not None:
                old = self.ms_per_sentence.get(level)
                self.ms_per_sentence[level] = ms if old is None else 0.8 * old + 0.2 * ms
            self.metrics.batch([r.exit_layer for r in results])
            k = 0
            for j in jobs:
                n = j.sentences
                self._finish(j, results=results[k:k + n], policy=policy, level=level)
                k += n

    def _finish(self, job: Job, *, results=None, policy=None, level=None, error=None) -> None:
        job.results, job.policy_used, job.level, job.error = results, policy, level, error
        job.done.set()
        if job.callback is not None:
            try:
                job.callback()
            except RuntimeError:  # the event loop closed (shutdown): nobody waits for this answer
                log.warning("a finished request found its event loop closed")

__all__ = ["Job", "MicroBatcher", "Overloaded"]
