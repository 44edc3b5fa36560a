"""The batchers: one queue, one worker thread, batches run under the controller's policy.

Requests wait in one queue; the worker takes whole requests in arrival order into a micro-batch of
at most the predictor's ``batch_size`` sentences (waiting at most ``max_wait_ms`` for company),
asks the ``DepthController`` for the level when the batch is dispatched, and runs it through the
engine (``Predictor.run_batch``), where every sentence exits on its own; ``ContinuousBatcher``
streams sentences through continuous batches instead. Nothing is dropped: a request is answered,
or refused at once (``Overloaded``) when the queue is full or, at the shallowest rung of a
latency target, too long to answer within it.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import math
import threading
import time
from typing import Any, Sequence

from ..policies import Policy
from ..predict import Predictor
from .controller import DepthController, LatencyWindow, RateWindow
from .ladder import Level
from .metrics import Metrics

log = logging.getLogger("vee_jax")


class Overloaded(Exception):
    """The queue is full, or a new request would wait past the latency target: answer 503 with
    ``Retry-After: retry_after_s``."""

    def __init__(self, retry_after_s: int, reason: str = "the queue is full"):
        super().__init__(f"{reason}; retry after {retry_after_s} s")
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
    tables: list | None = None  # ContinuousBatcher: each row's (table, exit layer) as it exits
    left: int = 0  # ContinuousBatcher: rows still running

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
        self.arrivals = RateWindow()
        self.ms_per_sentence: dict[int, float] = {}  # EWMA per level (batch time / sentences)
        self._cost_at: dict[int, float] = {}  # when each level's cost was last updated
        self.cost_max_age_s = 10.0
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
        lvl, now = self.controller.level, self.clock()
        # The deeper rung's cost only while recent: measured under other load (a burst from idle
        # runs nearly empty batches, dear per sentence), an old value could hold the level down
        # for good; without it the controller may probe a step up, and steps back if it was wrong.
        above = self.ms_per_sentence.get(lvl - 1)
        if above is not None and now - self._cost_at.get(lvl - 1, -math.inf) > self.cost_max_age_s:
            above = None
        return self.controller.observe(self._rows, self.latency.p95(now), self.ms_per_sentence.get(lvl),
                                       self.arrivals.per_s(now), above)

    # --- requests -------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        """Queue ``job`` (all its sentences go into one batch) or raise ``Overloaded``."""
        self.submit_all([job])
        return job

    def submit_all(self, jobs: Sequence[Job]) -> None:
        """Queue every job of one request, or none (raise ``Overloaded``): a document of several
        jobs is not half run while its answer is a 503."""
        if not jobs:
            return
        for job in jobs:
            if not 1 <= len(job.encoded) <= self.max_rows:
                raise ValueError(f"a request holds 1..{self.max_rows} sentences (one batch), got {len(job.encoded)}")
        with self._cv:
            if self._stop:
                raise Overloaded(1)
            n = sum(len(job.encoded) for job in jobs)
            self.arrivals.add(self.clock(), n)  # refused ones too: the demand, not what was let in
            full, late = self._rows + n > self.max_queue, self._past_target()
            if full or late:
                ms = self.ms_per_sentence.get(self.controller.level, 50.0)
                raise Overloaded(max(1, math.ceil(self._rows * ms / 1e3)), "the queue is full" if full else
                                 f"the queue is too long to answer within the {self.controller.target_ms:g} ms latency target")
            self._queue.extend(jobs)
            self._rows += n
            self._cv.notify()

    def _past_target(self) -> bool:
        """Whether a new request would wait too long with the shallowest rung in force: then it is
        refused at once (503 with Retry-After) rather than answered late, so that the p95 of what
        is answered holds the target up to the service's capacity. Too long: the queue's expected
        wait past ``restore_fraction`` of the target (half), which leaves the other half for the
        request's own layers, its tokenisation and HTTP (a wait of the whole target answered
        0-40% past it in the load test)."""
        c = self.controller
        if c.target_ms is None or c.level < c.num_levels - 1:
            return False  # no target, or a shallower rung is left to step down to
        ms = self.ms_per_sentence.get(c.level)
        return ms is not None and self._rows * ms > c.restore_fraction * c.target_ms

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
            seconds = self._run_micro_batch(jobs, policy, level)
            if seconds is not None and level is not None:
                self._record_cost(level, seconds * 1e3 / sum(len(j.encoded) for j in jobs))

    def _record_cost(self, level: int, ms: float) -> None:
        """A new measurement of ``level``'s cost, ms of worker time per sentence, into its EWMA
        (``ms_per_sentence``, what the controller reads) and when it was taken (``_cost_at``)."""
        old = self.ms_per_sentence.get(level)
        self.ms_per_sentence[level] = ms if old is None else 0.8 * old + 0.2 * ms
        self._cost_at[level] = self.clock()

    def warm_up_steps(self, max_subwords: int | None = None) -> list:
        """What the warm-up compiles beyond the whole-batch engine: nothing (micro-batches only)."""
        return []

    def _run_micro_batch(self, jobs: Sequence[Job], policy: Policy, level: int | None) -> float | None:
        """Whole jobs as one micro-batch through ``Predictor.run_batch``, each answered
        (``_answer_job``) with its sentences' results or the error. Returns the engine's seconds,
        None when it failed (answered 500; the service goes on)."""
        encoded = [e for j in jobs for e in j.encoded]
        t0 = self.clock()
        try:
            results = self.predictor.run_batch(encoded, policy)
        except Exception as e:
            log.exception("batch of %d sentences failed", len(encoded))
            for j in jobs:
                self._answer_job(j, error=e)
            return None
        seconds = self.clock() - t0
        self.metrics.batch([r.exit_layer for r in results])
        k = 0
        for j in jobs:
            n = j.sentences
            self._answer_job(j, results=results[k:k + n], policy=policy, level=level)
            k += n
        return seconds

    def _answer_job(self, job: Job, *, results=None, policy=None, level=None, error=None) -> None:
        """Answer a job taken from the queue (its sentences left the count when taken)."""
        self._finish(job, results=results, policy=policy, level=level, error=error)

    def _finish(self, job: Job, *, results=None, policy=None, level=None, error=None) -> None:
        job.results, job.policy_used, job.level, job.error = results, policy, level, error
        job.done.set()
        if job.callback is not None:
            try:
                job.callback()
            except RuntimeError:  # the event loop closed (shutdown): nobody waits for this answer
                log.warning("a finished request found its event loop closed")


class ContinuousBatcher(MicroBatcher):
    """Sentences join the running continuous batch of their shape between layer calls.

    The worker keeps one ``batched.ContinuousBatch`` per (ladder policy, subword bucket T) with
    L = ``words_for(T)`` (the shapes the whole-batch engine warms up), ``cap`` slots each. Between
    two layer calls it admits every queued request's sentences into free slots (the rest wait in
    order), then runs one layer call: of the busy batch whose sentence has waited longest (in it,
    a full batch of one layer first, else the queue whose first sentence has waited longest): so no request
    waits for another's batch to finish, a sentence that exits stops costing compute, and a
    request is answered when its last sentence exits. Every ladder rung streams, fixed budgets
    included: a budget rung run in micro-batches of whatever arrived in one round (often one
    sentence) had less capacity than the VEE rung above it, so stepping down under load made the
    queue worse; streamed, a budget's layers below its exit skip the exit (``earliest_stop``).
    The rest runs in micro-batches through ``Predictor.run_batch`` as ``MicroBatcher`` does: a
    request's own policy that is not on the ladder (its knobs would need batches of their own),
    and requests with a row past the warmed continuous shapes (``stream_subwords``: the pools
    grow as L^2). ``queued`` counts the sentences not yet answered (waiting or in flight), which
    ``max_queue`` bounds.
    """

    def __init__(self, predictor: Predictor, ladder: Sequence[Level], controller: DepthController,
                 metrics: Metrics, *, max_queue: int = 256, tick_s: float = 0.1, clock=time.perf_counter,
                 stream_subwords: int = 96, cap: int | None = None, max_idle_batches: int = 8,
                 observe_s: float = 0.025, **_):
        super().__init__(predictor, ladder, controller, metrics, max_wait_ms=0.0, max_queue=max_queue, tick_s=tick_s,
                         clock=clock)
        from ..batched import BatchStats, batch_sizes
        from ..data.features import SUBWORD_BUCKETS, bucket

        # The largest subword bucket that streams: stream_subwords within the model's limit.
        top = min(stream_subwords, predictor.max_subwords, SUBWORD_BUCKETS[-1])
        self.stream_limit = bucket(max(top, 1), SUBWORD_BUCKETS)
        self.sizes = batch_sizes(predictor.batch_size)
        self.cap = cap or 2 * predictor.batch_size
        self.max_idle_batches = max_idle_batches
        # A round is one layer call (a few ms): observed every round, the
        # controller's cooldown and hold (counted in observations) passed before a step showed
        # in the latencies, and the level swung from top to bottom and back. Observed at most
        # every observe_s, about one micro-batch's time, as the MicroBatcher observes.
        self.observe_s = observe_s
        self._observed = -math.inf
        self.slow_round_s = 0.25  # a round past this is logged (a round is one layer call)
        self._ticks = itertools.count()  # one clock of queue order for all the batches
        self.stats = BatchStats()
        self.batches: dict[tuple[Policy, int], Any] = {}  # (policy, T) -> ContinuousBatch, least recently used first
        self._waiting: collections.deque[tuple[Job, int, tuple[Policy, int]]] = collections.deque()
        self._level_of = {lv.policy: i for i, lv in reversed(list(enumerate(self.ladder)))}
        self._work_s: dict[int | None, float] = collections.defaultdict(float)  # worker time per level
        self._work_done: dict[int | None, int] = collections.defaultdict(int)  # sentences answered per level

    def streams(self, policy: Policy, job: Job) -> bool:
        """Whether ``job`` runs in the continuous batches under ``policy`` (see the class docstring)."""
        from ..data.features import SUBWORD_BUCKETS, bucket

        return (policy in self._level_of
                and all(bucket(len(e.input_ids), SUBWORD_BUCKETS) <= self.stream_limit for e in job.encoded))

    def stream_shapes(self) -> list[tuple[int, int]]:
        """The (T, L) of every continuous batch the service can open: each subword bucket up to
        ``stream_limit``, L = ``words_for(T)``."""
        from ..data.features import SUBWORD_BUCKETS
        from ..predict import words_for

        return [(T, words_for(T)) for T in SUBWORD_BUCKETS if T <= self.stream_limit]

    def warm_up_steps(self, max_subwords: int | None = None) -> list:
        """One callable per (streamed ladder policy, shape) that compiles its layer calls
        (``ContinuousBatch.warm_up``). ``max_subwords`` (the warm-up's limit) lowers
        ``stream_limit`` to its bucket, so that no row streams on a shape left cold."""
        from ..data.features import SUBWORD_BUCKETS, bucket

        if max_subwords:
            self.stream_limit = min(self.stream_limit, bucket(min(max_subwords, SUBWORD_BUCKETS[-1]), SUBWORD_BUCKETS))
        programs: dict[Policy, Policy] = {}
        for lv in self.ladder:
            programs.setdefault(self.predictor.program(lv.policy), lv.policy)
        return [lambda p=p, shape=shape: self._batch(p, shape).warm_up(self.predictor.spec.casing)
                for p in programs.values() for shape in self.stream_shapes()]

    def observe(self) -> int:
        """``MicroBatcher.observe`` at most every ``observe_s`` seconds; else the level in force."""
        now = self.clock()
        if now - self._observed < self.observe_s:
            return self.controller.level
        self._observed = now
        return super().observe()

    def _batch(self, policy: Policy, shape: tuple[int, int]):
        """The continuous batch of ``policy`` and ``shape`` (made on first use; most recently used last)."""
        from .. import engine
        from ..batched import ContinuousBatch

        key = (policy, shape[0])
        batch = self.batches.pop(key, None)
        if batch is None:
            static, knobs = engine.traced_policy(policy)
            step_policy = dataclasses.replace(static, ensemble=False)  # the mean is taken on the host
            p = self.predictor
            fixed = policy.fixed_exit(p.num_layers, policy.knobs())  # full, budget: no test before it
            earliest = int(fixed) - 1 if fixed is not None else policy.earliest_stop()
            batch = ContinuousBatch(p.spec.bert, p.model, shape, step_policy, knobs, policy.ensemble, p.spec.pooling,
                                    p.batch_size, self.sizes, self.stats, self._on_exit, cap=self.cap,
                                    earliest_stop=earliest, oldest_first=True, ticks=self._ticks)
        self.batches[key] = batch
        return batch

    # --- the worker -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            got = self._take_all()
            if got is None:
                return
            t0 = self.clock()
            try:
                self._round(got)
                if self.clock() - t0 > self.slow_round_s:
                    log.warning("a slow round: %.0f ms (%d requests taken, %d sentences waiting for a slot, %d batches)",
                                1e3 * (self.clock() - t0), len(got), len(self._waiting), len(self.batches))
            except Exception as e:  # answered 500; the worker and the service go on
                log.exception("the continuous batcher's round failed")
                self._fail_all(e, [job for job, _, _ in got])

    def _round(self, got: list[tuple[Job, Policy, int | None]]) -> None:
        """Admit ``got`` (streamed, or run at once in micro-batches), then one layer call: of the busy
        batch whose sentence has waited longest. One call, not one of every busy batch: while the
        level changes, the batches of two or three rungs x six subword buckets are busy at once,
        and a round of all of them took up to 0.9 s, which every sentence in them waited for at
        every layer (p95 of seconds in the load test)."""
        whole: dict[Policy, list[Job]] = {}
        for job, policy, level in got:
            job.policy_used, job.level = policy, level
            if self.streams(policy, job):
                self._enqueue(job, policy)
            else:
                whole.setdefault(policy, []).append(job)
        for policy, jobs in whole.items():
            for part in self._micro_batches(jobs):
                self._run_whole(part, policy)
        self._admit()
        busy = [(k, b) for k, b in self.batches.items() if b.busy]
        if busy:  # one layer call: of the batch whose sentence has waited longest
            key, batch = min(busy, key=lambda kb: kb[1].oldest())
            t0 = self.clock()
            batch.step()
            self._work_s[self._level_of.get(key[0])] += self.clock() - t0
        self._forget_idle()

    def _take_all(self) -> list[tuple[Job, Policy, int | None]] | None:
        """Every queued request with its policy (the controller's level at admission), waiting
        only while nothing is in flight; None when stopping."""
        with self._cv:
            while not self._queue and not self._stop and not self._waiting and not any(
                    b.busy for b in list(self.batches.values())):  # list: the warm-up thread may add
                if not self._cv.wait(self.tick_s):
                    self.observe()
            if self._stop:
                return None
            if not self._queue:
                return []
            level = self.observe()
            got = []
            while self._queue:
                job = self._queue.popleft()
                if job.policy is None:
                    got.append((job, self.ladder[level].policy, level))
                else:
                    got.append((job, job.policy, None))
            return got

    def _enqueue(self, job: Job, policy: Policy) -> None:
        from ..data.features import SUBWORD_BUCKETS, bucket

        job.tables = [None] * len(job.encoded)
        job.left = len(job.encoded)
        for r, e in enumerate(job.encoded):
            self._waiting.append((job, r, (policy, bucket(len(e.input_ids), SUBWORD_BUCKETS))))

    def _admit(self) -> None:
        """Waiting rows into free slots, in arrival order per batch."""
        from ..predict import words_for

        take: dict[tuple[Policy, int], list[tuple[Job, int]]] = {}
        keep: collections.deque = collections.deque()
        room: dict[tuple[Policy, int], int] = {}
        for job, r, key in self._waiting:
            policy, T = key
            if key not in room:
                room[key] = len(self._batch(policy, (T, words_for(T))).free)
            if room[key] > 0:
                room[key] -= 1
                take.setdefault(key, []).append((job, r))
            else:
                keep.append((job, r, key))
        self._waiting = keep
        for (policy, T), rows in take.items():
            self._batch(policy, (T, words_for(T))).admit(rows, [job.encoded[r] for job, r in rows])

    def _on_exit(self, key: tuple[Job, int], table, layer: int, votes: int) -> None:
        job, r = key
        job.tables[r] = (table, layer)
        job.left -= 1
        if job.left == 0:
            try:
                self._answer(job)
            except Exception as e:  # its slots are already free: answered here, or never
                log.exception("answering a request failed")
                self._answer_job(job, error=e)

    def _answer(self, job: Job) -> None:
        from ..windows import sentence_rows

        p = self.predictor
        results = [p.decide([job.encoded[r] for r in g], [job.tables[r] for r in g])
                   for g in sentence_rows([e.offset for e in job.encoded])]
        # counted where the layer calls' time was (the rung of the batch), also for a request
        # that named a rung's policy itself (level None) or a document job sent at the rung
        rung = self._level_of.get(job.policy_used)
        self._work_done[rung] += len(job.encoded)
        self._cost(rung)
        self._answer_job(job, results=results, policy=job.policy_used, level=job.level)
        self.metrics.batch([x.exit_layer for x in results])

    def _answer_job(self, job: Job, *, results=None, policy=None, level=None, error=None) -> None:
        """Answer a job once; its sentences leave the count (``queued``) then, not when taken."""
        if job.done.is_set():
            return
        with self._cv:
            self._rows -= len(job.encoded)
        self._finish(job, results=results, policy=policy, level=level, error=error)

    def _cost(self, level: int | None) -> None:
        """The controller's cost estimate of ``level`` (ms of worker time per sentence answered, an
        EWMA), from that level's layer calls and sentences answered since its last update."""
        if level is not None and self._work_done[level] >= 8:
            self._record_cost(level, self._work_s[level] * 1e3 / self._work_done[level])
            self._work_s[level], self._work_done[level] = 0.0, 0

    def _micro_batches(self, jobs: Sequence[Job]) -> list[list[Job]]:
        """Whole jobs, in order, into micro-batches of at most ``batch_size`` rows."""
        parts: list[list[Job]] = []
        rows = 0
        for job in jobs:
            if not parts or rows + len(job.encoded) > self.max_rows:
                parts.append([])
                rows = 0
            parts[-1].append(job)
            rows += len(job.encoded)
        return parts

    def _run_whole(self, jobs: Sequence[Job], policy: Policy) -> None:
        """One micro-batch of whole jobs through ``Predictor.run_batch`` (``vee_infer``)."""
        seconds = self._run_micro_batch(jobs, policy, jobs[0].level)
        if seconds is not None:  # counted under the policy's rung, as ``_answer`` counts
            rung = self._level_of.get(policy)
            self._work_s[rung] += seconds
            self._work_done[rung] += sum(len(j.encoded) for j in jobs)
            self._cost(rung)

    def _in_flight(self) -> list[Job]:
        """Every job admitted and not answered: in a batch's slots or waiting for one."""
        jobs = {id(k[0]): k[0] for b in self.batches.values() for k in b.key if k is not None}
        jobs.update({id(j): j for j, _, _ in self._waiting})
        return list(jobs.values())

    def _fail_all(self, error: BaseException, more: Sequence[Job] = ()) -> None:
        """A round failed: every request in flight, waiting or in ``more`` is answered with the
        error (once), the batches dropped (their state is unknown)."""
        jobs = {id(j): j for j in [*self._in_flight(), *more]}
        self.batches.clear()
        self._waiting.clear()
        for job in jobs.values():
            self._answer_job(job, error=error)

    def _forget_idle(self) -> None:
        """Drop empty batches beyond ``max_idle_batches`` (their pools), least recently used first."""
        idle = [k for k, b in self.batches.items() if not b.busy and b.in_flight == 0]
        for k in idle[:max(0, len(idle) - self.max_idle_batches)]:
            del self.batches[k]

    def stop(self) -> None:
        """Stop after the round in progress; requests queued, waiting or in flight get an error (503)."""
        super().stop()
        if self._thread is not None and self._thread.is_alive():  # still in a round: it owns the batches
            log.warning("the continuous batcher did not stop within 60 s; in-flight requests are left to it")
            return
        self._fail_all(Overloaded(1))
        with self._cv:
            self._rows = 0


__all__ = ["ContinuousBatcher", "Job", "MicroBatcher", "Overloaded"]
