"""The HTTP API's types (its OpenAPI schema) and limits: what a request may be, what an answer is.

``request_models(limits, num_layers)`` builds ``POST /ner``'s and ``POST /ner/documents``'s bodies
(``NerRequest``, ``DocumentsRequest``) for one app, so that its ``/openapi.json`` states the limits
it serves (texts per request, characters per text) and the model's layers (a budget policy's
largest layer); ``NerRequest`` and ``DocumentsRequest`` here are those of the default ``Limits``.
A request's ``policy`` is one of ``policy_models``: a discriminated union on ``strategy``, one
model per registered policy (``policies.POLICIES``), its fields, types, defaults and ranges, no
other field. The schema checks shape and ranges; ``policies.policy_from_input`` still builds the
policy. ``NerResponse`` / ``DocumentsResponse`` are the answers, ``ErrorOut`` every error's body;
``Limits`` holds the request limits (413 past them); ``BodyLimit`` is the ASGI middleware that
refuses a body over ``max_body_bytes`` before it is read whole.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any, Literal, Sequence, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, create_model

from ..measures import MEASURES
from ..policies import POLICIES
from ..sentences import RULES as SENTENCE_RULES


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
    windows: int = Field(1, description="overlapping windows the text ran as (1 unless longer than the "
                                        "model's subword limit; their tables are merged, no word is dropped)")


class NerResponse(BaseModel):
    """``POST /ner``'s answer: one result per text, in order, and the policy that made them."""

    results: list[ResultOut]
    policy: dict[str, Any] = Field(description="the policy that produced these results")
    level: int | None = Field(description="its ladder level (0 = deepest); null for a request's own policy")


class DocumentEntityOut(EntityOut):
    """An entity of a document: characters ``[start, end)`` of the DOCUMENT and its sentence."""

    sentence: int = Field(description="index of its sentence in the document's sentences")


class SentenceOut(BaseModel):
    """A sentence of a document: its characters, exit layer and words."""

    start: int = Field(description="first character of the sentence in the document")
    end: int = Field(description="one past its last character (document[start:end] is the sentence)")
    exit_layer: int = Field(description="1-based layer the sentence left the network at")
    words: int = Field(description="its words (by the service's word rule)")
    windows: int = Field(1, description="overlapping windows the sentence ran as (1 unless longer than the "
                                        "model's subword limit; their tables are merged, no word is dropped)")


class DocumentOut(BaseModel):
    """One document's entities (document offsets) and its sentences in text order."""

    entities: list[DocumentEntityOut]
    sentences: list[SentenceOut]


class DocumentsResponse(BaseModel):
    """``POST /ner/documents``'s answer: one result per document, in order, and the policy that made them."""

    results: list[DocumentOut]
    policy: dict[str, Any] = Field(description="the policy that produced these results")
    level: int | None = Field(description="its ladder level (0 = deepest); null for a request's own policy")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Request limits (413 past them); ``max_texts`` is also capped at the predictor's batch size.

    ``POST /ner``: ``max_texts`` texts of at most ``max_chars`` characters. ``POST /ner/documents``,
    per request (all its documents together): ``max_document_chars`` characters,
    ``max_sentences`` sentences (also capped at ``max_queue``: a request must fit in the queue) and
    ``max_words`` words. Both: ``max_body_bytes``.
    """

    max_texts: int = 32
    max_chars: int = 2000
    max_body_bytes: int = 1 << 20
    max_queue: int = 256
    max_document_chars: int = 100_000
    max_sentences: int = 256
    max_words: int = 8192


class ErrorOut(BaseModel):
    """Every error's body: one line saying what to change."""

    detail: str


# --- the requests: built per app, from its limits and its model ----------------------------------
_INT32_MAX = 2**31 - 1
# JSON Schema's "integer" includes 2.0 (and policy_from_input takes it): strict, but a whole float is an int
_WholeInt = Annotated[int, BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)]
_FIELD_TYPES = {"float": float, "int": int, "bool": bool, "str": str}

# Ranges of the built-in policies' fields (the classes check some of them too; the schema states them).
_FIELD_RULES: dict[tuple[str, str], dict[str, Any]] = {
    ("vee", "measure"): dict(annotation=Literal[tuple(MEASURES)], description="the distance D of Sec. 4.1"),
    ("vee", "tau"): dict(ge=0, description="D(T_i, T_m) <= tau is a vote for exiting at m"),
    ("vee", "patience"): dict(ge=1, description="exit at layer m when at least this many earlier layers vote"),
    ("entropy", "tau"): dict(ge=0, description="exit at the first layer whose normalised entropy is below tau"),
    ("maxprob", "tau"): dict(ge=0, le=1, description="exit at the first layer whose mean max probability is "
                                                    "above tau"),
    ("budget", "layer"): dict(ge=1, description="every sentence exits at this 1-based layer"),
}


def _served(programs: Sequence[Any]) -> dict[str, dict[str, tuple]]:
    """Per strategy, each static field's values among ``programs`` (policies; their KNOBS stay free)."""
    out: dict[str, dict[str, tuple]] = {}
    for p in programs:
        fields = out.setdefault(p.name, {})
        for f in dataclasses.fields(p):
            if f.name not in p.KNOBS:
                value = getattr(p, f.name)
                fields[f.name] = fields.get(f.name, ()) + ((value,) if value not in fields.get(f.name, ()) else ())
    return out


def policy_models(num_layers: int | None = None, programs: Sequence[Any] | None = None) -> dict[str, type[BaseModel]]:
    """One strict pydantic model per registered policy: ``strategy`` (its name, required), its dataclass
    fields with their types and defaults, the ranges above, no other field. ``num_layers``: the
    model's exits, a budget layer's maximum (None: no maximum in the schema; the predictor still
    refuses a layer past M with 422). ``programs``: the policies a server compiled; then only their
    strategies, and their static fields (measure, ensemble) only at their values: the schema
    admits what runs without compiling (the knobs, tau, patience, a budget's layer, stay free)."""
    served = None if programs is None else _served(programs)
    models = {}
    for name, cls in POLICIES.items():
        if served is not None and name not in served:
            continue
        fields: dict[str, Any] = {"strategy": (Literal[name], ...)}
        for f in dataclasses.fields(cls):
            rule = dict(_FIELD_RULES.get((name, f.name), {}))
            kind = rule.pop("annotation", _FIELD_TYPES.get(str(f.type), Any))
            default = f.default
            if served is not None and f.name in served[name]:
                values = served[name][f.name]
                kind, default = Literal[values], values[0]
                rule["description"] = f"{rule.get('description', f.name)} (this server's compiled programs)"
            if (name, f.name) == ("budget", "layer") and num_layers is not None:
                rule.update(le=num_layers, description=f"{rule['description']} (at most the model's {num_layers})")
            if (name, f.name) == ("vee", "patience") and num_layers is not None:  # M or more: never exits early
                rule.update(le=num_layers, description=f"{rule['description']} (at most the model's {num_layers})")
            if kind is int:
                rule.setdefault("le", _INT32_MAX)  # the engines take int knobs as int32
                kind = _WholeInt
            if f.name == "ensemble":
                rule.setdefault("description", "decode the mean of the tables up to the exit layer")
            if kind is float:
                rule["allow_inf_nan"] = False
            fields[f.name] = (kind, Field(default, **rule))
        doc = (cls.__doc__ or name).strip().splitlines()[0]
        models[name] = create_model(f"{cls.__name__}In", __config__=ConfigDict(extra="forbid", strict=True),
                                    __doc__=f'``"strategy": "{name}"``: {doc}', **fields)
    return models


def request_models(limits: "Limits", num_layers: int | None = None, max_texts: int | None = None,
                   programs: Sequence[Any] | None = None) -> tuple[type[BaseModel], type[BaseModel]]:
    """``(NerRequest, DocumentsRequest)`` for an app serving ``limits`` and a model of ``num_layers`` exits.

    The schema states: texts 1..``max_texts`` (default ``limits.max_texts``; the app passes it capped at
    the batch size), each at most ``max_chars`` characters; documents at least one, each at most
    ``max_document_chars`` characters (the per-request totals are not expressible: 413 past them);
    ``sentences`` one of the sentence rules; ``policy`` one of ``policy_models(num_layers, programs)``.
    """
    max_texts = limits.max_texts if max_texts is None else max_texts
    models = tuple(policy_models(num_layers, programs).values())
    policy_type = Annotated[Union[models], Field(discriminator="strategy")] if len(models) > 1 else models[0]
    policy = (policy_type | None, Field(None, description=(
        "an exit policy for this request instead of the controller's, e.g. "
        '{"strategy": "vee", "measure": "kl", "tau": 0.01, "patience": 2}; fields left out take their '
        "defaults. Only the programs this server compiled (GET /health, 'programs'): their tau, "
        "patience or budget layer may change, nothing that would compile the engine")))
    config = ConfigDict(extra="forbid", strict=True)  # a misspelt "policy" is an error, not ignored
    text = Annotated[str, StringConstraints(max_length=limits.max_chars)]
    ner = create_model(
        "NerRequest", __config__=config, __doc__="``POST /ner``'s body.",
        texts=(list[text], Field(min_length=1, max_length=max_texts, examples=[["IL-2 gene expression requires "
                                                                                 "NF-kappa B."]],
                                 description=f"1 to {max_texts} texts of at most {limits.max_chars} characters "
                                             "(413 past either limit, or when the texts' windows need more rows "
                                             "than a batch)")),
        policy=policy)
    document = Annotated[str, StringConstraints(max_length=limits.max_document_chars)]
    docs = create_model(
        "DocumentsRequest", __config__=config, __doc__="``POST /ner/documents``'s body.",
        documents=(list[document], Field(
            min_length=1, examples=[["IL-2 gene expression requires NF-kappa B. It acts in T cells."]],
            description=f"the documents, any length within the per-request limits (413 past them): "
                        f"{limits.max_document_chars} characters, {limits.max_sentences} sentences (at most "
                        f"the queue, {limits.max_queue}), {limits.max_words} words, all documents together")),
        sentences=(Literal[tuple(SENTENCE_RULES)] | None, Field(
            None, description="how documents are cut into sentences (default: the rule of the model's data "
                              "format, GET /health)")),
        policy=(policy[0], Field(None, description="an exit policy for this request instead of the "
                                                   "controller's (as in POST /ner)")))
    return ner, docs


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


NerRequest, DocumentsRequest = request_models(Limits())


__all__ = ["BodyLimit", "DocumentEntityOut", "DocumentOut", "DocumentsRequest", "DocumentsResponse", "EntityOut",
           "ErrorOut", "Limits", "NerRequest", "NerResponse", "ResultOut", "SentenceOut", "policy_models",
           "request_models"]
