"""The FastAPI app: the ladder, the controller, the batcher and the metrics wired to HTTP.

``create_app(predictor, ...)`` serves:

* ``POST /ner`` ``{"texts": [...], "policy": {...}?}`` -> ``{"results": [{"entities": [...],
  "exit_layer": m}, ...], "policy": {...}, "level": i}``: the texts wait in the micro-batcher's
  queue and run under the level the controller chose when their batch was dispatched (or under
  the request's own policy); every answer names the policy that produced it.
* ``POST /ner/documents`` ``{"documents": [...], "sentences": rule?, "policy": {...}?}`` ->
  ``{"results": [{"entities": [{..., "sentence": k}], "sentences": [{"start", "end", "exit_layer",
  "words"}]}, ...], "policy": {...}, "level": i}``: documents of any length, cut into sentences
  (``vee_jax.documents``); offsets into each document. A request's sentences go to the batcher
  in jobs of at most ``batch_size`` sentences; when it takes more than one job they all run
  under the level in force when the request was admitted, so one policy answers it.
* ``GET /health``, ``GET /metrics`` (Prometheus), ``/openapi.json`` and ``/docs``.

Readiness (``warmup.WarmUp``): at start a thread compiles the ladder's programs on every batch
shape up to the model's subword limit; until then ``/health`` answers 503 ``{"status": "warming
up", "compiled": k, "of": n}`` and the two POSTs 503 with ``Retry-After``. A request's own policy
must share a program with a ladder policy (differ only in tau, patience, the budget layer), else
422: nothing compiles on the request path.

The request bodies are built per app (``schemas.request_models``): ``/openapi.json`` states the
served limits and the exact policy objects. With ``api_key``, ``POST /ner``, ``POST /ner/documents``
and ``GET /metrics`` answer 401 (``WWW-Authenticate: Bearer``) without ``Authorization: Bearer <key>``;
``/health`` (probes), ``/docs`` and ``/openapi.json`` stay open.

Nothing is dropped: a request is answered, or refused at once with 503 and ``Retry-After`` when
the queue is full. Limits (texts per request, characters per text; characters, sentences and words per documents
request; body bytes) give 413 (also when the schema's ``maxItems``/``maxLength`` refuse them);
malformed requests 400 (bad JSON) or 422 (a field of the wrong type, an unknown policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import time
from typing import Sequence

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .. import compilations as xla_compilations
from ..documents import assemble, plan_documents
from ..policies import Policy, policy_from_input
from ..sentences import RULES as SENTENCE_RULES
from ..predict import Predictor, to_prediction
from ..windows import sentence_rows
from ..words import split_words
from .batcher import ContinuousBatcher, Job, MicroBatcher, Overloaded
from .controller import DepthController
from .ladder import Level, default_ladder
from .metrics import Metrics, ServiceState
from .schemas import BodyLimit, DocumentsRequest, DocumentsResponse, ErrorOut, Limits, NerResponse, request_models
from .warmup import WarmUp, describe_program, program_text

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
NER_ERRORS = {400: {"model": ErrorOut, "description": "invalid JSON"},
              413: {"model": ErrorOut, "description": "too many texts, a text too long, more window rows than a "
                                                      "batch, or the body too long"},
              422: {"model": ErrorOut, "description": "a field of the wrong type or out of range, a missing or "
                                                      "unknown field, or a policy outside the compiled programs"},
              503: {"model": ErrorOut, "headers": _RETRY_AFTER,
                    "description": "warming up, queue full (or the service stopping): retry after Retry-After "
                                    "seconds"}}
DOCUMENTS_ERRORS = {**NER_ERRORS, 413: {"model": ErrorOut, "description": "too many characters, sentences or words "
                                                                          "in the request, or the body too long"}}
UNAUTHORIZED = {401: {"model": ErrorOut, "description": "no or wrong Authorization: Bearer <key>",
                      "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}}}
_LIMIT_ERRORS = ("too_long", "string_too_long")  # the schema's maxItems / maxLength: a limit, 413 as by hand


def _field(error: dict) -> str:
    return ".".join(str(x) for x in error.get("loc", ())[1:]) or "body"


def _limit_message(error: dict) -> str:
    """``texts: 5 texts, at most 4 per request``, ``texts.1: 401 characters, at most 400``."""
    where, most = _field(error), error.get("ctx", {}).get("max_length")
    if error["type"] == "string_too_long":
        return f"{where}: {len(error['input'])} characters, at most {most}"
    return f"{where}: {len(error['input'])} {where}, at most {most} per request"


def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON; 413 when only limits were passed; else 422; every error on one line."""
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        where = bad_json.get("loc", ["body", 0])[-1]
        why = bad_json.get("ctx", {}).get("error", bad_json["msg"])
        return JSONResponse({"detail": f"invalid JSON at character {where}: {why}"}, status_code=400)
    if all(e.get("type") in _LIMIT_ERRORS for e in errors):
        return JSONResponse({"detail": "; ".join(_limit_message(e) for e in errors)}, status_code=413)
    msgs = ["{}: {}".format(_field(e), e.get("msg")) for e in errors]
    return JSONResponse({"detail": "; ".join(msgs)}, status_code=422)


def bearer_auth(api_key: str | None) -> list:
    """The route dependencies that ask for ``Authorization: Bearer <api_key>`` (401 otherwise); [] when None.

    The key is compared in constant time (``hmac.compare_digest``); the scheme shows in /docs.
    """
    if api_key is None:
        return []
    if not api_key:
        raise ValueError("an empty API key would let anyone in: give a key, or None for no key")
    scheme = HTTPBearer(auto_error=False, description="the service's API key (serve.py --api-key-file)")
    want = api_key.encode()

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, want):
            raise HTTPException(401, "missing or wrong API key: send Authorization: Bearer <key>",
                                headers={"WWW-Authenticate": "Bearer"})

    return [Depends(check)]


class _Admission:
    """What a request may ask for: its texts within the limits, its own policy if valid and one of
    the ladder's programs (warmed up; no compilation on the request path). Raises ``HTTPException``
    (413, 422) otherwise."""

    def __init__(self, predictor: Predictor, ladder: Sequence[Level], limits: Limits):
        self.predictor, self.limits = predictor, limits
        self.max_texts = min(limits.max_texts, predictor.batch_size)
        # a request's sentences must fit in the queue at once, or it could never be admitted
        self.max_sentences = max(1, min(limits.max_sentences, limits.max_queue))
        self.programs: dict[Policy, Policy] = {}  # program -> its first ladder policy
        for lv in ladder:
            self.programs.setdefault(predictor.program(lv.policy), lv.policy)

    def encode(self, texts: list[str]):
        """The texts' words and encoded sentences."""
        if not texts:
            raise HTTPException(422, "texts: give at least one text")
        if len(texts) > self.max_texts:
            raise HTTPException(413, f"texts: {len(texts)} texts, at most {self.max_texts} per request")
        for i, t in enumerate(texts):
            if len(t) > self.limits.max_chars:
                raise HTTPException(413, f"texts.{i}: {len(t)} characters, at most {self.limits.max_chars}")
        p = self.predictor
        words = [split_words(t, p.word_rule) for t in texts]
        encoded = p.encode([[w for w, _, _ in ws] for ws in words])
        if len(encoded) > p.batch_size:  # a request is one batch; a long text is several window rows
            raise HTTPException(413, f"texts: {len(encoded)} rows ({len(encoded) - len(texts)} extra windows of texts "
                                     f"past the model's limit of {p.max_subwords} subwords), at most "
                                     f"{p.batch_size} per request: send fewer texts, or POST /ner/documents")
        return words, encoded

    def documents(self, request: DocumentsRequest):
        """The documents' sentence plan and encoded sentences, within the per-request limits."""
        docs, lim = request.documents, self.limits
        if not docs:
            raise HTTPException(422, "documents: give at least one document")
        chars = sum(len(d) for d in docs)
        if chars > lim.max_document_chars:
            raise HTTPException(413, f"documents: {chars} characters in all, at most {lim.max_document_chars} "
                                     f"per request (max_document_chars)")
        rule = request.sentences or self.predictor.sentence_rule
        if rule not in SENTENCE_RULES:
            raise HTTPException(422, f"sentences: unknown sentence rule {rule!r}; expected one of "
                                     f"{', '.join(SENTENCE_RULES)}")
        plan = plan_documents(docs, rule, self.predictor.word_rule)
        if len(plan) > self.max_sentences:
            raise HTTPException(413, f"documents: {len(plan)} sentences in all, at most {self.max_sentences} "
                                     f"per request (max_sentences)")
        words = sum(len(sp.words) for sp in plan)
        if words > lim.max_words:
            raise HTTPException(413, f"documents: {words} words in all, at most {lim.max_words} per request "
                                     f"(max_words)")
        encoded = self.predictor.encode([[w for w, _, _ in sp.words] for sp in plan],
                                        [sp.doc for sp in plan]) if plan else []
        return plan, encoded

    def policy(self, request) -> Policy | None:
        """The request's own policy (the schema checked its shape; ``policy_from_input`` builds it); None:
        the controller's."""
        if request.policy is None:
            return None
        try:
            pol = self.predictor.check(policy_from_input(request.policy.model_dump(exclude_unset=True)))
        except (ValueError, TypeError) as e:
            raise HTTPException(422, f"policy: {e}") from None
        if self.predictor.program(pol) not in self.programs:
            raise HTTPException(422, f"policy: {program_text(pol)} is not one of this server's compiled programs, "
                                     f"{'; '.join(program_text(p) for p in self.programs.values())}: a request's "
                                     f"policy may change only their tau, patience or budget layer (GET /health, "
                                     f"'programs')")
        return pol


def _jobs(encoded: Sequence, rows: int) -> list[list]:
    """Encoded rows in jobs of at most ``rows``, never cutting a sentence's windows apart (its rows
    from one at word offset 0 to the next); a sentence of more windows than ``rows`` is a 413."""
    jobs: list[list] = []
    for group in sentence_rows([e.offset for e in encoded]):
        if len(group) > rows:
            raise HTTPException(413, f"documents: a sentence of {encoded[group[0]].num_words} words runs as "
                                     f"{len(group)} windows, more than a batch of {rows} rows")
        if not jobs or len(jobs[-1]) + len(group) > rows:
            jobs.append([])
        jobs[-1].extend(encoded[r] for r in group)
    return jobs


SCHEDULERS = {"continuous": ContinuousBatcher, "micro": MicroBatcher}


async def _answer(batcher: MicroBatcher, *jobs: Job) -> None:
    """Queue ``jobs`` (all or none: ``submit_all``) and wait, without blocking the event loop,
    until the worker has run them all."""
    loop = asyncio.get_running_loop()
    futs = []
    for job in jobs:
        fut = loop.create_future()
        job.callback = lambda fut=fut: loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))
        futs.append(fut)
    batcher.submit_all(jobs)
    await asyncio.gather(*futs)


def create_app(predictor: Predictor, *, ladder: Sequence[Level] | None = None, target_p95_ms: float | None = None,
               limits: Limits = Limits(), max_wait_ms: float = 5.0, controller: DepthController | None = None,
               start_worker: bool = True, warmup_subwords: int | None = None, api_key: str | None = None,
               scheduler: str = "continuous"):
    """The FastAPI app serving ``predictor`` (see the module docstring).

    Args:
      ladder: policies from deepest to shallowest (default: ``default_ladder(predictor.policy)``).
      target_p95_ms: the latency target of the depth controller; None keeps level 0 (adaptive off).
      limits: request limits; max_wait_ms: how long a batch waits to fill.
      controller: a ready ``DepthController`` (default: one for ``ladder`` and ``target_p95_ms``).
      start_worker: start the batcher thread with the app (lifespan); tests may drive it by hand.
      warmup_subwords: compile the ladder's programs on every batch shape up to this many
        subwords before answering (``warmup.WarmUp``; None: the model's limit; 0: off, ready at once).
      api_key: when given, POST /ner, POST /ner/documents and GET /metrics need ``Authorization: Bearer
        <api_key>`` (401 otherwise); /health, /docs and /openapi.json stay open.
      scheduler: ``"continuous"`` (``batcher.ContinuousBatcher``: sentences join the running
        continuous batch between layer calls) or ``"micro"`` (``batcher.MicroBatcher``: whole
        micro-batches through ``vee_infer``, each waiting for its slowest sentence).
    The app's ``state.batcher``, ``state.metrics``, ``state.controller`` and ``state.warmup`` are exposed.
    """
    ladder = list(ladder) if ladder else default_ladder(predictor.policy, predictor.num_layers)
    for lv in ladder:
        predictor.check(lv.policy)
    controller = controller or DepthController(len(ladder), target_p95_ms)
    metrics = Metrics(predictor.num_layers)
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    batcher = SCHEDULERS[scheduler](predictor, ladder, controller, metrics, max_wait_ms=max_wait_ms,
                                    max_queue=limits.max_queue)
    admission = _Admission(predictor, ladder, limits)
    more = batcher.warm_up_steps(warmup_subwords) if warmup_subwords != 0 else ()
    warmup = WarmUp(predictor, [lv.policy for lv in ladder], warmup_subwords, more=more)
    NerRequestIn, DocumentsRequestIn = request_models(limits, predictor.num_layers, admission.max_texts,
                                                      programs=[lv.policy for lv in ladder])
    auth = bearer_auth(api_key)
    guarded = UNAUTHORIZED if auth else {}

    def state() -> ServiceState:
        level, policy = batcher.current()
        return ServiceState(batcher.queued, level, policy.to_dict(), batcher.latency.p95(batcher.clock()),
                            controller.target_ms, predictor.compilations, controller.steps_down, controller.steps_up,
                            xla_compilations.cache_hits(), warmup.ready)

    metrics.watch(state)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        warmup.start()
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
    app.state.warmup = warmup
    app.add_exception_handler(RequestValidationError, _invalid_request)

    async def ner(request: NerRequestIn):
        """Entities of each text, with character offsets, types, scores and the exit layer used."""
        if (warming := warmup.refusal()) is not None:
            return warming
        t0 = time.perf_counter()
        words, encoded = admission.encode(request.texts)
        policy = admission.policy(request)
        job = Job(encoded, policy, batcher.clock())
        try:
            await _answer(batcher, job)
        except Overloaded as e:
            return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": str(e.retry_after_s)})
        if isinstance(job.error, Overloaded):
            return JSONResponse({"detail": "the service is stopping"}, status_code=503, headers={"Retry-After": "1"})
        if job.error is not None:
            raise HTTPException(500, f"inference failed: {job.error}")
        preds = [to_prediction(t, ws, r) for t, ws, r in zip(request.texts, words, job.results)]
        batcher.latency.add(batcher.clock(), (batcher.clock() - job.arrival) * 1e3)
        metrics.request("/ner", 200, time.perf_counter() - t0)
        return {"results": [p.to_dict(with_text=False) for p in preds], "policy": job.policy_used.to_dict(),
                "level": job.level}

    async def ner_documents(request: DocumentsRequestIn):
        """Entities of documents of any length: offsets into each document, each one's sentence and
        score, and every sentence's span and exit layer."""
        if (warming := warmup.refusal()) is not None:
            return warming
        plan, encoded = admission.documents(request)
        policy, level = admission.policy(request), None
        rows = batcher.max_rows
        if policy is None and len(encoded) > rows:  # several jobs: all under the level in force now
            level, policy = batcher.current()
        jobs = [Job(part, policy, batcher.clock()) for part in _jobs(encoded, rows)]
        try:
            await _answer(batcher, *jobs)  # a document is admitted whole, or refused whole
        except Overloaded as e:
            return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": str(e.retry_after_s)})
        if any(isinstance(j.error, Overloaded) for j in jobs):
            return JSONResponse({"detail": "the service is stopping"}, status_code=503, headers={"Retry-After": "1"})
        failed = next((j.error for j in jobs if j.error is not None), None)
        if failed is not None:
            raise HTTPException(500, f"inference failed: {failed}")
        if jobs:
            used, level = (jobs[0].policy_used, jobs[0].level) if level is None else (policy, level)
        else:  # no sentence in any document: nothing ran
            level, used = batcher.current() if policy is None else (None, policy)
        docs = assemble(request.documents, plan, [r for j in jobs for r in j.results])
        metrics.request("/ner/documents", 200, None)  # not in /ner's latency histogram
        return {"results": [d.to_dict(with_text=False) for d in docs], "policy": used.to_dict(), "level": level}

    # The bodies' models are this app's (its limits): annotate the endpoints with them, then route.
    ner.__annotations__["request"], ner_documents.__annotations__["request"] = NerRequestIn, DocumentsRequestIn
    app.post("/ner", response_model=NerResponse, responses={**NER_ERRORS, **guarded}, dependencies=auth)(ner)
    app.post("/ner/documents", response_model=DocumentsResponse, responses={**DOCUMENTS_ERRORS, **guarded},
             dependencies=auth)(ner_documents)

    @app.middleware("http")
    async def count(request: Request, call_next):
        response = await call_next(request)
        answered = request.url.path in ("/ner", "/ner/documents") and response.status_code == 200
        if not answered:  # answered: counted above
            metrics.request(request.url.path if request.url.path in ("/ner", "/ner/documents", "/health", "/metrics")
                            else "other",
                            response.status_code, None)
        return response

    @app.get("/health")
    async def health():
        """Readiness (503 while warming up) and what the service runs: model, ladder, level in force, queue."""
        if not warmup.ready:
            return warmup.health()
        level, policy = batcher.current()
        return {"status": "ok", "num_layers": predictor.num_layers, "labels": predictor.labels,
                "word_rule": predictor.word_rule, "sentence_rule": predictor.sentence_rule,
                "batch_size": predictor.batch_size,
                "level": level, "policy": policy.to_dict(), "target_p95_ms": controller.target_ms,
                "ladder": [lv.to_dict() for lv in ladder], "queue": batcher.queued,
                "programs": [describe_program(p) for p in admission.programs.values()],
                "compilations": predictor.compilations, "compilation_cache_hits": xla_compilations.cache_hits(),
                "scheduler": scheduler,
                "warm_up": {"max_subwords": warmup.max_subwords, "programs_x_shapes": warmup.programs * warmup.shapes,
                            "continuous_batch_shapes": len(warmup.more),
                            "seconds": None if warmup.seconds is None else round(warmup.seconds, 1),
                            "compilations": warmup.compilations, "cache_hits": warmup.cache_hits},
                "limits": {**dataclasses.asdict(limits), "max_texts": admission.max_texts,
                           "max_sentences": admission.max_sentences}}

    @app.get("/metrics", response_class=Response, dependencies=auth, responses={
        **guarded, 200: {"content": {"text/plain": {"schema": {"type": "string"}},
                                     "application/openmetrics-text": {"schema": {"type": "string"}}},
                         "description": "Prometheus text format, or OpenMetrics when the Accept header asks"}})
    async def prometheus(request: Request):
        """Prometheus text format (OpenMetrics on request): requests, latency, exit layers, policy in force."""
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    if limits.max_body_bytes:
        app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    return app


__all__ = ["create_app"]
