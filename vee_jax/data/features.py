"""Words -> subwords -> fixed-shape batches: alignment, gold tables and length buckets.

Tables are over words (NOTES item 6): ``word_index[l]`` is the position of word l's first
subword, ``word_end[l]`` the exclusive end of its subwords. Batches are padded to a shape from
a small set of (subwords, words) buckets so that a whole epoch compiles a handful of shapes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np

from .sentence import Sentence

log = logging.getLogger(__name__)

SUBWORD_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
WORD_BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One sentence as the model sees it (only the words that fit; see ``lost_spans``).

    input_ids: [T] with [CLS] first and [SEP] last. word_index, word_end: [L] subword
    positions (first, exclusive end). spans: ((start, end, class_id), ...) with class ids
    1..K-1 over the first L words. lost_spans: gold spans that reach past the words that fit.
    """

    input_ids: np.ndarray
    word_index: np.ndarray
    word_end: np.ndarray
    spans: tuple[tuple[int, int, int], ...]
    num_words: int  # words in the source sentence
    lost_spans: tuple[tuple[int, int, str], ...] = ()
    empty_words: int = 0  # words the tokenizer turned into no subword (kept as [UNK])

    @property
    def length(self) -> int:
        """L: the words represented in the table."""
        return len(self.word_index)


@dataclasses.dataclass
class EncodeReport:
    """What encoding had to do, so that nothing is lost silently."""

    sentences: int = 0
    truncated_sentences: int = 0
    dropped_words: int = 0
    lost_spans: int = 0
    empty_words: int = 0
    multi_type_cells: int = 0  # a table cell holds one class: the extra types are not trained on

    def summary(self, name: str = "data") -> str:
        s = f"{name}: {self.sentences} sentences"
        if self.truncated_sentences:
            s += (f"; {self.truncated_sentences} longer than the model limit: {self.dropped_words} words "
                  f"past the limit are not represented and {self.lost_spans} gold entities there count as missed")
        if self.empty_words:
            s += f"; {self.empty_words} words had no subword and are kept as [UNK]"
        if self.multi_type_cells:
            s += (f"; {self.multi_type_cells} spans carry two or more types: a table cell holds one "
                  f"class, so one type is kept for training and the others count as missed")
        return s


def encode_sentences(
    sentences: Sequence[Sentence],
    tokenizer,
    labels: Sequence[str],
    max_subwords: int = 512,
) -> tuple[list[Encoded], EncodeReport]:
    """Tokenise words into subwords with a fast tokenizer and map spans to class ids.

    ``labels``: the ordered entity types; type ``labels[i]`` gets class id ``i + 1``.
    A sentence whose subwords do not fit ``max_subwords`` (with [CLS] and [SEP]) keeps the
    longest prefix of whole words that fits; the words and gold spans past it are counted in
    the report (and evaluation counts those spans as missed), never dropped silently.
    """
    label_id = {t: i + 1 for i, t in enumerate(labels)}
    report = EncodeReport(sentences=len(sentences))
    cls_id, sep_id, unk_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id
    out: list[Encoded] = []
    # One batched call: fast tokenizers are much quicker over many sentences at once.
    word_lists = [list(s.words) for s in sentences]
    nonempty = [i for i, w in enumerate(word_lists) if w]
    pieces_of: dict[int, list[list[int]]] = {}
    if nonempty:
        enc = tokenizer([word_lists[i] for i in nonempty], is_split_into_words=True, add_special_tokens=False)
        for j, i in enumerate(nonempty):
            per_word: list[list[int]] = [[] for _ in word_lists[i]]
            for tok, w in zip(enc["input_ids"][j], enc.word_ids(j)):
                if w is not None:
                    per_word[w].append(tok)
            pieces_of[i] = per_word
    for i, sent in enumerate(sentences):
        per_word = pieces_of.get(i, [])
        empty = 0
        for w, p in enumerate(per_word):
            if not p:  # control character, lone combining mark...: keep the position
                per_word[w] = [unk_id]
                empty += 1
        ids, starts, ends = [cls_id], [], []
        for p in per_word:
            if len(ids) + len(p) + 1 > max_subwords:
                break
            starts.append(len(ids))
            ids.extend(p)
            ends.append(len(ids))
        ids.append(sep_id)
        L = len(starts)
        kept = tuple((s, e, label_id[t]) for s, e, t in sent.spans if e < L)
        report.multi_type_cells += len(kept) - len({(s, e) for s, e, _ in kept})
        lost = tuple(sp for sp in sent.spans if sp[1] >= L)
        if L < len(sent.words):
            report.truncated_sentences += 1
            report.dropped_words += len(sent.words) - L
            report.lost_spans += len(lost)
        report.empty_words += empty
        out.append(Encoded(np.asarray(ids, np.int32), np.asarray(starts, np.int32), np.asarray(ends, np.int32),
                           kept, len(sent.words), lost, empty))
    return out, report


def bucket(n: int, boundaries: Sequence[int]) -> int:
    """The smallest boundary >= n (n past the last boundary is an error: encode truncates)."""
    for b in boundaries:
        if n <= b:
            return b
    raise ValueError(f"length {n} exceeds the largest bucket {boundaries[-1]}")


def words_for(T: int) -> int:
    """The word bucket L of subword bucket T: room for T - 2 words ([CLS] and [SEP] aside).

    Every word has at least one subword, so any sentence of T subwords fits. One L per T, the
    same for every data set: dev evaluation in train.py and eval.py on test compile the same
    shapes (a second process finds them in JAX's persistent cache).
    """
    return bucket(max(T - 2, 1), WORD_BUCKETS)


def bucket_shapes(encoded: Sequence[Encoded]) -> dict[int, int]:
    """Subword bucket T -> word bucket L (``words_for``) for the T buckets that ``encoded`` uses.

    Keying batches on T alone keeps the number of shapes (= compilations) at the number of
    subword buckets in use.
    """
    return {T: words_for(T) for T in sorted({bucket(len(e.input_ids), SUBWORD_BUCKETS) for e in encoded})}


def batch_plan(
    encoded: Sequence[Encoded],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
) -> list[tuple[tuple[int, int], list[int]]]:
    """Group sentence indices into batches of one bucket shape each.

    Deterministic for a given (seed, epoch): a resumed run sees the same order. Returns
    ``[((T, L), [indices...]), ...]``; the last batch of a bucket may be short (``collate``
    pads it with empty rows so the shape stays fixed).
    """
    shapes = bucket_shapes(encoded)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, e in enumerate(encoded):
        T = bucket(len(e.input_ids), SUBWORD_BUCKETS)
        groups[(T, shapes[T])].append(i)
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


def collate(encoded: Sequence[Encoded], shape: tuple[int, int], batch_size: int) -> dict[str, np.ndarray]:
    """Pad sentences into one batch of fixed shape [batch_size, T] / [batch_size, L].

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids`` [B, T]; ``word_index``,
    ``word_end``, ``word_mask`` [B, L]; ``lengths`` [B]; ``gold`` [B, L, L] class ids.
    Rows past ``len(encoded)`` are empty sentences (length 0): they add nothing to the loss.
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
    for r, e in enumerate(encoded):
        n, w = len(e.input_ids), e.length
        b["input_ids"][r, :n] = e.input_ids
        b["attention_mask"][r, :n] = 1
        b["word_index"][r, :w] = e.word_index
        b["word_end"][r, :w] = e.word_end
        b["word_mask"][r, :w] = 1
        b["lengths"][r] = w
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
