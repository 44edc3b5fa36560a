"""Readers for the dataset formats: W2NER/GENIA JSON, CoNLL columns, MSRA segment/tag, and
Hugging Face datasets (``hf``, in hf.py: imported only when used, as ``datasets`` is slow to import).

Each reader returns ``list[Sentence]`` with word-level spans (``end`` inclusive, NOTES item 6)
and raises ``DataError`` naming the file, the line or record, and the problem. Files are read
as strict UTF-8 (a leading byte-order mark is dropped).
"""

from __future__ import annotations

import json
import re
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .sentence import DataError, MissingDataFile, Sentence, Span

PathArg = str | PathLike[str]

FORMATS: dict[str, str] = {
    "json": 'W2NER JSON: an array (or JSON Lines) of {"sentence": [words], '
            '"ner": [{"index": [word indices], "type": T}]}',
    "conll": "CoNLL columns: one word per line, whitespace-separated columns, a blank line "
             "between sentences, tags O/B-X/I-X (IOB1 or BIO)",
    "msra": "MSRA: one sentence per line of space-separated segment/tag items (o, nr, ns, nt)",
    "hf": "a Hugging Face dataset: a save_to_disk folder (a DatasetDict folder as FOLDER:SPLIT), a "
          ".jsonl/.json/.parquet file, or hub:NAME:SPLIT; columns tokens + ner_tags (flat) or "
          "tokens + entities [{start, end (exclusive), type}] (nested)",
}

MSRA_TYPES: dict[str, str | None] = {"o": None, "nr": "PER", "ns": "LOC", "nt": "ORG"}


# ----------------------------------------------------------------------------------------------
# Shared: strict UTF-8 text with the failure located.

def _read_text(path: PathArg, fmt: str) -> str:
    """The file's text; DataError for a missing file, a directory or bytes that are not UTF-8."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise MissingDataFile(path, f"no such file (expected {FORMATS[fmt]})") from None
    except IsADirectoryError:
        raise DataError(path, f"is a directory, not a file (expected {FORMATS[fmt]})") from None
    except OSError as err:  # permission denied, an I/O error: still a one-line message
        raise DataError(path, f"cannot be read ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        # Locate the bad byte so the user can open the file there.
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(path, f"not valid UTF-8: byte 0x{data[err.start]:02x} at byte offset "
                              f"{err.start} ({err.reason})", line=line, column=col) from None
    return text[1:] if text.startswith("\ufeff") else text


def _refuse_empty(text: str, path: PathArg, fmt: str) -> None:
    """DataError for a file with nothing but whitespace (often a failed download or export)."""
    if not text.strip(" \t\r\n"):
        raise DataError(path, f"empty file (expected {FORMATS[fmt]})")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline). Splits on \\n only (not str.splitlines,
    which would also split at \\x1c, \\x85 or \\u2028 inside a token); a final line without a
    newline is still a line."""
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()  # the empty "line" after the file's last newline
    for i, line in enumerate(parts, 1):
        yield i, line[:-1] if line.endswith("\r") else line


# ----------------------------------------------------------------------------------------------
# W2NER / GENIA JSON.

def _json_values(text: str, path: PathArg) -> Iterator[tuple[Any, int]]:
    """Yield (record, start offset) from a JSON array or a stream of JSON values (JSON Lines).

    Decoding record by record (``raw_decode``) instead of one ``json.loads`` lets a later error
    name the record's line and column, which matters for the one-line files W2NER ships.
    """
    dec = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    n = len(text)
    i = ws.match(text, 0).end()
    if i == n:
        raise DataError(path, "empty file (expected " + FORMATS["json"] + ")")

    def decode_at(pos: int, record: int) -> tuple[Any, int]:
        try:
            return dec.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise DataError(path, f"invalid JSON: {err.msg}", record=record, line=err.lineno,
                            column=err.colno) from None

    def fail(pos: int, problem: str, record: int) -> DataError:
        return _located(path, text, pos, f"invalid JSON: {problem}", record)

    def close_array(i: int, record: int) -> None:
        """``text[i]`` is the array's ``]``: only whitespace may follow it."""
        i = ws.match(text, i + 1).end()
        if i != n:
            raise fail(i, "extra data after the array", record)

    record = 0
    if text[i] == "[":  # one array of records (the W2NER files)
        i = ws.match(text, i + 1).end()
        if i < n and text[i] == "]":
            return close_array(i, record)
        while True:
            if i >= n:
                raise fail(i, "the array is not closed", record)
            value, end = decode_at(i, record)
            yield value, i
            record += 1
            i = ws.match(text, end).end()
            if i < n and text[i] == ",":
                i = ws.match(text, i + 1).end()
            elif i < n and text[i] == "]":
                return close_array(i, record)
            else:
                raise fail(i, "expected ',' or ']' after a record", record)
    else:  # JSON Lines: values separated by whitespace
        while i < n:
            value, end = decode_at(i, record)
            yield value, i
            record += 1
            i = ws.match(text, end).end()


def _json_record(rec: Any, err: Callable[[str], DataError]) -> Sentence:
    """One W2NER record -> Sentence; ``err(problem)`` builds the located DataError."""
    if not isinstance(rec, dict):
        raise err(f"expected an object, got {type(rec).__name__}")
    for key in ("sentence", "ner"):
        if key not in rec:
            raise err(f"no {key!r} key (expected {FORMATS['json']})")
    words = rec["sentence"]
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise err("'sentence' must be a list of strings")
    if not isinstance(rec["ner"], list):
        raise err("'ner' must be a list")
    spans: list[Span] = []
    for j, ent in enumerate(rec["ner"]):
        if not isinstance(ent, dict) or "index" not in ent or "type" not in ent:
            raise err(f"entity {j}: expected an object with 'index' and 'type'")
        index, typ = ent["index"], ent["type"]
        if not isinstance(typ, str) or not typ:
            raise err(f"entity {j}: 'type' must be a non-empty string, got {typ!r}")
        if not isinstance(index, list) or not all(
                isinstance(k, int) and not isinstance(k, bool) for k in index):
            raise err(f"entity {j}: 'index' must be a list of integers, got {index!r}")
        if not index:
            raise err(f"entity {j} ({typ}): empty 'index'")
        s, e = min(index), max(index)
        if s < 0 or e >= len(words):
            raise err(f"entity {j} ({typ}): index {index} out of range for a "
                      f"{len(words)}-word sentence")
        # W2NER lists the entity's words in order; a reversed list is a converter's bug.
        if index[-1] < index[0]:
            raise err(f"entity {j} ({typ}): index {index} ends before it starts (expected the "
                      f"entity's word indices in ascending order)")
        if index != sorted(index):
            raise err(f"entity {j} ({typ}): index {index} is not in ascending order")
        # W2NER lists every word of the entity; a gap would not be a span (table cell).
        if len(set(index)) != e - s + 1:
            raise err(f"entity {j} ({typ}): index {index} is not contiguous")
        spans.append((s, e, typ))
    doc = rec.get("doc_id")
    if doc is not None and (isinstance(doc, bool) or not isinstance(doc, (str, int))):
        raise err(f"'doc_id' must be a string or an integer, got {doc!r}")
    return Sentence(tuple(words), tuple(spans), doc_id=doc)


def read_json(path: PathArg) -> list[Sentence]:
    """Read W2NER/GENIA JSON: an array of ``{"sentence": [...], "ner": [{"index", "type"}]}``.

    JSON Lines (one such object per line) is accepted too. ``index`` lists contiguous word
    indices in ascending order; the span is ``(first, last, type)``. Extra keys are ignored. Sentences that are
    empty or have no entity are kept. Raises DataError naming the file, the (0-based) record
    and its line/column.

    Documents (for ``data.context_subwords``): a record's ``doc_id`` key, else line k of the file
    ``doc_ids_file(path)`` beside it (``train.doc_ids.txt`` for ``train.json``, as shipped with
    GENIA) when there is one; otherwise ``doc_id`` is None.
    """
    text = _read_text(path, "json")
    out: list[Sentence] = []
    for k, (rec, pos) in enumerate(_json_values(text, path)):
        out.append(_json_record(rec, lambda problem: _located(path, text, pos, problem, k)))
    return _with_doc_ids(out, path)


def doc_ids_file(path: PathArg) -> Path:
    """The document ids beside a JSON split: ``train.doc_ids.txt`` for ``train.json`` (one id a line)."""
    return Path(path).with_suffix(".doc_ids.txt")


def _with_doc_ids(sentences: list[Sentence], path: PathArg) -> list[Sentence]:
    """``sentences`` with the ids of ``doc_ids_file(path)`` where a record gave none (unchanged
    without that file); DataError when its line count is not the number of records."""
    side = doc_ids_file(path)
    if not side.is_file():
        return sentences
    ids = [line.strip() for _, line in _lines(_read_text(side, "json"))]
    if len(ids) != len(sentences):
        raise DataError(side, f"{len(ids)} document ids, but {Path(path).name} has {len(sentences)} records "
                              f"(expected one id a line, line k for record k)")
    return [s if s.doc_id is not None or not d else Sentence(s.words, s.spans, doc_id=d)
            for s, d in zip(sentences, ids)]


def _located(path: PathArg, text: str, pos: int, problem: str, record: int) -> DataError:
    """DataError at character offset ``pos``; line/column are computed only on failure
    because counting newlines for every record would be quadratic."""
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return DataError(path, problem, record=record, line=line, column=col)


# ----------------------------------------------------------------------------------------------
# CoNLL columns (IOB1 as in CoNLL-2003, or BIO).

_TAG = re.compile(r"(?:O|([BI])-(\S+))\Z")
_COLUMN_SEP = re.compile(r"[ \t]+")


class TagError(ValueError):
    """A tag that cannot be read; the caller adds the file and line (or dataset and row)."""


class TagDecoder:
    """Tags ``O`` / ``B-X`` / ``I-X``, one word at a time, -> spans (shared by CoNLL and ``hf``).

    scheme ``"iob1"`` (CoNLL-2003): ``I-X`` continues an X entity, or starts one after ``O`` or
    another type; ``B-X`` always starts a new entity (it marks an X right after an X).
    scheme ``"bio"``: ``B-X`` starts; ``I-X`` must follow ``B-X``/``I-X``; anything else raises
    TagError, or with ``lenient=True`` is read as ``B-X`` and counted in ``repairs``.
    ``add`` each word's tag, then ``close`` at the sentence end to get its spans.
    """

    def __init__(self, scheme: str = "iob1", lenient: bool = False) -> None:
        if scheme not in ("iob1", "bio"):
            raise ValueError(f"scheme must be 'iob1' or 'bio', got {scheme!r}")
        self.scheme, self.lenient = scheme, lenient
        self.repairs = 0
        self._spans: list[Span] = []
        self._cur: list[Any] | None = None  # the open entity: [start, end, type]
        self._n = 0  # words of the current sentence so far

    def add(self, tag: str) -> None:
        m = _TAG.match(tag) if isinstance(tag, str) else None
        if m is None:
            raise TagError(f"tag {tag!r} is not O, B-TYPE or I-TYPE")
        i, cur = self._n, self._cur
        self._n += 1
        prefix, typ = m.group(1), m.group(2)
        if prefix is None:  # O
            self._end_entity()
            return
        continues = prefix == "I" and cur is not None and cur[2] == typ
        if prefix == "I" and not continues and self.scheme == "bio":
            if not self.lenient:
                after = "O" if cur is None else f"a {cur[2]} entity"
                if i == 0:
                    after = "the sentence start"
                raise TagError(f"BIO tag {tag} after {after} (expected B-{typ}; config.data.lenient=True "
                               f"or check --lenient reads it as B-{typ})")
            self.repairs += 1
        if continues:
            cur[1] = i
        else:  # B-X, or an I-X that starts an entity (IOB1, or a lenient BIO repair)
            self._end_entity()
            self._cur = [i, i, typ]

    def _end_entity(self) -> None:
        if self._cur is not None:
            self._spans.append((self._cur[0], self._cur[1], self._cur[2]))
            self._cur = None

    def close(self) -> list[Span]:
        """The current sentence's spans; the decoder starts a new sentence."""
        self._end_entity()
        spans, self._spans, self._n = self._spans, [], 0
        return spans


def read_conll(path: PathArg, scheme: str = "iob1", token_column: int = 0,
               tag_column: int = -1, lenient: bool = False,
               stats: dict[str, int] | None = None) -> list[Sentence]:
    """Read a CoNLL column file into sentences with spans.

    Columns are separated by spaces or tabs (only those: a no-break space inside a token stays
    in it); a blank line ends a sentence; a line starting with ``-DOCSTART-`` separates
    documents and is not a sentence (anywhere, including the last line without a newline, as
    in the CoNLL-2003 copy here). A sentence's ``doc_id`` is ``doc<k>``, k counting those lines
    from 0 (None before the first one, and in a file without any). Tags are ``O``, ``B-X`` or ``I-X``.

    scheme ``"iob1"`` (CoNLL-2003): ``I-X`` continues an X entity, or starts one after ``O`` or
    another type; ``B-X`` always starts a new entity (it marks an X right after an X).
    scheme ``"bio"``: ``B-X`` starts; ``I-X`` must follow ``B-X``/``I-X``; anything else is a
    DataError, or with ``lenient=True`` is read as ``B-X`` and counted as a repair.

    If ``stats`` is a dict it receives ``repairs`` (lenient BIO fixes), ``documents``
    (``-DOCSTART-`` lines) and ``lines``.
    """
    if scheme not in ("iob1", "bio"):
        raise ValueError(f"scheme must be 'iob1' or 'bio', got {scheme!r}")
    text = _read_text(path, "conll")
    _refuse_empty(text, path, "conll")
    sentences: list[Sentence] = []
    docs = n_lines = 0
    words: list[str] = []
    ncols = 0
    tags = TagDecoder(scheme, lenient)

    def flush() -> None:
        nonlocal words
        spans = tags.close()
        if words:  # the document: doc<k> after the (k+1)-th -DOCSTART- line; None before any
            sentences.append(Sentence(tuple(words), tuple(spans), doc_id=f"doc{docs - 1}" if docs else None))
        words = []

    for lineno, raw in _lines(text):
        n_lines = lineno
        line = raw.strip(" \t")
        if not line:
            flush()
            continue
        if line.startswith("-DOCSTART-"):
            flush()  # a sentence that the marker ends belongs to the document before it
            docs += 1
            continue
        cols = _COLUMN_SEP.split(line)
        if not words:
            ncols = len(cols)
            for name, c in (("token_column", token_column), ("tag_column", tag_column)):
                if not -len(cols) <= c < len(cols):
                    raise DataError(path, f"{len(cols)} column(s), too few for {name}={c}",
                                    line=lineno)
        elif len(cols) != ncols:
            raise DataError(path, f"{len(cols)} columns, but this sentence's first line has "
                                  f"{ncols}", line=lineno)
        try:
            tags.add(cols[tag_column])
        except TagError as err:
            raise DataError(path, str(err), line=lineno) from None
        words.append(cols[token_column])
    flush()
    if stats is not None:
        stats.update(repairs=tags.repairs, documents=docs, lines=n_lines)
    return sentences


# ----------------------------------------------------------------------------------------------
# MSRA (SIGHAN 2006) segment/tag lines.

def read_msra(path: PathArg) -> list[Sentence]:
    """Read MSRA NER: each line is space-separated ``segment/tag`` items, tags o/nr/ns/nt.

    The words are the CHARACTERS of the concatenated segments (the corpus is character
    level). Each nr/ns/nt segment is one entity (PER/LOC/ORG) over its characters; two
    adjacent segments with the same tag are two entities, as the README says. An item is
    split at its LAST ``/`` so a segment may contain ``/``. Blank lines are skipped, so the
    sentence index is not the line number. Items are separated by ASCII spaces only: the
    full-width space U+3000 is a character of the text.
    """
    text = _read_text(path, "msra")
    _refuse_empty(text, path, "msra")
    out: list[Sentence] = []
    for lineno, line in _lines(text):
        if not line.strip(" \t"):
            continue
        chars: list[str] = []
        spans: list[Span] = []
        for item in line.split(" "):
            if not item:
                continue  # the trailing space and any double space
            seg, slash, tag = item.rpartition("/")
            if not slash or not seg:
                raise DataError(path, f"item {item!r} is not segment/tag", line=lineno)
            if tag not in MSRA_TYPES:
                raise DataError(path, f"item {item!r}: tag {tag!r} is not one of "
                                      f"{', '.join(MSRA_TYPES)}", line=lineno)
            typ = MSRA_TYPES[tag]
            if typ is not None:
                spans.append((len(chars), len(chars) + len(seg) - 1, typ))
            chars.extend(seg)
        out.append(Sentence(tuple(chars), tuple(spans)))
    return out


# ----------------------------------------------------------------------------------------------
# Dispatch and small helpers.

def read_hf(spec: PathArg, **options: Any) -> list[Sentence]:
    """Read a Hugging Face dataset (``format="hf"``): see ``vee_jax.data.hf.read_hf``."""
    from .hf import read_hf as read  # datasets takes a second to import: only for this format

    return read(str(spec), **options)


READERS: dict[str, Callable[..., list[Sentence]]] = {
    "json": read_json, "conll": read_conll, "msra": read_msra, "hf": read_hf}


def read_split(path: PathArg, format: str, **options: Any) -> list[Sentence]:
    """Read one split with the reader for ``format`` (``json``, ``conll``, ``msra`` or ``hf``);
    ``options`` go to that reader (e.g. ``scheme="bio"`` for CoNLL). For ``hf`` the "path" is
    a dataset as hf.py names them (a folder, ``folder:split``, a file or ``hub:name:split``)."""
    if format not in READERS:
        raise ValueError(f"unknown data format {format!r}; expected one of {', '.join(READERS)}")
    if format != "hf" and not Path(path).exists():
        raise MissingDataFile(path, f"no such file (expected {format} format: {FORMATS[format]})")
    return READERS[format](path, **options)


def collect_labels(sentences: Sequence[Sentence]) -> list[str]:
    """The entity types used in ``sentences``, sorted (class id = position + 1; 0 = none)."""
    return sorted({t for sent in sentences for _, _, t in sent.spans})


def holdout_split(sentences: Sequence[Sentence], fraction: float,
                  seed: int) -> tuple[list[Sentence], list[Sentence]]:
    """Split off ``round(fraction * n)`` sentences as dev, chosen at random with ``seed``.

    Deterministic for a given (n, fraction, seed); both parts keep the file order (useful
    for document context). For MSRA, which has no dev split (see its README).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    n = len(sentences)
    n_dev = int(round(fraction * n))
    dev_idx = np.random.default_rng(seed).permutation(n)[:n_dev]
    is_dev = np.zeros(n, dtype=bool)
    is_dev[dev_idx] = True
    train = [s for s, d in zip(sentences, is_dev) if not d]
    dev = [s for s, d in zip(sentences, is_dev) if d]
    return train, dev
