"""Raw text -> words with character offsets, by the rule the training data was tokenised with.

Tables are over words (NOTES item 6), so raw text must be cut into words the way the training
data was, or the model sees word shapes it never saw. Three rules:

* ``ptb`` (GENIA, CoNLL-2003: ``data.format`` json or conll). Split on whitespace, then peel
  punctuation off the ends of each piece, one character at a time, while more than one
  character is left: a trailing ``, ; : ! ?``; a trailing ``.`` unless the piece is an
  abbreviation of single letters and dots (``U.S.``, ``e.g.``); a bracket ``( [ {`` at the start
  or ``) ] }`` at the end when the piece does not hold its partner (``(IL)-1``, ``Ca(2+)`` and
  ``mechanism(s)`` stay whole); a double quote at either end when the piece holds an odd number
  of them. Everything inside a piece stays: hyphens (``IL-2``, ``NF-kappa``, ``T-cell``),
  decimal points and commas (``PU.1``, ``1,458``), slashes, ``+``, apostrophes (``5'``,
  ``Burkitt's``). GENIA words are PTB-like tokens with hyphens kept inside words, which this
  rule reproduces; the BERT pre-tokenizer would split ``IL-2`` into ``IL``, ``-``, ``2``,
  shapes the model was not trained on. Measured on the shipped GENIA sample (README):
  detokenised text is cut back into the GENIA words for most sentences.
* ``chars`` (MSRA, ``data.format`` msra): every non-space character is a word, as in training.
* ``whitespace``: split on whitespace only (text that is already tokenised).

Offsets are ``[start, end)`` into the original string, so ``text[start:end]`` is the word.
"""

from __future__ import annotations

import re

Word = tuple[str, int, int]
"""``(word, start, end)``: ``text[start:end] == word``, ``end`` exclusive as in a Python slice."""

RULES = ("ptb", "chars", "whitespace")
RULE_OF_FORMAT = {"json": "ptb", "conll": "ptb", "msra": "chars", "hf": "ptb"}
"""The rule that matches how each ``data.format`` is tokenised."""

_ABBREVIATION = re.compile(r"(?:[A-Za-z]\.){2,}")
_TRAILING = ",;:!?"
_PARTNER = {")": "(", "]": "[", "}": "{", "(": ")", "[": "]", "{": "}"}


def _encloses(body: str) -> bool:
    """Whether ``body``'s opening bracket is closed by its last character: ``(IL-2)``, not ``(IL)-1``."""
    depth = 0
    for i, c in enumerate(body):
        depth += (c == body[0]) - (c == _PARTNER[body[0]])
        if depth == 0:
            return i == len(body) - 1
    return False


def _peel(piece: str) -> list[tuple[int, int]]:
    """Cut one whitespace-free piece into ``[start, end)`` parts (relative to the piece), PTB-like."""
    s, e = 0, len(piece)
    lead: list[tuple[int, int]] = []
    trail: list[tuple[int, int]] = []
    while e - s > 1:
        body, last, first = piece[s:e], piece[e - 1], piece[s]
        if (last in _TRAILING or (last == "." and not _ABBREVIATION.fullmatch(body))
                or (last in ")]}" and body.count(_PARTNER[last]) < body.count(last))
                or (last == '"' and body.count('"') % 2 == 1)):
            trail.append((e - 1, e))
            e -= 1
        elif ((first in "([{" and (body.count(_PARTNER[first]) < body.count(first) or _encloses(body)))
              or (first == '"' and body.count('"') % 2 == 1)):
            lead.append((s, s + 1))
            s += 1
        else:
            break
    return lead + [(s, e)] + trail[::-1]


def split_words(text: str, rule: str = "ptb") -> list[Word]:
    """Cut ``text`` into words with character offsets by ``rule`` (see the module docstring).

    Returns ``[(word, start, end), ...]`` in text order with ``text[start:end] == word``; no word
    is empty or holds whitespace. ``split_words("IL-2 expression (in T cells).")`` gives
    ``IL-2``, ``expression``, ``(``, ``in``, ``T``, ``cells``, ``)``, ``.``.
    """
    if rule not in RULES:
        raise ValueError(f"unknown word rule {rule!r}; expected one of {', '.join(RULES)}")
    if rule == "chars":
        return [(c, i, i + 1) for i, c in enumerate(text) if not c.isspace()]
    words: list[Word] = []
    for m in re.finditer(r"\S+", text):
        parts = _peel(m.group()) if rule == "ptb" else [(0, len(m.group()))]
        words.extend((text[m.start() + a:m.start() + b], m.start() + a, m.start() + b) for a, b in parts)
    return words


__all__ = ["RULES", "RULE_OF_FORMAT", "Word", "split_words"]
