"""A sentence as the span table sees it: words and (start, end, type) cells, plus DataError."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from os import PathLike

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
    format's ``data.hf_doc_id_column``); consecutive sentences with the same id rebuild it.
    ``None`` when unknown (the file formats).
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


class DataError(ValueError):
    """A data file that cannot be read as promised; the message says where and why.

    The message is ``"<path>: <where>: <problem>"`` where ``<where>`` is ``line N`` (1-based)
    for line formats, or ``record N`` (0-based, the index in the returned list / JSON array)
    with ``(line L, column C)`` when known, e.g.
    ``data/train.json: record 12 (line 14, column 3): span [5, 3] ends before it starts``;
    or ``sentence N`` (0-based, the index among the file's sentences) for problems found after
    reading, such as an entity type outside the label set; or ``row N`` (0-based) for a row of
    a Hugging Face dataset, whose "path" is the dataset as ``config.data`` names it.
    """

    def __init__(self, path: str | PathLike[str], problem: str, *, line: int | None = None,
                 record: int | None = None, column: int | None = None, sentence: int | None = None,
                 row: int | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.line = line
        self.record = record
        self.column = column
        self.sentence = sentence
        self.row = row
        super().__init__(f"{self.path}: {self._where()}{problem}")

    def _where(self) -> str:
        if self.sentence is not None:
            return f"sentence {self.sentence}: "
        if self.row is not None:
            return f"row {self.row}: "
        pos = []
        if self.line is not None:
            pos.append(f"line {self.line}")
        if self.column is not None:
            pos.append(f"column {self.column}")
        if self.record is not None:
            return f"record {self.record}" + (f" ({', '.join(pos)})" if pos else "") + ": "
        return (", ".join(pos) + ": ") if pos else ""

    def __reduce__(self):  # keep the keyword-only fields through pickling (multiprocessing)
        return (_rebuild_data_error, (type(self), self.path, self.problem, self.line,
                                      self.record, self.column, self.sentence, self.row))


class MissingDataFile(DataError, FileNotFoundError):
    """The data file does not exist: a DataError (so ``check`` exits cleanly) and a
    FileNotFoundError (so ``except FileNotFoundError`` still works)."""

    def __init__(self, path: str | PathLike[str], problem: str, **where) -> None:
        DataError.__init__(self, path, problem, **where)
        self.filename = str(path)  # the OSError fields, for callers that read them
        self.errno = errno.ENOENT
        self.strerror = problem

    def __str__(self) -> str:  # OSError's own __str__ would print "[Errno 2] ..." instead
        return self.args[0]


def _rebuild_data_error(cls, path, problem, line, record, column, sentence=None, row=None):
    return cls(path, problem, line=line, record=record, column=column, sentence=sentence, row=row)
