"""Readiness: every program the service runs is compiled on every batch shape before it answers.

``WarmUp`` compiles, in a thread started with the app, the ladder's programs (a policy's static
part, ``Predictor.program``) on every batch shape up to ``max_subwords`` (``Predictor.shapes``:
each rows bucket up to the batch size, each subword bucket up to the model's limit; windows of
longer sentences are rows of the largest). Until it is done ``GET /health`` answers 503
``{"status": "warming up", "compiled": k, "of": n}`` and ``POST /ner``, ``POST /ner/documents``
503 with ``Retry-After``. ``max_subwords=0`` turns it off: ready at once, programs compile on
first use.

A request's own policy runs only on a program the ladder has (``describe_program``): it may
differ from a ladder policy in traced knobs (tau, patience, the budget layer), not in its kind,
measure or ensemble flag, which would compile on the request path (422 otherwise).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable, Sequence

from fastapi.responses import JSONResponse

from .. import compilations as xla_compilations
from ..policies import Policy
from ..predict import Predictor

log = logging.getLogger("vee_jax")


def describe_program(policy: Policy) -> dict[str, Any]:
    """A program as ``GET /health`` lists it: the policy's static fields and the knobs left free,
    e.g. ``{"strategy": "vee", "measure": "kl", "ensemble": False, "any": ["tau", "patience"]}``."""
    d = {k: v for k, v in Predictor.program(policy).to_dict().items() if k not in policy.KNOBS}
    return {**d, "any": list(policy.KNOBS)}


def program_text(policy: Policy) -> str:
    """``describe_program`` on one line: ``vee (measure kl, ensemble false; any tau, patience)``."""
    d = describe_program(policy)
    fields = ", ".join(f"{k} {str(v).lower()}" for k, v in d.items() if k not in ("strategy", "any"))
    free = f"; any {', '.join(d['any'])}" if d["any"] else ""
    return f"{d['strategy']} ({fields}{free})"


class WarmUp:
    """The warm-up of ``policies``' programs up to ``max_subwords`` (None: the model's limit; 0: off),
    then of ``more`` (callables, one per program and shape: the continuous batches' layer calls)."""

    def __init__(self, predictor: Predictor, policies: Sequence[Policy], max_subwords: int | None = None,
                 more: Sequence[Callable[[], Any]] = ()):
        self.predictor, self.policies, self.more = predictor, list(policies), list(more)
        self.max_subwords = predictor.max_subwords if max_subwords is None else max_subwords
        self.done, self.total = 0, 0  # (program, shape) pairs compiled, and to compile
        self.programs = self.shapes = 0
        self.error: BaseException | None = None
        self.seconds: float | None = None  # how long it took, once ready
        self.compilations = self.cache_hits = 0  # XLA compilations it made, programs it read from the cache
        self._ready = threading.Event()
        self._t0: float | None = None
        self._thread: threading.Thread | None = None
        if self.max_subwords <= 0:
            self.seconds = 0.0
            self._ready.set()
        else:
            self.programs = len({predictor.program(p) for p in self.policies})
            self.shapes = len(predictor.shapes(self.max_subwords))
            self.total = self.programs * self.shapes + len(self.more)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self) -> None:
        """Start compiling in a thread (once; nothing to do when off or already started)."""
        if self.ready or self._thread is not None:
            return
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="vee-warmup", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ready (or ``timeout`` seconds); whether it is."""
        return self._ready.wait(timeout)

    def _step(self, done: int, total: int) -> None:
        self.done = done

    def _run(self) -> None:
        before, hits = self.predictor.compilations, xla_compilations.cache_hits()
        try:
            self.predictor.warm_up(self.policies, max_subwords=self.max_subwords, on_step=self._step)
            for step in self.more:  # the continuous batches' layer calls (``ContinuousBatcher.warm_up_steps``)
                step()
                self.done += 1
        except Exception as e:  # reported by /health; the service stays unready
            log.exception("warm-up failed")
            self.error = e
            return
        self.seconds = time.perf_counter() - self._t0
        self.compilations = self.predictor.compilations - before
        self.cache_hits = xla_compilations.cache_hits() - hits
        log.info("warm-up: %d programs x %d batch shapes (up to %d subwords) and %d continuous-batch shapes in %.1f s "
                 "(%d XLA compilations, %d read from the persistent cache); ready", self.programs, self.shapes,
                 self.max_subwords, len(self.more), self.seconds, self.compilations, self.cache_hits)
        self._ready.set()

    # --- what HTTP answers -----------------------------------------------------------------
    def retry_after_s(self) -> int:
        """Seconds until ready, estimated from the pace so far (at least 1)."""
        if not self.done or self._t0 is None:
            return 5
        per = (time.perf_counter() - self._t0) / self.done
        return max(1, math.ceil(per * (self.total - self.done)))

    def status(self) -> dict[str, Any]:
        """``GET /health``'s body while not ready."""
        if self.error is not None:
            return {"status": "warm-up failed", "detail": f"{type(self.error).__name__}: {self.error}"}
        return {"status": "warming up", "compiled": self.done, "of": self.total}

    def health(self) -> JSONResponse:
        """503 with ``status()`` (and ``Retry-After`` while warming)."""
        headers = {} if self.error is not None else {"Retry-After": str(self.retry_after_s())}
        return JSONResponse(self.status(), status_code=503, headers=headers)

    def refusal(self) -> JSONResponse | None:
        """None when ready; else the 503 a request gets (with ``Retry-After``)."""
        if self.ready:
            return None
        if self.error is not None:
            return JSONResponse({"detail": f"warm-up failed: {self.error}"}, status_code=503,
                                headers={"Retry-After": "60"})
        return JSONResponse({"detail": f"warming up: {self.done} of {self.total} programs compiled"},
                            status_code=503, headers={"Retry-After": str(self.retry_after_s())})


__all__ = ["WarmUp", "describe_program", "program_text"]
