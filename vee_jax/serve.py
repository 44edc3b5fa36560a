"""An HTTP service for NER with early exiting: micro-batching, a depth controller, Prometheus metrics.

``create_app(predictor, ...)`` builds a FastAPI app:

* ``POST /ner`` ``{"texts": [...], "policy": {...}?}`` -> ``{"results": [{"entities": [...],
  "exit_layer": m}, ...], "policy": {...}, "level": i}``. Requests wait in one queue; a worker
  thread takes whole requests in arrival order into a micro-batch of at most ``batch_size``
  sentences (waiting at most ``max_wait_ms`` for company) and runs it through the engine, where
  every sentence exits on its own (``Predictor.run_batch``).
* ``GET /health``, ``GET /metrics`` (Prometheus text format), ``/openapi.json`` and ``/docs``.

The depth controller (``DepthController``, pure and testable) holds a ladder of policies from
deepest to shallowest. With a latency target it moves down a level when the recent p95 latency
or the expected wait of the queue (queued sentences x measured ms per sentence) passes the
target, and back up after ``hold`` calm observations in a row (both below ``restore_fraction``
of the target): hysteresis, so that it does not flap. The level is chosen when a batch is
dispatched; every answer names the policy that produced it.

Nothing is dropped: a request is answered, or refused at once with 503 and ``Retry-After``
when the queue is full. Limits (texts per request, characters per text, body bytes) give 413;
malformed requests 400 (bad JSON) or 422 (a field of the wrong type, an unknown policy).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import csv
import dataclasses
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field

from .config import ConfigError
from .policies import BudgetPolicy, Policy
from .predict import Predictor, policy_from_dict, policy_to_dict, to_prediction
from .words import split_words

log = logging.getLogger("vee_jax")


# --- the ladder of policies -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Level:
    """One rung of the ladder: a policy and, when measured offline, its dev average exit layer and F1."""

    policy: Policy
    avg_exit_layer: float | None = None
    f1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"policy": policy_to_dict(self.policy), "avg_exit_layer": self.avg_exit_layer, "f1": self.f1}


def _depth(policy: Policy, num_layers: int) -> float:
    """A policy's deepest exit: the budget layer, else M."""
    return policy.layer if isinstance(policy, BudgetPolicy) else num_layers


def default_ladder(base: Policy, num_layers: int) -> list[Level]:
    """``base``, then fixed budgets at 2M/3, M/2 and M/3 layers (those shallower than ``base``)."""
    levels = [Level(base)]
    for layer in sorted({max(1, round(num_layers * f)) for f in (2 / 3, 1 / 2, 1 / 3)}, reverse=True):
        if layer < _depth(levels[-1].policy, num_layers):
            levels.append(Level(BudgetPolicy(layer=layer), avg_exit_layer=float(layer)))
    return levels


def read_sweep_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an ``eval.py --sweep`` ``sweep.csv`` with numbers and booleans parsed."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for k in ("tau", "avg_exit_layer", "precision", "recall", "f1"):
                r[k] = float(r[k]) if r.get(k, "") != "" else ""
            for k in ("patience", "layer", "tp", "n_pred", "n_gold", "n_sentences"):
                r[k] = int(r[k]) if r.get(k, "") != "" else ""
            r["ensemble"] = r.get("ensemble") == "True"
            rows.append(r)
    return rows


def ladder_from_sweep(rows: Sequence[dict[str, Any]], base: Policy, num_layers: int,
                      split: str = "dev") -> list[Level]:
    """``base``, then the VEE-KL configuration with the best ``split`` F1 at each average exit layer
    target 2M/3, M/2, M/3 (``sweeps.choose``, as Table 1 chooses), keeping only strictly shallower rungs."""
    from .sweeps import METHODS, choose, row_policy

    split_rows = [r for r in rows if r["split"] == split]
    base_row = next((r for r in split_rows if row_policy(r) == base), None)
    levels = [Level(base, base_row["avg_exit_layer"] if base_row else None, base_row["f1"] if base_row else None)]
    for target in (2 * num_layers / 3, num_layers / 2, num_layers / 3):
        row = choose(split_rows, target, METHODS["VEE-KL"])
        prev = levels[-1].avg_exit_layer if levels[-1].avg_exit_layer is not None else num_layers
        if row is not None and row["avg_exit_layer"] < prev - 1e-9:
            levels.append(Level(row_policy(row), row["avg_exit_layer"], row["f1"]))
    return levels


def load_ladder(path: str | Path) -> list[Level]:
    """A ladder from JSON: a list (deepest first) of policy dicts, or of ``{"policy": {...}, ...}``."""
    items = json.loads(Path(path).read_text())
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: expected a non-empty JSON list of policies, deepest first")
    levels = []
    for i, it in enumerate(items):
        try:
            pol = policy_from_dict(it["policy"] if isinstance(it, dict) and "policy" in it else it)
        except ValueError as e:
            raise ConfigError(f"{path}: policy {i}: {e}") from None
        extra = it if isinstance(it, dict) and "policy" in it else {}
        levels.append(Level(pol, extra.get("avg_exit_layer"), extra.get("f1")))
    return levels


# --- the depth controller -----------------------------------------------------------------------
@dataclasses.dataclass
class DepthController:
    """Chooses the ladder level (0 = deepest) from the load, with hysteresis. Pure: no clock, no I/O.

    ``observe(queue, p95_ms, ms_per_sentence)`` is called once per dispatched batch (and on idle
    ticks). Pressure: the recent p95 latency, or the queue's expected wait ``queue x
    ms_per_sentence``, is above ``target_ms``; then the level goes one down (shallower), at most
    once every ``cooldown`` observations so that the effect of a step is seen before the next.
    Calm: both at or below ``restore_fraction x target_ms`` (a missing p95 counts as calm);
    after ``hold`` calm observations in a row the level goes one up. In between, the level stays.
    Without a target (``target_ms=None``) the level is always 0: the adaptive policy is off.
    """

    num_levels: int
    target_ms: float | None = None
    restore_fraction: float = 0.5
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

    def observe(self, queue: int, p95_ms: float | None, ms_per_sentence: float | None = None) -> int:
        """Update and return the level for the next batch."""
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
            if self.level > 0 and self._calm >= self.hold:
                self.level, self._calm, self._since_step, self.steps_up = self.level - 1, 0, 0, self.steps_up + 1
        else:
            self._calm = 0
        return self.level


# --- metrics ------------------------------------------------------------------------------------
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


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


class Metrics:
    """Counters and a latency histogram, rendered in the Prometheus text format (``render``)."""

    def __init__(self, num_layers: int):
        self._lock = threading.Lock()
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.exit_counts = [0] * (num_layers + 1)
        self.batches = 0
        self.batch_sentences = 0

    def request(self, path: str, code: int, seconds: float | None) -> None:
        with self._lock:
            self.requests[(path, code)] += 1
            if seconds is not None:
                self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
                self.latency_sum += seconds

    def batch(self, exit_layers: Sequence[int]) -> None:
        with self._lock:
            self.batches += 1
            self.batch_sentences += len(exit_layers)
            for m in exit_layers:
                self.exit_counts[m] += 1

    def render(self, state: dict[str, Any]) -> str:
        """The exposition text; ``state`` adds gauges (queue, level, policy, p95, compilations)."""
        with self._lock:
            lines = ["# HELP vee_requests_total HTTP requests by path and status code.",
                     "# TYPE vee_requests_total counter"]
            lines += [f'vee_requests_total{{path="{p}",code="{c}"}} {n}' for (p, c), n in sorted(self.requests.items())]
            lines += ["# HELP vee_request_latency_seconds Latency of answered POST /ner requests.",
                      "# TYPE vee_request_latency_seconds histogram"]
            cum = 0
            for le, n in zip(LATENCY_BUCKETS, self.latency_counts):
                cum += n
                lines.append(f'vee_request_latency_seconds_bucket{{le="{le}"}} {cum}')
            cum += self.latency_counts[-1]
            lines += [f'vee_request_latency_seconds_bucket{{le="+Inf"}} {cum}',
                      f"vee_request_latency_seconds_sum {self.latency_sum:.6f}",
                      f"vee_request_latency_seconds_count {cum}",
                      "# HELP vee_sentences_total Sentences answered, by exit layer.",
                      "# TYPE vee_sentences_total counter"]
            lines += [f'vee_sentences_total{{exit_layer="{m}"}} {n}' for m, n in enumerate(self.exit_counts) if m]
            total = sum(self.exit_counts)
            avg = sum(m * n for m, n in enumerate(self.exit_counts)) / total if total else 0.0
            lines += ["# HELP vee_avg_exit_layer Average exit layer of the sentences answered so far.",
                      "# TYPE vee_avg_exit_layer gauge", f"vee_avg_exit_layer {avg:.6f}",
                      "# HELP vee_batches_total Micro-batches run.", "# TYPE vee_batches_total counter",
                      f"vee_batches_total {self.batches}"]
        pol = state["policy"]
        labels = ",".join(f'{k}="{v}"' for k, v in pol.items())
        gauges = [("vee_queue_sentences", "Sentences waiting for a batch.", state["queue"]),
                  ("vee_policy_level", "Ladder level in force (0 = deepest).", state["level"]),
                  ("vee_latency_p95_ms", "Recent p95 latency the controller sees (-1: none).",
                   -1 if state["p95_ms"] is None else round(state["p95_ms"], 3)),
                  ("vee_target_p95_ms", "Latency target (-1: adaptive policy off).",
                   -1 if state["target_ms"] is None else state["target_ms"]),
                  ("vee_compilations", "Distinct (policy, batch shape) engine compilations.", state["compilations"])]
        for name, help_, value in gauges:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {value}"]
        lines += ["# HELP vee_policy_info The policy in force (labels); value 1.", "# TYPE vee_policy_info gauge",
                  f"vee_policy_info{{{labels},level=\"{state['level']}\"}} 1",
                  "# HELP vee_level_changes_total Controller steps.", "# TYPE vee_level_changes_total counter",
                  f'vee_level_changes_total{{direction="down"}} {state["steps_down"]}',
                  f'vee_level_changes_total{{direction="up"}} {state["steps_up"]}']
        return "\n".join(lines) + "\n"


# --- the micro-batcher --------------------------------------------------------------------------
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


class MicroBatcher:
    """A worker thread that runs queued requests in micro-batches under the controller's policy.

    ``submit`` never blocks: it raises ``Overloaded`` when ``max_queue`` sentences already wait.
    """

    def __init__(self, predictor: Predictor, ladder: Sequence[Level], controller: DepthController,
                 metrics: Metrics, *, max_wait_ms: float = 5.0, max_queue: int = 256, tick_s: float = 0.1,
                 clock=time.perf_counter):
        self.predictor, self.ladder, self.controller, self.metrics = predictor, list(ladder), controller, metrics
        self.max_rows, self.max_wait_s, self.max_queue, self.tick_s = predictor.batch_size, max_wait_ms / 1e3, max_queue, tick_s
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
                n = len(j.encoded)
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


# --- the HTTP API's types (the OpenAPI schema) ------------------------------------------------
class EntityOut(BaseModel):
    """An entity: characters ``[start, end)`` of its text."""

    start: int = Field(description="first character of the entity in the text")
    end: int = Field(description="one past its last character (text[start:end] is the entity)")
    type: str
    text: str
    score: float = Field(description="probability of the type in the table the span was decoded from")


class ResultOut(BaseModel):
    """One text's entities and the layer its sentence exited at."""

    entities: list[EntityOut]
    exit_layer: int = Field(description="1-based layer the sentence left the network at")


class NerRequest(BaseModel):
    """``POST /ner``'s body."""

    model_config = ConfigDict(extra="forbid")  # a misspelt "policy" is an error, not ignored
    texts: list[str] = Field(description="the texts (limits on their number and length: GET /health)",
                             examples=[["IL-2 gene expression requires NF-kappa B."]])
    policy: dict[str, Any] | None = Field(
        None, description="an exit policy for this request instead of the controller's, e.g. "
                          '{"strategy": "vee", "measure": "kl", "tau": 0.01, "patience": 2}')


class NerResponse(BaseModel):
    """``POST /ner``'s answer: one result per text, in order, and the policy that made them."""

    results: list[ResultOut]
    policy: dict[str, Any] = Field(description="the policy that produced these results")
    level: int | None = Field(description="its ladder level (0 = deepest); null for a request's own policy")


# --- the app ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Limits:
    """Request limits (413 past them); ``max_texts`` is also capped at the predictor's batch size."""

    max_texts: int = 32
    max_chars: int = 2000
    max_body_bytes: int = 1 << 20
    max_queue: int = 256
    max_request_policies: int = 8


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes`` (by Content-Length, or while reading it)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _send_413(self, send) -> None:
        body = json.dumps({"detail": f"request body over {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._send_413(send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._send_413(send)


def create_app(predictor: Predictor, *, ladder: Sequence[Level] | None = None, target_p95_ms: float | None = None,
               limits: Limits = Limits(), max_wait_ms: float = 5.0, controller: DepthController | None = None,
               start_worker: bool = True):
    """The FastAPI app serving ``predictor`` (see the module docstring).

    Args:
      ladder: policies from deepest to shallowest (default: ``default_ladder(predictor.policy)``).
      target_p95_ms: the latency target of the depth controller; None keeps level 0 (adaptive off).
      limits: request limits; max_wait_ms: how long a batch waits to fill.
      controller: a ready ``DepthController`` (default: one for ``ladder`` and ``target_p95_ms``).
      start_worker: start the batcher thread with the app (lifespan); tests may drive it by hand.
    The app's ``state.batcher``, ``state.metrics`` and ``state.controller`` are exposed.
    """
    import contextlib

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse

    ladder = list(ladder) if ladder else default_ladder(predictor.policy, predictor.num_layers)
    for lv in ladder:
        predictor.check(lv.policy)
    controller = controller or DepthController(len(ladder), target_p95_ms)
    metrics = Metrics(predictor.num_layers)
    batcher = MicroBatcher(predictor, ladder, controller, metrics, max_wait_ms=max_wait_ms,
                           max_queue=limits.max_queue)
    max_texts = min(limits.max_texts, predictor.batch_size)
    request_policies: set[Policy] = set()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if start_worker:
            batcher.start()
        try:
            yield
        finally:
            if start_worker:
                batcher.stop()

    app = FastAPI(title="vee_jax NER", version="1", lifespan=lifespan,
                  description="Span NER with vote early exiting (VEE-BERT); the depth adapts to the load.")
    app.state.batcher, app.state.metrics, app.state.controller = batcher, metrics, controller

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            e = next(e for e in errors if e.get("type") == "json_invalid")
            where = e.get("loc", ["body", 0])[-1]
            return JSONResponse({"detail": f"invalid JSON at character {where}: {e.get('ctx', {}).get('error', e['msg'])}"},
                                status_code=400)
        msgs = ["{}: {}".format(".".join(str(x) for x in e.get("loc", ())[1:]) or "body", e.get("msg")) for e in errors]
        return JSONResponse({"detail": "; ".join(msgs)}, status_code=422)

    def policy_of(request: NerRequest) -> Policy | None:
        if request.policy is None:
            return None
        try:
            pol = predictor.check(policy_from_dict(request.policy))
        except (ValueError, TypeError) as e:
            raise HTTPException(422, f"policy: {e}") from None
        if pol not in request_policies and pol not in {lv.policy for lv in ladder}:
            if len(request_policies) >= limits.max_request_policies:
                raise HTTPException(422, f"policy: this server already runs {len(request_policies)} request "
                                         f"policies (the limit; each compiles the engine): use one of the "
                                         f"ladder's, see GET /health")
            request_policies.add(pol)
        return pol

    @app.post("/ner", response_model=NerResponse, responses={
        400: {"description": "invalid JSON"}, 413: {"description": "too many texts, a text or the body too long"},
        422: {"description": "a field of the wrong type or an invalid policy"},
        503: {"description": "queue full: retry after the Retry-After header's seconds"}})
    async def ner(request: NerRequest):
        """Entities of each text, with character offsets, types, scores and the exit layer used."""
        t0 = time.perf_counter()
        texts = request.texts
        if not texts:
            raise HTTPException(422, "texts: give at least one text")
        if len(texts) > max_texts:
            raise HTTPException(413, f"texts: {len(texts)} texts, at most {max_texts} per request")
        for i, t in enumerate(texts):
            if len(t) > limits.max_chars:
                raise HTTPException(413, f"texts.{i}: {len(t)} characters, at most {limits.max_chars}")
        policy = policy_of(request)
        words = [split_words(t, predictor.word_rule) for t in texts]
        encoded = predictor.encode([[w for w, _, _ in ws] for ws in words])
        for i, e in enumerate(encoded):
            if e.length < e.num_words:
                raise HTTPException(413, f"texts.{i}: longer than the model's limit of {predictor.max_subwords} "
                                         f"subwords ({e.num_words - e.length} of {e.num_words} words past it)")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        job = Job(encoded, policy, batcher.clock())
        job.callback = lambda: loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))
        try:
            batcher.submit(job)
        except Overloaded as e:
            return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": str(e.retry_after_s)})
        await fut
        if isinstance(job.error, Overloaded):
            return JSONResponse({"detail": "the service is stopping"}, status_code=503, headers={"Retry-After": "1"})
        if job.error is not None:
            raise HTTPException(500, f"inference failed: {job.error}")
        preds = [to_prediction(t, ws, r) for t, ws, r in zip(texts, words, job.results)]
        batcher.latency.add(batcher.clock(), (batcher.clock() - job.arrival) * 1e3)
        metrics.request("/ner", 200, time.perf_counter() - t0)
        return {"results": [p.to_dict(with_text=False) for p in preds], "policy": policy_to_dict(job.policy_used),
                "level": job.level}

    @app.middleware("http")
    async def count(request: Request, call_next):
        response = await call_next(request)
        if not (request.url.path == "/ner" and response.status_code == 200):  # answered /ner: counted above
            metrics.request(request.url.path if request.url.path in ("/ner", "/health", "/metrics") else "other",
                            response.status_code, None)
        return response

    @app.get("/health")
    async def health():
        """Liveness and what the service runs: model, ladder, level in force, queue."""
        level, policy = batcher.current()
        return {"status": "ok", "num_layers": predictor.num_layers, "labels": predictor.labels,
                "word_rule": predictor.word_rule, "batch_size": predictor.batch_size,
                "level": level, "policy": policy_to_dict(policy), "target_p95_ms": controller.target_ms,
                "ladder": [lv.to_dict() for lv in ladder], "queue": batcher.queued,
                "compilations": predictor.compilations,
                "limits": {**dataclasses.asdict(limits), "max_texts": max_texts}}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        """Prometheus text format: requests, latency histogram, exit layers, policy in force."""
        level, policy = batcher.current()
        text = metrics.render({"queue": batcher.queued, "level": level, "policy": policy_to_dict(policy),
                               "p95_ms": batcher.latency.p95(batcher.clock()), "target_ms": controller.target_ms,
                               "compilations": predictor.compilations, "steps_down": controller.steps_down,
                               "steps_up": controller.steps_up})
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    if limits.max_body_bytes:
        app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    return app


__all__ = ["BodyLimit", "DepthController", "Job", "LatencyWindow", "Level", "Limits", "Metrics", "MicroBatcher", "Overloaded",
           "create_app", "default_ladder", "ladder_from_sweep", "load_ladder", "read_sweep_rows"]
