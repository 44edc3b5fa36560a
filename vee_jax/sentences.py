"""Raw text -> sentences as character spans, by a rule per data format (as words.py cuts words).

A document of any length is cut into sentences first, then each sentence into words
(``words.split_words``): the model was trained on sentences. The rules (docs/sentences.md has
the study behind the choice, ``bench/splitters.py``):

* ``pysbd``: pySBD's rule-based English segmenter (Golden Rules; abbreviations such as
  ``e.g.``, ``i.e.``, ``et al.``, ``Fig.``, numbers ``1.5``, initials). Best boundary F1 on the
  GENIA abstracts; the default for GENIA-like text (``data.format`` json, hf).
* ``lines``: one sentence per line (blank lines are skipped). The default for CoNLL-2003,
  whose headlines and datelines (``LONDON 1996-08-30``) end without punctuation: no
  punctuation-based splitter can find them, a line break can.
* ``lines+pysbd``: split at line breaks, then by pySBD within each line (a line holding a
  paragraph of several sentences).
* ``zh``: Chinese text (MSRA): after ``。！？`` (and ``!?``, with any closing quotes or brackets
  that follow) and at line breaks. No library: the rule is this one line of regex.
* ``none``: the text is one sentence.

Spans are ``[start, end)`` into the original string: ``text[start:end]`` is a sentence with no
whitespace at either end; spans are in text order and do not overlap, and every non-space
character of ``text`` lies in exactly one span (a library that drops or rewrites a character
cannot lose it: its output is aligned back to the text, ``align``).
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable, Iterable

Spans = list[tuple[int, int]]
"""``[(start, end), ...]``: ``text[start:end]`` is one sentence, ``end`` exclusive."""

LIBRARY_RULES = ("pysbd",)
RULES = ("pysbd", "lines", "lines+pysbd", "zh", "none")
RULE_OF_FORMAT = {"json": "pysbd", "hf": "pysbd", "conll": "lines", "msra": "zh"}
"""The sentence rule for each ``data.format`` (docs/sentences.md): GENIA-like abstracts by pySBD,
CoNLL-2003 news one sentence per line, MSRA Chinese at 。！？ and line breaks."""

_ZH_END = re.compile(r"[。！？!?]+[”’」』）)》〉\"']*")
_LINE_BREAK = re.compile(r"\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _trimmed(text: str, cuts: Iterable[int]) -> Spans:
    """The pieces of ``text`` between consecutive ``cuts`` (and its ends), whitespace trimmed,
    empty pieces dropped."""
    spans: Spans = []
    bounds = sorted({0, len(text), *(c for c in cuts if 0 < c < len(text))})
    for a, b in zip(bounds, bounds[1:]):
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            spans.append((a, b))
    return spans


def _map_cuts(source: str, target: str, cuts: list[int]) -> list[int]:
    """Carry cut positions in ``source`` over to ``target``, the same text with a few characters
    changed (a library that rewrote some): through the matching blocks of the two strings, a cut
    inside a changed stretch moves to the next unchanged character."""
    from difflib import SequenceMatcher

    blocks = SequenceMatcher(None, source, target, autojunk=False).get_matching_blocks()
    starts = [a for a, _, _ in blocks]
    out = []
    for c in cuts:
        i = bisect.bisect_right(starts, c) - 1
        a, b, size = blocks[i] if i >= 0 else (0, 0, 0)
        if i >= 0 and c <= a + size:
            out.append(b + c - a)
        else:  # in a stretch the library changed: the next matching block (or the end)
            out.append(blocks[i + 1][1] if i + 1 < len(blocks) else len(target))
    return out


def align(text: str, pieces: Iterable[str]) -> Spans:
    """Spans of ``text`` for the sentence strings a library returned, in order.

    Only non-space characters are matched, so a library may change whitespace freely (pySBD
    keeps or drops trailing spaces, some join lines); if it changed other characters too, the
    cuts are carried over by a diff (``_map_cuts``). Every non-space character of ``text`` ends
    up in exactly one span, whatever the library did.
    """
    where = [i for i, c in enumerate(text) if not c.isspace()]
    if not where:
        return []
    stream = "".join(text[i] for i in where)
    got, cuts, n = [], [], 0
    for p in pieces:
        chars = "".join(c for c in p if not c.isspace())
        got.append(chars)
        n += len(chars)
        cuts.append(n)
    if "".join(got) != stream:
        cuts = _map_cuts("".join(got), stream, cuts)
    spans, prev = [], 0
    for c in sorted({min(max(c, 0), len(where)) for c in cuts} | {len(where)}):
        if c > prev:
            spans.append((where[prev], where[c - 1] + 1))
            prev = c
    return spans


@functools.lru_cache(maxsize=None)
def _pysbd(language: str = "en"):
    try:
        import pysbd
    except ImportError as e:  # pragma: no cover - pysbd is a dependency
        raise ImportError("the sentence rule 'pysbd' needs pySBD: pip install pysbd") from e
    return pysbd.Segmenter(language=language, clean=False)


def _by_pysbd(text: str) -> Spans:
    return align(text, _pysbd().segment(text))


def _by_lines(text: str, within: Callable[[str], Spans] | None = None) -> Spans:
    """One span per non-blank line, or ``within``'s spans of each line."""
    spans: Spans = []
    start = 0
    for m in [*_LINE_BREAK.finditer(text), None]:
        end = m.start() if m else len(text)
        line = text[start:end]
        if within is None:
            spans.extend((start + a, start + b) for a, b in _trimmed(line, ()))
        elif line.strip():
            spans.extend((start + a, start + b) for a, b in within(line))
        start = m.end() if m else end
    return spans


def _by_zh(text: str) -> Spans:
    return _trimmed(text, [m.end() for m in _ZH_END.finditer(text)] + [m.start() for m in _LINE_BREAK.finditer(text)])


_RULE: dict[str, Callable[[str], Spans]] = {
    "pysbd": _by_pysbd,
    "lines": _by_lines,
    "lines+pysbd": lambda text: _by_lines(text, _by_pysbd),
    "zh": _by_zh,
    "none": lambda text: _trimmed(text, ()),
}


def split_sentences(text: str, rule: str = "pysbd") -> Spans:
    """Cut ``text`` into sentences by ``rule`` (see the module docstring); ``[(start, end), ...]``.

    ``split_sentences("IL-2 binds, e.g. in T cells. It acts.")`` gives ``[(0, 28), (29, 37)]``:
    ``IL-2 binds, e.g. in T cells.`` and ``It acts.``. Empty or whitespace-only text has no
    sentence. The splitting library is imported on first use, so ``import vee_jax`` stays fast.
    """
    if rule not in _RULE:
        raise ValueError(f"unknown sentence rule {rule!r}; expected one of {', '.join(RULES)}")
    if not text.strip():
        return []
    return _RULE[rule](text)


__all__ = ["LIBRARY_RULES", "RULES", "RULE_OF_FORMAT", "Spans", "align", "split_sentences"]
