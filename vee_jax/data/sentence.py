"""A sentence as the span table sees it: words and (start, end, type) cells.

``DataError`` and ``MissingDataFile`` live in ``vee_jax.errors`` and are re-exported here."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError, MissingDataFile  # noqa: F401  (their old import path)

Span = tuple[int, int, str]
"""``(start, end, type)`` over word indices, ``end`` inclusive: the table cell (start, end)."""


@dataclass(frozen=True)
class Sentence:
    """Words and entity spans of one sentence.

    A span is ``(start, end, type)`` over word indices with ``end`` INCLUSIVE, i.e. the cell
    (start, end) of the span table, ``0 <= start <= end < len(words)``. The constructor
    normalises ``spans`` to a sorted tuple without duplicates, so two sentences with the same
    entities compare equal whatever order the file listed them in. Nested spans (one inside
    another) and, if a file has them, crossing spans are kept: the reader does not judge.

    ``doc_id`` names the document the sentence belongs to, when the source says (the ``hf``
    format's ``data.hf_doc_id_column``, CoNLL's ``-DOCSTART-`` lines, a JSON record's ``doc_id``
    or the ``.doc_ids.txt`` file beside it); consecutive sentences with the same id rebuild it
    (``data.context_subwords`` reads them). ``None`` when unknown (MSRA, a file without them).
    """

    words: tuple[str, ...]
    spans: tuple[Span, ...] = ()
    doc_id: str | None = None

    def __post_init__(self) -> None:
        words = tuple(self.words)
        spans = tuple(sorted({(int(s), int(e), str(t)) for s, e, t in self.spans}))
        for s, e, t in spans:
            # The readers raise DataError with file and line before this; reaching here is a bug.
            if not 0 <= s <= e < len(words):
                raise ValueError(
                    f"span ({s}, {e}, {t!r}) is not a cell of a {len(words)}-word table")
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "spans", spans)
        if self.doc_id is not None:
            object.__setattr__(self, "doc_id", str(self.doc_id))

    def __len__(self) -> int:
        return len(self.words)

    def span_set(self) -> set[Span]:
        """The spans as a set, the form ``metrics.span_prf`` compares."""
        return set(self.spans)
