"""Sentences longer than the model's subword limit: overlapping word windows, merged back.

No word is ever cut. A sentence whose subwords (with [CLS] and [SEP]) exceed ``max_subwords``
becomes several overlapping windows of whole words (``plan_windows``); each window is an
ordinary row for the model, the engine and training. Their span tables are merged into one
table over the sentence's words (``merge_tables``) before decoding, so nested or overlapping
spans found by two windows are decided once, by one window.

**Stride: half a window.** Each next window starts at the middle word of the previous one
(``start + (end - start) // 2``) and reaches as far as the limit allows. With windows of about
W words every span of up to about W/2 words lies wholly inside some window, at least about
(W/2 - its length)/2 words from that window's edges: at 512 subwords (about 300-500 words a
window) an entity of a few words always has some hundred words of context on both sides. The
price is about two encoder passes per word of a long sentence, paid by long sentences only;
a smaller overlap would be cheaper but put more spans near an edge, where a window sees
context on one side only.

**Which window decides a cell.** Cell (i, j) (span from word i to word j, inclusive) is
decided by the window ``[a, b)`` that holds it (``a <= i <= j < b``) farthest from an edge,
distance ``min(i - a, b - 1 - j)``; ties go to the earlier window (``deciding_window``).
A span that lies in no single window (longer than the overlap: hundreds of words) cannot be
predicted: its cell is "no entity" (class 0, probability 1); ``unreachable_spans`` lists such
gold spans, and the encoder counts them in its report (they count as missed in evaluation).

**Exit layer.** A windowed sentence's exit layer is the max over its windows
(``sentence_exit_layer``): the sentence is done when its last window is. Each window's table
is the one at that window's own exit, as the engine gives it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

Window = tuple[int, int]
"""``(start, end)``: the words ``start .. end - 1`` of a sentence."""


def plan_windows(sizes: Sequence[int], budget: int) -> list[Window]:
    """Overlapping word windows whose subwords fit ``budget`` (= max_subwords - 2 for [CLS], [SEP]).

    sizes: [n] subwords of each word (a word larger than ``budget`` is a window alone; the
    encoder clips its subwords). Returns ``[(start, end), ...]``, starts increasing, ends
    increasing, covering words 0..n-1; ``[(0, n)]`` when the sentence fits (also for n = 0).
    The next window starts at the middle word of the previous one (module docstring).
    """
    n = len(sizes)
    if sum(sizes) <= budget:
        return [(0, n)]
    windows: list[Window] = []
    start = 0
    while True:
        end = _reach(sizes, start, budget)
        if not windows or end > windows[-1][1]:  # a window adding no word is skipped
            windows.append((start, end))
        if end == n:
            return windows
        start += max(1, (end - start) // 2)


def _reach(sizes: Sequence[int], start: int, budget: int) -> int:
    """The largest end > start with ``sum(sizes[start:end]) <= budget`` (start + 1 at least)."""
    total, end = 0, start
    while end < len(sizes) and total + sizes[end] <= budget:
        total += sizes[end]
        end += 1
    return max(end, start + 1)


def deciding_window(windows: Sequence[Window], n: int) -> np.ndarray:
    """Which window decides each cell: int [n, n], -1 where no window holds the span (and i > j).

    Cell (i, j) goes to the window ``[a, b)`` with ``a <= i <= j < b`` that maximises
    ``min(i - a, b - 1 - j)``; ties to the earlier window.
    """
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    best = np.full((n, n), -1, np.int64)
    best_d = np.full((n, n), -1, np.int64)
    for k, (a, b) in enumerate(windows):
        d = np.where((a <= i) & (i <= j) & (j < b), np.minimum(i - a, b - 1 - j), -1)
        better = d > best_d  # strict: a tie keeps the earlier window
        best[better], best_d[better] = k, d[better]
    return best


def merge_tables(tables: Sequence[np.ndarray], windows: Sequence[Window], n: int) -> np.ndarray:
    """The windows' tables as one table over the sentence's ``n`` words.

    tables: window k's table ``[..., l_k, l_k, K]`` with ``l_k = end_k - start_k`` (leading axes,
    e.g. the exits ``M``, shared). Returns ``[..., n, n, K]`` float32: each cell copied from its
    ``deciding_window``; cells no window decides are "no entity" (class 0, probability 1).
    """
    if len(tables) == 1 and windows[0] == (0, n):
        return np.asarray(tables[0], np.float32)
    lead, K = tables[0].shape[:-3], tables[0].shape[-1]
    out = np.zeros((*lead, n, n, K), np.float32)
    out[..., 0] = 1.0
    owner = deciding_window(windows, n)
    for k, ((a, b), t) in enumerate(zip(windows, tables)):
        mine = (owner[a:b, a:b] == k)[:, :, None]  # [l, l, 1]
        view = out[..., a:b, a:b, :]
        view[...] = np.where(mine, np.asarray(t, np.float32), view)
    return out


def sentence_exit_layer(window_exits: Sequence[int]) -> int:
    """A windowed sentence's exit layer: the max over its windows (it is done when its last window is)."""
    return int(max(window_exits))


def window_spans(spans: Sequence[tuple[int, int, int]], window: Window) -> tuple[tuple[int, int, int], ...]:
    """The spans ``(start, end, class)`` lying wholly inside ``window``, in the window's word indices.

    A window's gold table: a span crossing the window's edge is not in it (it is learned in a
    window that holds it).
    """
    a, b = window
    return tuple((s - a, e - a, c) for s, e, c in spans if a <= s and e < b)


def unreachable_spans(spans: Sequence[tuple], windows: Sequence[Window]) -> tuple:
    """The spans ``(start, end, ...)`` that lie in no single window: they cannot be predicted."""
    return tuple(sp for sp in spans if not any(a <= sp[0] and sp[1] < b for a, b in windows))


def sentence_rows(offsets: Sequence[int]) -> list[list[int]]:
    """Group rows into sentences: rows ``[[i, ...], ...]``; a sentence starts at each offset 0.

    offsets: [R] the first word of each row in its sentence (``Encoded.offset``); a sentence's
    windows are consecutive rows, its first one at offset 0, so concatenated encodings group
    correctly.
    """
    groups: list[list[int]] = []
    for r, off in enumerate(offsets):
        if off == 0 or not groups:
            groups.append([r])
        else:
            groups[-1].append(r)
    return groups


class Gather:
    """Rows' results arriving in any order, handed back per sentence once all its windows are in.

    ``add(row, value)`` returns ``[(sentence, [values of its rows, in window order]), ...]``
    for the sentences it completes (at most one), so a caller keeps only unfinished sentences.
    """

    def __init__(self, offsets: Sequence[int]):
        self.groups = sentence_rows(offsets)
        self.sentence_of = {r: s for s, rows in enumerate(self.groups) for r in rows}
        self.pending: dict[int, dict[int, object]] = {}

    def add(self, row: int, value) -> list[tuple[int, list]]:
        s = self.sentence_of[row]
        got = self.pending.setdefault(s, {})
        got[row] = value
        if len(got) < len(self.groups[s]):
            return []
        del self.pending[s]
        return [(s, [got[r] for r in self.groups[s]])]


__all__ = ["Gather", "Window", "deciding_window", "merge_tables", "plan_windows", "sentence_exit_layer",
           "sentence_rows", "unreachable_spans", "window_spans"]
