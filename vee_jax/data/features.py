"""Words -> subwords -> fixed-shape batches: alignment, gold tables and length buckets.

Tables are over words (NOTES item 6): ``word_index[l]`` is the position of word l's first
subword, ``word_end[l]`` the exclusive end of its subwords. A sentence longer than the subword
limit becomes overlapping windows, one row each (``vee_jax.windows``). Batches are padded to a shape from
a small set of (subwords, words) buckets so that a whole epoch compiles a handful of shapes.

Document context (``context_subwords`` > 0, docs/data.md): a sentence's row also holds subwords of
the neighbouring sentences of its document, ``[CLS] left + sentence + right [SEP]``; the table
stays over the sentence's own words (``word_index`` points past the left context).

With ``model.casing`` (a deviation from the paper, docs/model.md "Casing feature") each word also
gets a shape id from its original string (``word_shape``), collated as ``word_shape`` [B, L].
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import ConfigError
from ..windows import plan_windows, unreachable_spans, window_spans
from .sentence import Sentence

log = logging.getLogger(__name__)

SUBWORD_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
WORD_BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# Where each row pays for its own padding (a batch of one row; continuous batching's groups,
# ``batched``), finer buckets: the half-way points below 128 too. On the demo test set subwords
# padded to SUBWORD_BUCKETS are 1.18x the real ones, to these 1.09x, and the Predictor runs 1.07x
# faster at batch 1, 1.14x with continuous batching (docs/decisions.md). Training, evaluation and
# whole batches of more rows keep the coarser ones: a batch pads to its longest row anyway, and
# each bucket is one more program per rows bucket for a server to compile before it is ready.
FINE_SUBWORD_BUCKETS = tuple(sorted(set(SUBWORD_BUCKETS) | {40, 56, 80, 112}))
FINE_WORD_BUCKETS = tuple(sorted(set(WORD_BUCKETS) | {40, 56, 80, 112}))


# --- word shapes (model.casing) -----------------------------------------------------------------
# The casing feature's shape ids: 0 is padding, a real word gets one of 1..7 (``word_shape``).
SHAPE_PAD = 0
SHAPE_LOWER = 1  # every cased letter lower-case: "the", "don't", "e-mail"
SHAPE_TITLE = 2  # two or more cased letters, the first upper-case, the others lower: "Paris", "Jean-luc"
SHAPE_CAPS = 3  # two or more cased letters, all upper-case: "EU", "NASA", "U.S."
SHAPE_SINGLE_UPPER = 4  # exactly one cased letter, upper-case: "A", "I", "J."
SHAPE_MIXED = 5  # other mixes of upper- and lower-case: "McDonald", "iPhone", "eBay", "Jean-Luc"
SHAPE_DIGIT = 6  # contains a digit, whatever else: "1996", "3-2", "A4", "2nd"
SHAPE_NO_CASE = 7  # no digit and no cased letter: punctuation, symbols, scripts without case (",", "--", Chinese)
NUM_SHAPES = 8  # the rows of the exits' shape embedding table (with padding)


def word_shape(word: str) -> int:
    """The casing feature's shape id of a word's original string (before any lower-casing): 1..7.

    The first rule that applies: a digit anywhere (DIGIT); no cased letter (NO_CASE); every cased
    letter lower (LOWER); a single cased letter, upper (SINGLE_UPPER); all upper (CAPS); the first
    upper and the others lower (TITLE); else MIXED. A cased letter is one with ``isupper`` or
    ``islower`` (so Chinese characters, letters without case, count as none).
    """
    if any(c.isdigit() for c in word):
        return SHAPE_DIGIT
    cased = [c for c in word if c.isupper() or c.islower()]
    if not cased:
        return SHAPE_NO_CASE
    upper = [c.isupper() for c in cased]
    if not any(upper):
        return SHAPE_LOWER
    if len(cased) == 1:
        return SHAPE_SINGLE_UPPER
    if all(upper):
        return SHAPE_CAPS
    if upper[0] and not any(upper[1:]):
        return SHAPE_TITLE
    return SHAPE_MIXED


_CASE_PROBES = ("A", "The", "Paris", "NASA", "John Smith")


def case_kept_by(tokenizer) -> str | None:
    """A probe word the tokenizer gives other ids than its lower-cased form (a cased tokenizer),
    or None when every probe loses its case (an uncased one).

    Behaviour, not a flag: ``do_lower_case`` is absent on some tokenizers, and in fast ones the
    backend's normalizer decides.
    """
    def ids(text):
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    return next((w for w in _CASE_PROBES if ids(w) != ids(w.lower())), None)


def check_casing(casing: bool, tokenizer, backbone: str) -> None:
    """Refuse ``model.casing`` on a backbone whose tokenizer keeps case (ConfigError)."""
    if not casing:
        return
    word = case_kept_by(tokenizer)
    if word is not None:
        raise ConfigError(
            f"config.model.casing=True is for uncased backbones, but backbone {backbone!r} has a cased tokenizer "
            f"({word!r} and {word.lower()!r} get different subword ids): the model already sees capitalisation, "
            f"and the shape feature would only duplicate it. Drop --config.model.casing=True for this backbone")


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One row as the model sees it: a whole sentence, or one window of a long one (``vee_jax.windows``).

    input_ids: [T] with [CLS] first and [SEP] last. word_index, word_end: [L] subword
    positions (first, exclusive end). spans: ((start, end, class_id), ...) with class ids
    1..K-1 over the row's L words (a window's gold sub-table). offset: the row's first word in
    its sentence (0 for a whole sentence and for a sentence's first window); the row holds words
    ``offset .. offset + L - 1``. lost_spans: gold spans of the sentence that lie in no window,
    so cannot be predicted (on the sentence's first row only, so that a sum over rows counts them once).
    context: ``(left, right)`` subwords of the neighbouring sentences of its document in the row,
    ``[CLS]``, left, the words, right, ``[SEP]`` (``document_context``; (0, 0) without).
    shapes: [L] the words' ``word_shape`` ids when encoded with ``casing`` (else None).
    """

    input_ids: np.ndarray
    word_index: np.ndarray
    word_end: np.ndarray
    spans: tuple[tuple[int, int, int], ...]
    num_words: int  # words in the source sentence
    lost_spans: tuple[tuple[int, int, str], ...] = ()
    empty_words: int = 0  # words the tokenizer turned into no subword (kept as [UNK])
    offset: int = 0  # the row's first word in its sentence
    context: tuple[int, int] = (0, 0)  # subwords of document context before and after the sentence
    shapes: np.ndarray | None = None  # [L] word_shape ids (model.casing only)

    @property
    def length(self) -> int:
        """L: the words represented in the row's table."""
        return len(self.word_index)

    @property
    def window(self) -> tuple[int, int]:
        """``(offset, offset + L)``: the sentence's words this row holds."""
        return self.offset, self.offset + self.length


@dataclasses.dataclass
class EncodeReport:
    """What encoding had to do, so that nothing is lost silently."""

    sentences: int = 0
    windowed_sentences: int = 0  # longer than the limit: encoded as overlapping windows
    windows: int = 0  # rows those sentences became
    lost_spans: int = 0  # gold spans in no single window (longer than the windows' overlap)
    clipped_words: int = 0  # words of more subwords than the limit: their first subwords are kept
    empty_words: int = 0
    multi_type_cells: int = 0  # a table cell holds one class: the extra types are not trained on
    context_rows: int = 0  # rows that hold document context (context_subwords > 0)
    context_subwords: int = 0  # context subwords in all those rows

    def summary(self, name: str = "data") -> str:
        s = f"{name}: {self.sentences} sentences"
        if self.windowed_sentences:
            s += (f"; {self.windowed_sentences} longer than the model limit, encoded as {self.windows} "
                  f"overlapping windows")
        if self.lost_spans:
            s += f"; {self.lost_spans} gold entities lie in no single window: they cannot be predicted"
        if self.clipped_words:
            s += f"; {self.clipped_words} words longer than the limit keep only their first subwords"
        if self.empty_words:
            s += f"; {self.empty_words} words had no subword and are kept as [UNK]"
        if self.multi_type_cells:
            s += (f"; {self.multi_type_cells} spans carry two or more types: a table cell holds one "
                  f"class, so one type is kept for training and the others count as missed")
        if self.context_rows:
            s += (f"; {self.context_rows} with document context (mean "
                  f"{self.context_subwords / self.context_rows:.1f} subwords)")
        return s


def encode_sentences(
    sentences: Sequence[Sentence],
    tokenizer,
    labels: Sequence[str],
    max_subwords: int = 512,
    context_subwords: int = 0,
    *,
    casing: bool = False,
) -> tuple[list[Encoded], EncodeReport]:
    """Tokenise words into subwords with a fast tokenizer and map spans to class ids.

    ``labels``: the ordered entity types; type ``labels[i]`` gets class id ``i + 1``.
    Returns rows in sentence order: one per sentence that fits ``max_subwords`` (with [CLS]
    and [SEP]); a longer sentence becomes several rows, overlapping windows of whole words
    (``windows.plan_windows``; ``windows.sentence_rows`` groups rows back into sentences).
    ``context_subwords`` > 0: a sentence that fits gets up to that many subwords of document
    context on each side (``document_context``); 0 gives the rows of sentences encoded alone.
    ``casing``: also each word's ``word_shape`` id, from the word as given (``Encoded.shapes``).
    """
    label_id = {t: i + 1 for i, t in enumerate(labels)}
    report = EncodeReport(sentences=len(sentences))
    specials = (tokenizer.cls_token_id, tokenizer.sep_token_id)
    pieces = _subwords(sentences, tokenizer)
    empties = [_fill_empty(per_word, tokenizer.unk_token_id) for per_word in pieces]
    report.clipped_words = sum(_clip(per_word, max_subwords - 2) for per_word in pieces)
    bounds = document_bounds(sentences) if context_subwords > 0 else None
    out: list[Encoded] = []
    for i, (sent, per_word, empty) in enumerate(zip(sentences, pieces, empties)):
        spans = tuple((s, e, label_id[t]) for s, e, t in sent.spans)
        report.multi_type_cells += len(spans) - len({(s, e) for s, e, _ in spans})
        windows = plan_windows([len(p) for p in per_word], max_subwords - 2)
        lost = unreachable_spans(sent.spans, windows)
        if len(windows) > 1:
            report.windowed_sentences += 1
            report.windows += len(windows)
            report.lost_spans += len(lost)
        report.empty_words += empty
        context = ([], [])
        if bounds is not None and len(windows) == 1:  # a windowed sentence gets no context
            room = max_subwords - 2 - sum(len(p) for p in per_word)
            context = document_context(pieces, i, bounds[i], context_subwords, room)
            if context[0] or context[1]:
                report.context_rows += 1
                report.context_subwords += len(context[0]) + len(context[1])
        shapes = np.asarray([word_shape(w) for w in sent.words], np.int32) if casing else None
        for k, w in enumerate(windows):
            out.append(_encode_window(per_word, w, spans, specials, len(sent.words),
                                      lost if k == 0 else (), empty if k == 0 else 0, context, shapes))
    return out, report


def document_bounds(sentences: Sequence[Sentence]) -> list[tuple[int, int]]:
    """Each sentence's document as sentence indices ``(first, end)``, end exclusive.

    A document is a run of consecutive sentences with the same ``doc_id`` (an id that comes back
    later is another document); a sentence without one (``None``) is a document alone.
    """
    n = len(sentences)
    joins = [i > 0 and s.doc_id is not None and s.doc_id == sentences[i - 1].doc_id
             for i, s in enumerate(sentences)]  # sentence i continues i - 1's document
    first, end = list(range(n)), [i + 1 for i in range(n)]
    for i in range(1, n):
        if joins[i]:
            first[i] = first[i - 1]
    for i in range(n - 2, -1, -1):
        if joins[i + 1]:
            end[i] = end[i + 1]
    return list(zip(first, end))


def document_context(pieces: Sequence[list[list[int]]], i: int, doc: tuple[int, int], per_side: int,
                     room: int) -> tuple[list[int], list[int]]:
    """Subword ids of sentence ``i``'s document context: ``(left, right)``, each in text order.

    pieces: ``[sentence][word] -> [ids]``. doc: ``(first, end)``, the sentences of i's document.
    Each side takes whole words, nearest the sentence first, up to ``per_side`` subwords (the
    far side is cut); together at most ``room`` (the limit left after the sentence: the sentence
    has priority). When both do not fit, each side gets half the room, or more when the other
    side needs less.
    """
    if room <= 0 or per_side <= 0:
        return [], []

    def before():  # the words before the sentence, nearest first (lazily: documents can be long)
        return (w for j in range(i - 1, doc[0] - 1, -1) for w in reversed(pieces[j]))

    def after():
        return (w for j in range(i + 1, doc[1]) for w in pieces[j])

    right_full = sum(map(len, _take(after(), per_side)))
    left = _take(before(), min(per_side, max(room // 2, room - right_full)))
    right = _take(after(), min(per_side, room - sum(map(len, left))))
    return [t for w in reversed(left) for t in w], [t for w in right for t in w]


def _take(words: Iterable[list[int]], budget: int) -> list[list[int]]:
    """The leading whole words of ``words`` whose subwords fit ``budget`` together."""
    taken: list[list[int]] = []
    used = 0
    for p in words:
        if used + len(p) > budget:
            break
        taken.append(p)
        used += len(p)
    return taken


def _subwords(sentences: Sequence[Sentence], tokenizer) -> list[list[list[int]]]:
    """Each sentence's subword ids per word: ``[sentence][word] -> [ids]`` (one batched tokenizer call)."""
    word_lists = [list(s.words) for s in sentences]
    nonempty = [i for i, w in enumerate(word_lists) if w]
    pieces: list[list[list[int]]] = [[] for _ in sentences]
    if nonempty:  # fast tokenizers are much quicker over many sentences at once
        enc = tokenizer([word_lists[i] for i in nonempty], is_split_into_words=True, add_special_tokens=False)
        for j, i in enumerate(nonempty):
            per_word: list[list[int]] = [[] for _ in word_lists[i]]
            for tok, w in zip(enc["input_ids"][j], enc.word_ids(j)):
                if w is not None:
                    per_word[w].append(tok)
            pieces[i] = per_word
    return pieces


def _fill_empty(per_word: list[list[int]], unk_id: int) -> int:
    """A word without subwords (control character, lone combining mark...) keeps its position as [UNK]."""
    empty = [w for w, p in enumerate(per_word) if not p]
    for w in empty:
        per_word[w] = [unk_id]
    return len(empty)


def _clip(per_word: list[list[int]], budget: int) -> int:
    """Keep the first ``budget`` subwords of a word longer than a window (its first subword represents it)."""
    long = [w for w, p in enumerate(per_word) if len(p) > budget]
    for w in long:
        per_word[w] = per_word[w][:budget]
    return len(long)


def _encode_window(per_word: list[list[int]], window: tuple[int, int], spans, specials: tuple[int, int],
                   num_words: int, lost: tuple, empty: int,
                   context: tuple[list[int], list[int]] = ([], []), shapes: np.ndarray | None = None) -> Encoded:
    """One row: [CLS] + left context + the window's words' subwords + right context + [SEP], and
    the window's gold sub-table (context: ``document_context``, only for a sentence in one window;
    shapes: the sentence's ``word_shape`` ids, sliced to the window)."""
    a, b = window
    left, right = context
    ids, starts, ends = [specials[0], *left], [], []
    for p in per_word[a:b]:
        starts.append(len(ids))
        ids.extend(p)
        ends.append(len(ids))
    ids.extend(right)
    ids.append(specials[1])
    return Encoded(np.asarray(ids, np.int32), np.asarray(starts, np.int32), np.asarray(ends, np.int32),
                   window_spans(spans, window), num_words, lost, empty, a, (len(left), len(right)),
                   None if shapes is None else shapes[a:b])


def bucket(n: int, boundaries: Sequence[int]) -> int:
    """The smallest boundary >= n (n past the last boundary is an error: encode windows long sentences)."""
    for b in boundaries:
        if n <= b:
            return b
    raise ValueError(f"length {n} exceeds the largest bucket {boundaries[-1]}")


def words_for(T: int, fine: bool = False) -> int:
    """The word bucket L of subword bucket T: room for T - 2 words ([CLS] and [SEP] aside).

    Every word has at least one subword, so any sentence of T subwords fits. One L per T, the
    same for every data set: dev evaluation in train.py and eval.py on test compile the same
    shapes (a second process finds them in JAX's persistent cache). ``fine``: from
    ``FINE_WORD_BUCKETS`` (a batch of one row).
    """
    return bucket(max(T - 2, 1), FINE_WORD_BUCKETS if fine else WORD_BUCKETS)


def row_shape(e: Encoded, fit_words: bool = True) -> tuple[int, int]:
    """``(T, L)``: the subword bucket of row ``e`` and its word bucket.

    L is ``words_for(T)`` (one L per T), except for a row that holds document context when
    ``fit_words``: its T subwords hold far fewer than T - 2 words and the table costs L^2, so it
    gets the word bucket of its own words (more shapes, much smaller tables).
    """
    T = bucket(len(e.input_ids), SUBWORD_BUCKETS)
    if fit_words and e.context != (0, 0):
        return T, min(words_for(T), bucket(max(e.length, 1), WORD_BUCKETS))
    return T, words_for(T)


def bucket_shapes(encoded: Sequence[Encoded], fit_words: bool = True) -> set[tuple[int, int]]:
    """The ``(T, L)`` shapes (``row_shape``) that ``encoded`` uses.

    Without document context these are one per subword bucket in use, which keeps the number of
    shapes (= compilations) at the number of subword buckets.
    """
    return {row_shape(e, fit_words) for e in encoded}


def batch_plan(
    encoded: Sequence[Encoded],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    fit_words: bool = True,
) -> list[tuple[tuple[int, int], list[int]]]:
    """Group sentence indices into batches of one bucket shape each.

    Deterministic for a given (seed, epoch): a resumed run sees the same order. Returns
    ``[((T, L), [indices...]), ...]``; the last batch of a bucket may be short (``collate``
    pads it with empty rows so the shape stays fixed). ``fit_words``: see ``row_shape`` (False:
    one L per T, the shapes a serving process warms up).
    """
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, e in enumerate(encoded):
        groups[row_shape(e, fit_words)].append(i)
    rng = np.random.default_rng([seed, epoch])
    plan = []
    for key in sorted(groups):
        idx = groups[key]
        if shuffle:
            idx = [idx[j] for j in rng.permutation(len(idx))]
        plan.extend((key, idx[k : k + batch_size]) for k in range(0, len(idx), batch_size))
    if shuffle:
        plan = [plan[j] for j in rng.permutation(len(plan))]
    return plan


def collate(encoded: Sequence[Encoded], shape: tuple[int, int], batch_size: int, *,
            casing: bool | None = None) -> dict[str, np.ndarray]:
    """Pad sentences into one batch of fixed shape [batch_size, T] / [batch_size, L].

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids`` [B, T]; ``word_index``,
    ``word_end``, ``word_mask`` [B, L]; ``lengths`` [B]; ``gold`` [B, L, L] class ids; with
    casing, ``word_shape`` [B, L] (``Encoded.shapes``, 0 at padding).
    Rows past ``len(encoded)`` are empty sentences (length 0): they add nothing to the loss.
    ``casing``: whether to add ``word_shape`` (every row must then carry shapes); None: when the
    rows carry shapes.
    """
    T, L = shape
    B = batch_size
    b = {
        "input_ids": np.zeros((B, T), np.int32),
        "attention_mask": np.zeros((B, T), np.int32),
        "token_type_ids": np.zeros((B, T), np.int32),
        "word_index": np.zeros((B, L), np.int32),
        "word_end": np.zeros((B, L), np.int32),
        "word_mask": np.zeros((B, L), np.int32),
        "lengths": np.zeros((B,), np.int32),
        "gold": np.zeros((B, L, L), np.int32),
    }
    if casing is None:
        casing = any(e.shapes is not None for e in encoded)
    if casing:
        if any(e.shapes is None for e in encoded):
            raise ValueError("collate(casing=True) needs rows encoded with casing (Encoded.shapes); "
                             "encode_sentences(..., casing=True)")
        b["word_shape"] = np.zeros((B, L), np.int32)
    for r, e in enumerate(encoded):
        n, w = len(e.input_ids), e.length
        b["input_ids"][r, :n] = e.input_ids
        b["attention_mask"][r, :n] = 1
        b["word_index"][r, :w] = e.word_index
        b["word_end"][r, :w] = e.word_end
        b["word_mask"][r, :w] = 1
        b["lengths"][r] = w
        if casing:
            b["word_shape"][r, :w] = e.shapes
        for s, t, k in e.spans:
            b["gold"][r, s, t] = k
    return b


def iterate_batches(
    encoded: Sequence[Encoded],
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    skip: int = 0,
) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    """Yield ``(sentence indices, batch)`` following ``batch_plan``; ``skip`` batches first (resume)."""
    for shape, idx in batch_plan(encoded, batch_size, shuffle=shuffle, seed=seed, epoch=epoch)[skip:]:
        yield idx, collate([encoded[i] for i in idx], shape, batch_size)


def num_shapes(encoded: Sequence[Encoded]) -> int:
    """How many distinct batch shapes (= jit compilations of a step) a pass over the data needs."""
    return len(bucket_shapes(encoded))
