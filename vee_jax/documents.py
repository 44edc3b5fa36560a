"""Documents of any length -> entities with character offsets into the document.

    p = Predictor.from_workdir("runs/genia")
    doc = p.predict_documents(["IL-2 binds NF-kappa B. It acts in T cells."])[0]
    doc.to_dict()
    # {"text": ..., "entities": [{"start": 0, "end": 4, "type": "protein", "text": "IL-2",
    #   "score": 0.97, "sentence": 0}, ...],
    #  "sentences": [{"start": 0, "end": 22, "exit_layer": 3, "words": 6}, {"start": 23, ...}]}

The model reads sentences, so each document is cut into sentences (``sentences.split_sentences``,
by the rule of the workdir's ``data.format``: ``pysbd`` for GENIA-like text, ``lines`` for
CoNLL, ``zh`` for MSRA; docs/sentences.md), each sentence into words (``words.split_words``,
the Predictor's word rule), and the sentences of ALL documents go through the Predictor's engine
path together (``Predictor.encode`` then ``Predictor.run_batch`` on batches of one subword
bucket, ``data.features.batch_plan``): many short documents fill batches as well as one long one.
Every sentence exits on its own, so each sentence reports its exit layer.

Offsets are Python string indices (code points) into the ORIGINAL document, ``end``
exclusive: ``text[start:end] == entity.text`` for every entity, and ``text[start:end]`` is the
sentence for every sentence span. ``sentence`` is the entity's sentence index (entities never
cross sentences: they are decoded per sentence). A document that the rule leaves as one
sentence gives exactly ``Predictor.__call__``'s entities and exit layer (the same words).

``windows`` (per sentence, shown when > 1): a sentence longer than the model's subword limit
runs as that many overlapping windows whose tables are merged (``vee_jax.windows``): no word
is dropped.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

from .sentences import RULES as SENTENCE_RULES
from .sentences import split_sentences
from .words import Word, split_words
from .policies import Policy

# documents.py runs on a Predictor it is handed (``predict.Predictor``: ``word_rule``, ``encode``,
# ``run_batch``, ``policy``, ``check``, ``batch_size``, ``sentence_rule``); it never imports
# predict.py, which calls it (``Predictor.predict_documents``).


# --- results ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Entity:
    """One entity: characters ``[start, end)`` of the text (``text[start:end] == self.text``).

    ``words``: ``(first, last)`` word indices, last inclusive (the table cell). ``score``: the
    probability of ``type`` in the table the span was decoded from.
    """

    start: int
    end: int
    type: str
    text: str
    score: float
    words: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "type": self.type, "text": self.text,
                "score": round(self.score, 6)}


@dataclasses.dataclass(frozen=True)
class DocumentEntity(Entity):
    """An entity of a document: characters ``[start, end)`` of the DOCUMENT and its sentence index;
    ``words`` are word indices within that sentence."""

    sentence: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "sentence": self.sentence}


@dataclasses.dataclass(frozen=True)
class SentenceResult:
    """A sentence: characters ``[start, end)`` of the document, its exit layer (1-based) and words."""

    start: int
    end: int
    exit_layer: int
    num_words: int
    windows: int = 1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"start": self.start, "end": self.end, "exit_layer": self.exit_layer,
                             "words": self.num_words}
        if self.windows > 1:
            d["windows"] = self.windows
        return d


@dataclasses.dataclass(frozen=True)
class DocumentPrediction:
    """A document's result: entities (sorted by start, end, type) and its sentences in text order."""

    text: str
    entities: tuple[DocumentEntity, ...]
    sentences: tuple[SentenceResult, ...]

    @property
    def num_words(self) -> int:
        return sum(s.num_words for s in self.sentences)

    @property
    def avg_exit_layer(self) -> float | None:
        """Mean exit layer over the sentences (None: no sentence)."""
        return sum(s.exit_layer for s in self.sentences) / len(self.sentences) if self.sentences else None

    def to_dict(self, with_text: bool = True) -> dict[str, Any]:
        """``{"text", "entities": [{"start", "end", "type", "text", "score", "sentence"}],
        "sentences": [{"start", "end", "exit_layer", "words"}]}`` (a sentence's ``windows`` when > 1)."""
        d: dict[str, Any] = {"text": self.text} if with_text else {}
        d.update(entities=[e.to_dict() for e in self.entities], sentences=[s.to_dict() for s in self.sentences])
        return d


# --- the plan: documents -> sentences -> words -------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SentencePlan:
    """One sentence to run: document ``doc``, characters ``[start, end)`` of it, its words (offsets
    into the DOCUMENT)."""

    doc: int
    start: int
    end: int
    words: tuple[Word, ...]


def default_sentence_rule(word_rule: str) -> str:
    """The sentence rule when the data format is not known: ``zh`` for the ``chars`` word rule, else ``pysbd``
    (pySBD also cuts at line breaks, so it is close to ``lines`` on one-sentence-per-line text)."""
    return "zh" if word_rule == "chars" else "pysbd"


def check_sentence_rule(rule: str) -> str:
    if rule not in SENTENCE_RULES:
        raise ValueError(f"unknown sentence rule {rule!r}; expected one of {', '.join(SENTENCE_RULES)}")
    return rule


def plan_documents(texts: Sequence[str], sentence_rule: str, word_rule: str) -> list[SentencePlan]:
    """Every sentence of every document, in order, with its words (offsets into the document).

    Every sentence has a word: a sentence span holds a non-space character, and every word rule
    makes a word of it.
    """
    check_sentence_rule(sentence_rule)
    plan = []
    for d, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"document {d} is a {type(text).__name__}, not a string")
        for a, b in split_sentences(text, sentence_rule):
            words = tuple((w, a + s, a + e) for w, s, e in split_words(text[a:b], word_rule))
            plan.append(SentencePlan(d, a, b, words))
    return plan


def assemble(texts: Sequence[str], plan: Sequence[SentencePlan],
             results: Sequence[Any]) -> list[DocumentPrediction]:
    """Word spans of each planned sentence (``results``: its ``predict.WordPrediction``) -> one
    ``DocumentPrediction`` per text (input order)."""
    ents: list[list[DocumentEntity]] = [[] for _ in texts]
    sents: list[list[SentenceResult]] = [[] for _ in texts]
    for sp, r in zip(plan, results):
        k = len(sents[sp.doc])
        sents[sp.doc].append(SentenceResult(sp.start, sp.end, r.exit_layer, len(sp.words), r.windows))
        text = texts[sp.doc]
        for s, e, t, p in r.spans:
            a, b = sp.words[s][1], sp.words[e][2]
            ents[sp.doc].append(DocumentEntity(a, b, t, text[a:b], float(p), (s, e), sentence=k))
    out = []
    for text, es, ss in zip(texts, ents, sents):
        es.sort(key=lambda x: (x.start, x.end, x.type))
        out.append(DocumentPrediction(text, tuple(es), tuple(ss)))
    return out


# --- running them ----------------------------------------------------------------------------
def predict_documents(predictor: Any, texts: Sequence[str],
                      policy: Policy | Mapping[str, Any] | str | None = None, *,
                      sentence_rule: str | None = None, batch_size: int | None = None,
                      progress: bool = False) -> list[DocumentPrediction]:
    """Entities of every document (input order); see the module docstring.

    Args:
      predictor: a ``Predictor`` (its word rule, tokenizer, engine and default policy).
      policy: the exit policy (None: the predictor's).
      sentence_rule: ``pysbd``, ``lines``, ``lines+pysbd``, ``zh`` or ``none`` (None: the
        predictor's ``sentence_rule``, which follows the workdir's data format).
      batch_size: at most this many sentences per engine call (None: the predictor's; at most it).
    """
    if isinstance(texts, str):
        raise TypeError("pass a list of documents, not one string")
    from .data.features import batch_plan
    from .policies import policy_from_input

    rule = check_sentence_rule(sentence_rule or predictor.sentence_rule)
    bs = predictor.batch_size if batch_size is None else batch_size
    if not 1 <= bs <= predictor.batch_size:
        raise ValueError(f"batch_size must be 1..{predictor.batch_size} (the predictor's), got {bs}")
    pol = predictor.policy if policy is None else predictor.check(policy_from_input(policy))
    plan = plan_documents(texts, rule, predictor.word_rule)
    if not plan:  # no document holds a non-space character
        return assemble(texts, [], [])
    encoded = predictor.encode([[w for w, _, _ in sp.words] for sp in plan], [sp.doc for sp in plan])
    results: list[Any] = [None] * len(plan)
    batches: Iterable = batch_plan(encoded, bs, shuffle=False, fit_words=False)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="predict", unit="batch", leave=False)
    for _, idx in batches:
        for i, r in zip(idx, predictor.run_batch([encoded[i] for i in idx], pol)):
            results[i] = r
    return assemble(texts, plan, results)


__all__ = ["DocumentEntity", "DocumentPrediction", "Entity", "SENTENCE_RULES", "SentencePlan", "SentenceResult", "assemble",
           "default_sentence_rule", "plan_documents", "predict_documents"]
