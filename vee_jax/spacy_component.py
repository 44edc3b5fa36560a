"""A spaCy pipeline component: ``nlp.add_pipe("vee_ner", config={"workdir": "runs/genia"})``.

The factory ``vee_ner`` is registered with spaCy by an entry point (pyproject.toml,
``[project.entry-points.spacy_factories]``), so ``add_pipe`` works without importing vee_jax;
``pip install vee_jax[spacy]`` installs spaCy. docs/spacy.md is the manual.

Each ``Doc``'s text goes through ``Predictor.predict_documents`` (``vee_jax.documents``: the
text is cut into sentences by the workdir's rule and into words by its word rule, the model's
own tokenisation; spaCy's tokens are not used), and ``nlp.pipe`` batches the sentences of many
docs together through the engine. The result:

* ``doc.spans[spans_key]`` (``"vee"``): every entity, nested ones included, as a ``SpanGroup``
  whose ``attrs`` hold per-span lists ``scores``, ``exit_layers`` (the exit layer of the span's
  sentence), ``sentences`` (its sentence index) and ``char_spans`` (the model's
  ``(start, end)`` characters), and document-level ``sentence_spans`` (``[(start, end,
  exit_layer)]``) and ``unaligned`` (entities that could not be placed on tokens).
* ``doc.ents`` (``set_ents``, default true): a flat projection, highest score first, a span kept
  when it overlaps no kept span (ties: the longer, then the earlier). It replaces ``doc.ents``.

Alignment: the model's character offsets are mapped to spaCy tokens with
``doc.char_span(start, end, label, alignment_mode)`` (``"expand"`` by default: the span grows to
the tokens that the characters touch, so ``IL-2`` inside spaCy's token ``IL-2-dependent`` becomes
that whole token; ``"strict"`` drops any entity whose ends are not token ends; ``"contract"``
shrinks). An entity that yields no span is never dropped silently: it is counted in
``attrs["unaligned"]`` and in ``component.unaligned``, and logged at WARNING.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from spacy.language import Language
from spacy.tokens import Doc, Span, SpanGroup
from spacy.util import minibatch

log = logging.getLogger("vee_jax")

ALIGNMENT_MODES = ("strict", "contract", "expand")
DEFAULT_CONFIG = {"policy": None, "spans_key": "vee", "set_ents": True, "sentences": "auto",
                  "alignment_mode": "expand", "checkpoint": "best", "batch_size": 32,
                  "weights": "float32"}

# A predictor is rebuilt when one of these changes (from_disk / from_bytes).
RELOAD_KEYS = ("workdir", "checkpoint", "policy", "sentences", "batch_size", "weights")


@Language.factory("vee_ner", default_config={"workdir": None, **DEFAULT_CONFIG})
def make_vee_ner(nlp: Language, name: str, workdir: Optional[str], policy: Optional[dict], spans_key: str,
                 set_ents: bool, sentences: str, alignment_mode: str, checkpoint: str, batch_size: int,
                 weights: str) -> "VeeNer":
    """The ``vee_ner`` factory (see the module docstring for the config)."""
    return VeeNer(nlp.vocab, name, workdir=workdir, policy=policy, spans_key=spans_key, set_ents=set_ents,
                  sentences=sentences, alignment_mode=alignment_mode, checkpoint=checkpoint, batch_size=batch_size,
                  weights=weights)


def flat_projection(spans: Iterable[Span], scores: Iterable[float]) -> list[Span]:
    """Non-overlapping spans for ``doc.ents``: highest score first (ties: longer, then earlier), each kept
    when it shares no token with a kept one; returned in text order (``spacy.util.filter_spans`` by score)."""
    ranked = sorted(zip(spans, scores), key=lambda x: (-x[1], -(x[0].end - x[0].start), x[0].start))
    taken: set[int] = set()
    kept = []
    for span, _ in ranked:
        if not taken.intersection(range(span.start, span.end)):
            kept.append(span)
            taken.update(range(span.start, span.end))
    return sorted(kept, key=lambda s: s.start)


class VeeNer:
    """The pipeline component (``make_vee_ner``). The model is loaded on first use (``predictor``).

    Args:
      workdir: a train.py workdir; policy: an exit policy dict (None: VEE's defaults);
      spans_key: the ``doc.spans`` key; set_ents: write the flat projection to ``doc.ents``;
      sentences: the sentence rule (``auto``: the workdir's data format's; docs/sentences.md);
      alignment_mode: ``doc.char_span``'s; checkpoint: ``best`` or ``latest``;
      batch_size: sentences per engine call; weights: ``float32`` or ``int8`` (``Predictor``).
    """

    def __init__(self, vocab, name: str = "vee_ner", *, workdir: str | Path | None, predictor=None, **config):
        self.vocab, self.name = vocab, name
        self.cfg: dict[str, Any] = {**DEFAULT_CONFIG, **config, "workdir": None if workdir is None else str(workdir)}
        self._check()
        self._predictor = predictor  # a ready Predictor (tests); else loaded from the workdir on first use
        self.unaligned = 0

    def _check(self) -> None:
        if self.cfg["alignment_mode"] not in ALIGNMENT_MODES:
            raise ValueError(f"vee_ner: alignment_mode must be one of {', '.join(ALIGNMENT_MODES)}, "
                             f"got {self.cfg['alignment_mode']!r}")
        from .sentences import RULES

        if self.cfg["sentences"] != "auto" and self.cfg["sentences"] not in RULES:
            raise ValueError(f"vee_ner: sentences must be auto or one of {', '.join(RULES)}, "
                             f"got {self.cfg['sentences']!r}")

    @property
    def predictor(self):
        """The ``Predictor`` of ``workdir`` (loaded once)."""
        if self._predictor is None:
            if not self.cfg["workdir"]:
                raise ValueError('vee_ner needs a workdir: nlp.add_pipe("vee_ner", config={"workdir": "runs/genia"})')
            from .predict import Predictor

            p = Predictor.from_workdir(self.cfg["workdir"], self.cfg["policy"], checkpoint=self.cfg["checkpoint"],
                                       batch_size=self.cfg["batch_size"], weights=self.cfg["weights"])
            rule = self.cfg["sentences"]
            if rule != "auto":  # auto: the workdir's data format's rule, set by from_workdir
                p.sentence_rule = rule
            self._predictor = p
        return self._predictor

    # --- running ---------------------------------------------------------------------------
    def __call__(self, doc: Doc) -> Doc:
        return next(self.pipe([doc]))

    def pipe(self, stream: Iterable[Doc], batch_size: int = 128) -> Iterator[Doc]:
        """Docs in batches of ``batch_size``: the sentences of a batch's docs share engine calls."""
        for docs in minibatch(stream, size=batch_size):
            preds = self.predictor.predict_documents([d.text for d in docs])
            for doc, pred in zip(docs, preds):
                self.set_annotations(doc, pred)
                yield doc

    def set_annotations(self, doc: Doc, pred) -> None:
        """``doc.spans[spans_key]`` and (``set_ents``) ``doc.ents`` from a ``documents.DocumentPrediction``."""
        spans, scores, exits, sents, chars, missed = [], [], [], [], [], []
        for e in pred.entities:
            span = doc.char_span(e.start, e.end, label=e.type, alignment_mode=self.cfg["alignment_mode"])
            if span is None:
                missed.append(e)
                continue
            spans.append(span)
            scores.append(e.score)
            exits.append(pred.sentences[e.sentence].exit_layer)
            sents.append(e.sentence)
            chars.append((e.start, e.end))
        if missed:
            self.unaligned += len(missed)
            log.warning("vee_ner: %d entities do not align to spaCy tokens (alignment_mode %r), left out of "
                        "doc.spans and doc.ents: %s", len(missed), self.cfg["alignment_mode"],
                        ", ".join(f"{e.text!r} [{e.start}:{e.end}]" for e in missed[:5]))
        attrs = {"scores": scores, "exit_layers": exits, "sentences": sents, "char_spans": chars,
                 "sentence_spans": [(s.start, s.end, s.exit_layer) for s in pred.sentences], "unaligned": len(missed)}
        doc.spans[self.cfg["spans_key"]] = SpanGroup(doc, name=self.cfg["spans_key"], attrs=attrs, spans=spans)
        if self.cfg["set_ents"]:
            doc.ents = flat_projection(spans, scores)

    # --- serialisation: the workdir reference and the policy, not the weights -----------------
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = dict(self.cfg)
        if cfg["workdir"]:
            cfg["workdir"] = str(Path(cfg["workdir"]).expanduser().resolve())
        (path / "cfg.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> "VeeNer":
        cfg = {**DEFAULT_CONFIG, **json.loads((Path(path) / "cfg.json").read_text())}
        reload = any(cfg.get(k) != self.cfg.get(k) for k in RELOAD_KEYS)
        self.cfg = cfg
        self._check()
        if reload:
            self._predictor = None
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        return json.dumps(self.cfg, sort_keys=True).encode()

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> "VeeNer":
        cfg = {**DEFAULT_CONFIG, **json.loads(data)}
        if any(cfg.get(k) != self.cfg.get(k) for k in RELOAD_KEYS):
            self._predictor = None
        self.cfg = cfg
        self._check()
        return self


__all__ = ["ALIGNMENT_MODES", "VeeNer", "flat_projection", "make_vee_ner"]
