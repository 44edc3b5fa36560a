"""The HTTP API's types (its OpenAPI schema) and limits: what a request may be, what an answer is.

``NerRequest`` / ``NerResponse`` (pydantic) are ``POST /ner``'s body and answer, ``DocumentsRequest`` /
``DocumentsResponse`` those of ``POST /ner/documents``; ``Limits`` holds
the request limits (413 past them); ``BodyLimit`` is the ASGI middleware that refuses a body over
``max_body_bytes`` before it is read whole.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class DocumentsRequest(BaseModel):
    """``POST /ner/documents``'s body."""

    model_config = ConfigDict(extra="forbid")
    documents: list[str] = Field(description="the documents, any length within the limits (GET /health)",
                                 examples=[["IL-2 gene expression requires NF-kappa B. It acts in T cells."]])
    sentences: str | None = Field(
        None, description="how documents are cut into sentences: pysbd, lines, lines+pysbd, zh or none "
                          "(default: the rule of the model's data format, GET /health)")
    policy: dict[str, Any] | None = Field(
        None, description="an exit policy for this request instead of the controller's (as in POST /ner)")


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


__all__ = ["BodyLimit", "DocumentEntityOut", "DocumentOut", "DocumentsRequest", "DocumentsResponse", "EntityOut",
           "Limits", "NerRequest", "NerResponse", "ResultOut", "SentenceOut"]
