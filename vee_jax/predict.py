"""Predict entities in raw text with a trained workdir: ``Predictor.from_workdir(path, policy=...)``.

    p = Predictor.from_workdir("runs/genia", policy={"strategy": "vee", "tau": 0.01, "patience": 2})
    p(["IL-2 gene expression requires NF-kappa B."])[0].to_dict()
    # {"text": "IL-2 gene ...", "entities": [{"start": 0, "end": 4, "type": "protein", "text": "IL-2",
    #  "score": 0.97}, ...], "exit_layer": 3}

Text is cut into words by the rule the training data was tokenised with (``vee_jax.words``:
``ptb`` for GENIA/CoNLL, ``chars`` for MSRA), encoded with ``data.features.encode_sentences``,
run through the online engine ``vee_infer`` (every sentence exits on its own) and decoded with
``decode.decode_table``, as eval.py does. Entities come back with character offsets into the
original text (Python string indices, i.e. Unicode code points; ``end`` exclusive, so
``text[start:end]`` is the entity), the type, the score (the
probability of that type in the table the span was decoded from: the exit layer's table, or the
ensemble mean) and the sentence's exit layer.

Batch shapes come from a small set so that a long-running process does not compile per request:
rows padded to a power of two (``ROW_BUCKETS``, at most ``batch_size``), subwords to
``SUBWORD_BUCKETS`` (a batch of one row: the finer ``FINE_SUBWORD_BUCKETS``) and the word axis
to the word bucket that holds every sentence of that subword bucket (``padded_shape``; ``shapes``
lists them). A policy's program is its static part
(``program``: kind, measure, ensemble; tau, patience and the budget layer are traced), so each
(program, shape) compiles once; ``warm_up`` compiles them ahead, and ``compilations`` counts
the real XLA compilations of the process (``vee_jax.compilations``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from . import compilations as xla_compilations
from .data.features import (FINE_SUBWORD_BUCKETS, SUBWORD_BUCKETS, Encoded, batch_plan, bucket, collate,
                            encode_sentences, words_for)
from .data.sentence import Sentence
from .decode import decode_table
from .documents import Entity
from .int8 import is_int8
from .policies import Policy, check_policy, policy_from_input
from .windows import Gather, merge_tables, sentence_exit_layer, sentence_rows
from .words import RULE_OF_FORMAT, Word, split_words

log = logging.getLogger("vee_jax")

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
"""Batch rows are padded to the next of these (capped at the predictor's ``batch_size``)."""


# --- results ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WordPrediction:
    """A sentence's result over words: ``spans`` ``(start, end, type, score)``, ``end`` inclusive.

    ``exit_layer``: 1-based layer the sentence left at (a windowed sentence: the max over its
    windows). ``windows``: rows the sentence ran as (1 unless longer than the subword limit).
    """

    spans: tuple[tuple[int, int, str, float], ...]
    exit_layer: int
    windows: int = 1


@dataclasses.dataclass(frozen=True)
class Prediction:
    """A text's result: entities with character offsets, the exit layer and the words used."""

    text: str
    entities: tuple[Entity, ...]
    exit_layer: int
    words: tuple[Word, ...]
    windows: int = 1

    def to_dict(self, with_text: bool = True) -> dict[str, Any]:
        """``{"text", "entities": [{"start", "end", "type", "text", "score"}], "exit_layer"}``."""
        d: dict[str, Any] = {"text": self.text} if with_text else {}
        d.update(entities=[e.to_dict() for e in self.entities], exit_layer=self.exit_layer)
        if self.windows > 1:
            d["windows"] = self.windows
        return d


def to_prediction(text: str, words: Sequence[Word], wp: WordPrediction) -> Prediction:
    """Word spans -> character offsets into ``text`` (entities sorted by start, then end)."""
    ents = []
    for s, e, t, p in wp.spans:
        a, b = words[s][1], words[e][2]
        ents.append(Entity(a, b, t, text[a:b], float(p), (s, e)))
    ents.sort(key=lambda x: (x.start, x.end, x.type))
    return Prediction(text, tuple(ents), wp.exit_layer, tuple(words), wp.windows)


# --- shapes ----------------------------------------------------------------------------------
def rows_bucket(n: int, max_rows: int) -> int:
    """Rows of a batch of ``n`` sentences: the next ``ROW_BUCKETS`` entry, at most ``max_rows``."""
    if not 1 <= n <= max_rows:
        raise ValueError(f"a batch holds 1..{max_rows} sentences, got {n}")
    return min(next((b for b in ROW_BUCKETS if b >= n), max_rows), max_rows)


def subword_buckets(rows: int) -> tuple[int, ...]:
    """The subword buckets of a batch of ``rows`` rows (its rows bucket): finer for one row."""
    return FINE_SUBWORD_BUCKETS if rows == 1 else SUBWORD_BUCKETS


def padded_shape(subwords: int, rows: int) -> tuple[int, int]:
    """``(T, L)`` of a batch of ``rows`` rows whose longest row has ``subwords`` subwords: T its
    bucket in ``subword_buckets(rows)``, L a word axis that fits any row of T subwords.

    L depends on T alone (a sentence of T subwords has at most T - 2 words), so the shapes a
    process can meet are one per subword bucket and rows bucket.
    """
    T = bucket(subwords, subword_buckets(rows))
    return T, words_for(T, fine=rows == 1)


def batch_shape(encoded: Sequence[Encoded], rows: int) -> tuple[int, int]:
    """``padded_shape`` of a batch of ``encoded`` padded to ``rows`` rows."""
    return padded_shape(max(len(e.input_ids) for e in encoded), rows)


class Predictor:
    """Entities in raw text (or pre-split words) from a trained model under an exit policy.

    Args:
      spec: the ``training.ModelSpec``; params: ``{"encoder", "exits"}`` as trained (laid out
        once for inference by ``engine.prepare``); tokenizer: the
        backbone's fast tokenizer; labels: entity types (class i + 1 is ``labels[i]``).
      nested: decoding allows nested spans (True) or not (flat data).
      policy: the default exit policy (a policy, a dict, a strategy name; None: VEE defaults).
      word_rule: how raw text becomes words (``vee_jax.words``).
      max_subwords: the model's subword limit; longer sentences run as overlapping windows.
      context_subwords: document context of each sentence, as the model was trained
        (``data.context_subwords``): used where sentences come with their documents
        (``encode``'s ``doc_ids``: ``predict_documents``); a lone text has none.
      batch_size: at most this many sentences per engine call.
      prepared: ``params`` already in ``engine.prepare``'s layout (``TrainedModel.prepared_as``).
      weights: ``"float32"`` (as trained) or ``"int8"``: the layers' dense kernels as int8
        (``engine.prepare``; about half a layer's time on CPU, a deviation from the paper:
        docs/performance.md "int8"); with ``prepared``, the kind it holds (else ValueError).
      engine: how ``run`` batches many sentences: ``"loop"``, whole batches through ``vee_infer``
        (a batch runs until its slowest sentence exits), ``"continuous"``, ``batched_infer`` (an
        exited sentence stops costing compute), or ``"auto"``: continuous when the policy lets
        sentences exit at different layers, whole batches when every sentence exits at one layer
        (a budget, the full model), as measured (``bench/predictor.py``, docs/performance.md).
    """

    ENGINES = ("auto", "loop", "continuous")

    def __init__(self, spec, params: Any, tokenizer, labels: Sequence[str], nested: bool, *,
                 policy: Policy | Mapping[str, Any] | str | None = None, word_rule: str = "ptb",
                 max_subwords: int = 512, batch_size: int = 32, prepared: Mapping[str, Any] | None = None,
                 engine: str = "auto", context_subwords: int = 0, weights: str = "float32"):
        if engine not in self.ENGINES:
            raise ValueError(f"engine must be one of {', '.join(self.ENGINES)}, got {engine!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        split_words("", word_rule)  # validates the rule
        from .engine import prepare

        self.spec, self.tokenizer = spec, tokenizer
        # The engine's inference layout (one weight tree per layer and per exit), built once:
        # what bench/latency.py times; the stacked training layout would copy a layer's weights
        # at every iteration of the loop.
        self.model = prepared if prepared is not None else prepare(spec.bert, params["encoder"], params["exits"],
                                                                   weights=weights)
        self.weights = "int8" if is_int8(self.model["encoder"]["layers"][0]) else "float32"
        if self.weights != weights:
            raise ValueError(f"weights={weights!r} but the prepared layout given holds {self.weights} weights")
        self.labels, self.nested = list(labels), bool(nested)
        self.word_rule, self.max_subwords, self.batch_size = word_rule, max_subwords, batch_size
        self.context_subwords = context_subwords
        self.engine = engine
        self.policy = self.check(policy_from_input(policy))

    @classmethod
    def from_workdir(cls, workdir: str | Path, policy: Policy | Mapping[str, Any] | str | None = None, *,
                     checkpoint: str = "best", word_rule: str | None = None, batch_size: int = 32,
                     weights: str = "float32") -> "Predictor":
        """Load a train.py workdir (its best checkpoint by default); the word rule follows its data format."""
        from .trained import TrainedModel

        return cls.from_trained(TrainedModel.load(workdir, checkpoint), policy, word_rule=word_rule,
                                batch_size=batch_size, weights=weights)

    @classmethod
    def from_trained(cls, model, policy: Policy | Mapping[str, Any] | str | None = None, *,
                     word_rule: str | None = None, batch_size: int = 32, weights: str = "float32") -> "Predictor":
        """A ``trained.TrainedModel``'s predictor, on its prepared layout with ``weights`` (built once,
        shared); the word and sentence rules follow the workdir's data format."""
        from .sentences import RULE_OF_FORMAT as SENTENCE_RULE_OF_FORMAT

        fmt = model.config.data.format
        p = cls(model.spec, model.params, model.tokenizer, model.labels, model.nested, policy=policy,
                word_rule=word_rule or RULE_OF_FORMAT.get(fmt, "ptb"), max_subwords=model.max_subwords,
                batch_size=batch_size, prepared=model.prepared_as(weights), context_subwords=model.context_subwords,
                weights=weights)
        p.sentence_rule = SENTENCE_RULE_OF_FORMAT.get(fmt)
        return p

    @property
    def num_layers(self) -> int:
        """M: layers, and exits."""
        return self.spec.num_exits

    @property
    def compilations(self) -> int:
        """XLA compilations in this process so far (``vee_jax.compilations.count``: every jitted
        function, not only the engine; persistent-cache hits excluded)."""
        return xla_compilations.count()

    @staticmethod
    def program(policy: Policy) -> Policy:
        """The part of ``policy`` the engine compiles for (``Policy.split``: its knobs at their
        defaults): two policies with the same program share every compiled shape."""
        return policy.split()[0]

    def shapes(self, max_subwords: int | None = None, rows: Sequence[int] | None = None) -> list[tuple[int, int, int]]:
        """Every batch shape ``(B, T, L)`` a call can meet with sentences (or windows) of at most
        ``max_subwords`` subwords (default and cap: the model's limit ``max_subwords``).

        T: each subword bucket of ``subword_buckets(B)`` up to the one that holds ``max_subwords``
        (windows of a longer sentence are rows of the largest); L as ``padded_shape`` gives it; B:
        each rows bucket up to ``batch_size`` (or ``rows``).
        """
        limit = self.max_subwords if max_subwords is None else min(max_subwords, self.max_subwords)
        rows = sorted(set(rows or [b for b in ROW_BUCKETS if b < self.batch_size] + [self.batch_size]))
        out = []
        for B in rows:
            buckets = subword_buckets(B)
            top = bucket(min(max(limit, 1), buckets[-1]), buckets)
            out += [(B, *padded_shape(T, B)) for T in buckets if T <= top]
        return out

    def check(self, policy: Policy) -> Policy:
        """``policy`` if this model can run it, else ValueError (a budget layer past M, say)."""
        check_policy(policy, self.num_layers)
        if self.spec.exits == "last" and policy.name != "full":
            log.warning("this model was trained with model.exits='last': only the last exit is trained")
        return policy

    # --- the public calls --------------------------------------------------------------------
    def __call__(self, texts: Sequence[str], policy: Policy | Mapping[str, Any] | str | None = None, *,
                 progress: bool = False) -> list[Prediction]:
        """Entities of every text (input order); see the module docstring for the result."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not one string")
        words = [split_words(t, self.word_rule) for t in texts]
        preds = self.predict_words([[w for w, _, _ in ws] for ws in words], policy, progress=progress)
        return [to_prediction(t, ws, p) for t, ws, p in zip(texts, words, preds)]

    def predict_words(self, sentences: Sequence[Sequence[str]],
                      policy: Policy | Mapping[str, Any] | str | None = None, *,
                      progress: bool = False) -> list[WordPrediction]:
        """Spans over pre-split words (what eval.py predicts on a data file's words)."""
        pol = self.policy if policy is None else self.check(policy_from_input(policy))
        return self.run(self.encode(sentences), pol, progress=progress)

    # --- the steps ---------------------------------------------------------------------------
    def encode(self, sentences: Sequence[Sequence[str]], doc_ids: Sequence[Any] | None = None) -> list[Encoded]:
        """Words -> ``Encoded`` rows (subwords; a sentence past the limit: several window rows).

        ``doc_ids``: each sentence's document (consecutive sentences with one id are a document),
        for the document context of a model trained with ``data.context_subwords``; None: every
        sentence alone. Word shapes too when the model was trained with ``model.casing``.
        """
        ids = [None] * len(sentences) if doc_ids is None else list(doc_ids)
        enc, rep = encode_sentences([Sentence(tuple(w), doc_id=d) for w, d in zip(sentences, ids)],
                                    self.tokenizer, self.labels, self.max_subwords, self.context_subwords,
                                    casing=self.spec.casing)
        if rep.windowed_sentences:
            log.info(rep.summary("input"))
        return enc

    def run(self, encoded: Sequence[Encoded], policy: Policy, *, progress: bool = False) -> list[WordPrediction]:
        """Batches of rows of one subword bucket (``batch_plan``), each one ``infer_batch``.

        One result per sentence (``windows.sentence_rows``): a windowed sentence is decided once
        all its windows have run, and only unfinished sentences' tables are kept meanwhile.
        """
        if self.batch_size > 1 and len(encoded) > 1 and self.continuous(policy):
            return self.run_continuous(encoded, policy)
        gather = Gather([e.offset for e in encoded])
        out: list[WordPrediction | None] = [None] * len(gather.groups)
        plan = batch_plan(encoded, self.batch_size, shuffle=False, fit_words=False)
        if progress:
            from tqdm.auto import tqdm

            plan = tqdm(plan, desc="predict", unit="batch", leave=False)
        for _, idx in plan:
            probs, exits = self.infer_batch([encoded[i] for i in idx], policy)
            for r, i in enumerate(idx):
                n = encoded[i].length
                for s, got in gather.add(i, (probs[r, :n, :n], int(exits[r]))):
                    out[s] = self.decide([encoded[j] for j in gather.groups[s]], got)
        return out  # type: ignore[return-value]

    def continuous(self, policy: Policy) -> bool:
        """Whether ``run`` batches continuously under ``policy`` (see ``engine``)."""
        if self.engine != "auto":
            return self.engine == "continuous"
        return policy.fixed_exit(self.num_layers, policy.knobs()) is None  # sentences exit at their own layers

    def run_continuous(self, encoded: Sequence[Encoded], policy: Policy) -> list[WordPrediction]:
        """All rows through ``batched_infer`` (continuous batching, batches of ``batch_size``); one
        result per sentence, its windows merged as in ``run``."""
        from .batched import batched_infer

        results, _ = batched_infer(self.spec.bert, self.model, encoded, policy, batch_size=self.batch_size,
                                   pooling=self.spec.pooling)
        return [self.decide([encoded[r] for r in g], [(results[r]["probs"], results[r]["exit_layer"]) for r in g])
                for g in sentence_rows([e.offset for e in encoded])]

    def run_batch(self, encoded: Sequence[Encoded], policy: Policy) -> list[WordPrediction]:
        """One engine call on up to ``batch_size`` rows; one result per sentence (its windows all here)."""
        probs, exits = self.infer_batch(encoded, policy)
        rows = [(probs[r, :e.length, :e.length], int(exits[r])) for r, e in enumerate(encoded)]
        return [self.decide([encoded[r] for r in g], [rows[r] for r in g])
                for g in sentence_rows([e.offset for e in encoded])]

    def infer_batch(self, encoded: Sequence[Encoded], policy: Policy) -> tuple[np.ndarray, np.ndarray]:
        """One engine call on up to ``batch_size`` rows, padded to ``(rows, T, L)`` buckets.

        Returns ``vee_infer``'s ``probs`` [B, L, L, K] at each row's exit and ``exit_layer`` [B]
        (numpy; rows past ``len(encoded)`` are padding).
        """
        from .engine import vee_infer

        B = rows_bucket(len(encoded), self.batch_size)
        T, L = batch_shape(encoded, B)
        batch = collate(encoded, (T, L), B, casing=self.spec.casing)
        out = vee_infer(self.spec.bert, self.model["encoder"], self.model["exits"], batch, policy,
                        pooling=self.spec.pooling)
        return np.asarray(out["probs"]), np.asarray(out["exit_layer"])

    def decide(self, rows: Sequence[Encoded], tables: Sequence[tuple[np.ndarray, int]]) -> WordPrediction:
        """A sentence's result from its rows' ``(table [l, l, K] at the row's exit, exit layer)``.

        Windows' tables are merged (``windows.merge_tables``) and the merged table decoded with
        ``decode_table``; the exit layer is the max over the windows.
        """
        n = rows[0].num_words if len(rows) > 1 else rows[0].length
        table = merge_tables([t for t, _ in tables], [e.window for e in rows], n)
        spans = tuple((s, t, self.labels[c - 1], p) for s, t, c, p in decode_table(table, n, self.nested))
        return WordPrediction(spans, sentence_exit_layer([x for _, x in tables]), len(rows))

    # --- documents (vee_jax.documents) -------------------------------------------------------
    @property
    def sentence_rule(self) -> str:
        """How documents are cut into sentences (``vee_jax.sentences``): the rule of the workdir's data
        format (``from_trained``) unless set; without a workdir ``zh`` for the ``chars`` word rule,
        ``pysbd`` otherwise."""
        from .documents import default_sentence_rule

        return self.__dict__.get("_sentence_rule") or default_sentence_rule(self.word_rule)

    @sentence_rule.setter
    def sentence_rule(self, rule: str | None) -> None:
        from .documents import check_sentence_rule

        self.__dict__["_sentence_rule"] = None if rule is None else check_sentence_rule(rule)

    def predict_documents(self, texts: Sequence[str], policy: Policy | Mapping[str, Any] | str | None = None, *,
                          sentence_rule: str | None = None, batch_size: int | None = None,
                          progress: bool = False):
        """Entities of documents of any length: ``documents.predict_documents`` (sentences of all
        documents batched together; offsets into each document; each sentence's exit layer)."""
        from .documents import predict_documents

        return predict_documents(self, texts, policy, sentence_rule=sentence_rule, batch_size=batch_size,
                                 progress=progress)

    def warm_up(self, policies: Iterable[Policy], max_subwords: int | None = None,
                rows: Sequence[int] | None = None, on_step: Callable[[int, int], None] | None = None) -> int:
        """Compile the programs of ``policies`` on every batch shape up to ``max_subwords`` (``shapes``),
        without running them (``engine.compile_vee_infer``).

        Policies that share a program (``program``: they differ only in traced knobs) compile
        once. ``on_step(done, total)`` is called after each (program, shape). Returns how many
        XLA compilations this made (``compilations``). A server calls this before it answers, so
        that requests never wait for XLA.
        """
        from .engine import compile_vee_infer

        first: dict[Policy, Policy] = {}  # program -> the first policy of it (whose knobs pass check)
        for p in policies:
            first.setdefault(self.program(self.check(p)), p)
        steps = [(p, shape) for shape in self.shapes(max_subwords, rows) for p in first.values()]
        before = self.compilations
        for k, (policy, (B, T, L)) in enumerate(steps, 1):
            compile_vee_infer(self.spec.bert, self.model["encoder"], self.model["exits"], collate([], (T, L), B, casing=self.spec.casing),
                              policy, pooling=self.spec.pooling)
            if on_step is not None:
                on_step(k, len(steps))
        return self.compilations - before


__all__ = ["Entity", "Prediction", "Predictor", "ROW_BUCKETS", "WordPrediction", "batch_shape",
           "padded_shape", "rows_bucket", "split_words", "subword_buckets", "to_prediction", "words_for"]
