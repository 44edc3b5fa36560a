"""Hugging Face ``datasets`` as a data source (``config.data.format = "hf"``): rows -> Sentences.

A split names one of (docs/data_hf.md has a worked example):

* ``path/to/folder``: a ``Dataset`` written by ``save_to_disk``;
* ``path/to/folder:train``: one split of a ``DatasetDict`` written by ``save_to_disk`` (the text
  after the LAST ``:`` is the split; the folder alone lists the splits in the error);
* ``path/to/file.jsonl`` / ``.json`` / ``.parquet``: a local file, read by ``datasets.load_dataset``;
* ``hub:owner/name:split``: a Hub dataset (online machines only; ``data.hf_config`` names its
  configuration). ``datasets`` >= 4 no longer runs loading scripts, so only Hub sets stored as
  data files (Parquet, JSON, CSV, Arrow) load; script-only sets must be converted first.

Two layouts, chosen by the columns present:

* flat: ``tokens`` and ``ner_tags`` (one tag per token). Integer tags are decoded through the
  column's ``ClassLabel`` names when it has them, otherwise through ``data.tag_names``; string
  tags are read as they are (and must be in ``data.tag_names`` when it is given). The tags are
  ``O`` / ``B-X`` / ``I-X`` under ``data.scheme`` (``iob1`` or ``bio``) exactly as in CoNLL files
  (``readers.TagDecoder``).
* nested: ``tokens`` and ``entities``, a list of ``{start, end, type}`` records per row with
  ``end`` EXCLUSIVE (``tokens[start:end]`` is the entity, as a Python slice; the Sentence's span
  is ``(start, end - 1, type)``). ``type`` is a string, or an integer with ``ClassLabel`` names.

An optional document-id column (``data.hf_doc_id_column``) goes to ``Sentence.doc_id``. Column
names are ``config.data.hf_*_column``. A bad row raises DataError naming the dataset, the row
(0-based) and the problem, as the file readers do.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import datasets

from .readers import FORMATS, TagDecoder, TagError
from .sentence import DataError, MissingDataFile, Sentence, Span

DESCRIPTION = FORMATS["hf"]

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
HUB_PREFIX = "hub:"


# ----------------------------------------------------------------------------------------------
# Loading: the name in config.data -> a datasets.Dataset.

@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No ``datasets`` progress bars while loading (train.py logs its own progress)."""
    was_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_on:
            datasets.enable_progress_bars()


def load(spec: str, hub_config: str = "") -> datasets.Dataset:
    """The ``datasets.Dataset`` that ``spec`` names (see the module docstring for the forms).

    Raises MissingDataFile for a local path that does not exist and DataError for anything else
    that cannot be loaded (a folder that is not a saved dataset, a DatasetDict without a split,
    an unknown split, a Hub set that cannot be reached), each naming ``spec``.
    """
    with _quiet():
        return _load(str(spec), hub_config)


def _load(spec: str, hub_config: str) -> datasets.Dataset:
    if spec.startswith(HUB_PREFIX):
        return _load_hub(spec, hub_config)
    path, split = Path(spec).expanduser(), None
    if not path.exists() and ":" in spec:
        head, _, tail = spec.rpartition(":")
        if Path(head).expanduser().exists():
            path, split = Path(head).expanduser(), tail
    if not path.exists():
        raise MissingDataFile(spec, f"no such file or folder (expected {DESCRIPTION})")
    if path.is_dir():
        return _load_folder(spec, path, split)
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DataError(spec, f"a {path.suffix or 'suffix-less'} file: the hf format reads "
                              f"{', '.join(FILE_BUILDERS)} files and save_to_disk folders")
    if split is not None:
        raise DataError(spec, f"a {path.suffix} file is one split: drop ':{split}'")
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # noqa: BLE001 - pyarrow and datasets raise many kinds; one line for the user
        raise DataError(spec, f"cannot be read as {builder} by datasets.load_dataset ({_first_line(err)})") from None


def _load_folder(spec: str, path: Path, split: str | None) -> datasets.Dataset:
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(spec, "is a folder but not one written by Dataset.save_to_disk or "
                              "DatasetDict.save_to_disk") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = ", ".join(loaded)
        if split is None:
            raise DataError(spec, f"is a DatasetDict folder: name the split as {spec}:SPLIT (splits: {names})")
        if split not in loaded:
            raise DataError(spec, f"no split {split!r} in this DatasetDict (splits: {names})")
        return loaded[split]
    if split is not None:
        raise DataError(spec, f"{path} is a Dataset folder (one split), not a DatasetDict: drop ':{split}'")
    return loaded


def _load_hub(spec: str, hub_config: str) -> datasets.Dataset:
    name, _, split = spec[len(HUB_PREFIX):].rpartition(":")
    if not name or not split:
        raise DataError(spec, "a Hub dataset is named hub:NAME:SPLIT, e.g. hub:eriktks/conll2003:train "
                              "(its configuration goes in config.data.hf_config)")
    try:
        return datasets.load_dataset(name, hub_config or None, split=split)
    except Exception as err:  # noqa: BLE001 - offline, unknown name, a script-only set: one line
        raise DataError(spec, f"cannot load {name!r} (configuration {hub_config or 'default'!r}, split "
                              f"{split!r}) from the Hub: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


# ----------------------------------------------------------------------------------------------
# Rows -> Sentences.

def _names_of(feature: Any) -> list[str] | None:
    """The ClassLabel names of a column's items (``List(ClassLabel)``, ``Sequence(ClassLabel)``)."""
    inner = getattr(feature, "feature", feature)
    return list(inner.names) if isinstance(inner, datasets.ClassLabel) else None


def _entity_type_names(feature: Any) -> list[str] | None:
    """ClassLabel names of the ``type`` field of an entities column, if it has them."""
    inner = getattr(feature, "feature", feature)  # List({...}) or Sequence({...}) -> the record
    if isinstance(inner, dict) and "type" in inner:
        return _names_of(inner["type"])
    return None


def _int_items(feature: Any) -> bool:
    inner = getattr(feature, "feature", feature)
    return isinstance(inner, datasets.Value) and inner.dtype.startswith(("int", "uint"))


def read_hf(spec: str, *, scheme: str = "iob1", lenient: bool = False, tag_names: Sequence[str] = (),
            tokens_column: str = "tokens", tags_column: str = "ner_tags", entities_column: str = "entities",
            doc_id_column: str = "", hf_config: str = "", stats: dict[str, int] | None = None) -> list[Sentence]:
    """Read the dataset ``spec`` names into sentences (flat or nested layout, module docstring).

    ``stats`` (a dict) receives ``repairs`` (lenient BIO fixes), ``rows`` and ``documents``
    (distinct document ids; 0 without a document-id column).
    """
    ds = load(spec, hf_config)
    cols = ds.column_names
    features = ds.features

    def need(column: str, what: str, field: str) -> None:
        if column not in cols:
            raise DataError(spec, f"no {column!r} column for the {what} (columns: {', '.join(cols)}; "
                                  f"config.data.{field} names it)")

    need(tokens_column, "words", "hf_tokens_column")
    flat = bool(tags_column) and tags_column in cols
    nested = bool(entities_column) and entities_column in cols
    if flat and nested:
        raise DataError(spec, f"has both a {tags_column!r} and an {entities_column!r} column: set "
                              f"config.data.hf_tags_column='' (nested) or hf_entities_column='' (flat)")
    if not flat and not nested:
        raise DataError(spec, f"no {tags_column!r} column (flat layout) and no {entities_column!r} column "
                              f"(nested layout); columns: {', '.join(cols)} (config.data.hf_tags_column, "
                              f"hf_entities_column name them)")
    if doc_id_column:
        need(doc_id_column, "document ids", "hf_doc_id_column")

    if flat:
        names = _names_of(features[tags_column])
        if names is None and tag_names:
            names = list(tag_names)
        elif names is None and _int_items(features[tags_column]):
            raise DataError(spec, f"column {tags_column!r} holds integer tags without ClassLabel names: "
                                  f"give them in config.data.tag_names (check --tag-names)")
        allowed = set(tag_names) if tag_names else None
        decoder = TagDecoder(scheme, lenient)
        convert: Callable[[list[str], Any, Callable[[str], DataError]], tuple[Span, ...]] = (
            lambda words, tags, err: _flat_spans(words, tags, names, allowed, decoder, tags_column, err))
        source = tags_column
    else:
        type_names = _entity_type_names(features[entities_column])
        convert = lambda words, ents, err: _nested_spans(words, ents, type_names, entities_column, err)
        source = entities_column

    out: list[Sentence] = []
    docs: set[str] = set()
    wanted = [tokens_column, source] + ([doc_id_column] if doc_id_column else [])
    row = 0
    for batch in ds.select_columns(wanted).iter(batch_size=1000):
        for k in range(len(batch[tokens_column])):
            def err(problem: str, _row: int = row) -> DataError:
                return DataError(spec, problem, row=_row)

            words = batch[tokens_column][k]
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise err(f"{tokens_column!r} must be a list of strings, got {_short(words)}")
            spans = convert(words, batch[source][k], err)
            doc = None
            if doc_id_column:
                doc = batch[doc_id_column][k]
                if doc is None or isinstance(doc, (list, dict)):
                    raise err(f"document id {_short(doc)} in {doc_id_column!r} is not a string or number")
                docs.add(str(doc))
            out.append(Sentence(tuple(words), spans, doc_id=doc))
            row += 1
    if stats is not None:
        stats.update(repairs=decoder.repairs if flat else 0, rows=row, documents=len(docs))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _flat_spans(words: list[str], tags: Any, names: list[str] | None, allowed: set[str] | None,
                decoder: TagDecoder, column: str, err: Callable[[str], DataError]) -> tuple[Span, ...]:
    """One row's tags -> spans (ints through ``names``, then the CoNLL tag rules)."""
    if not isinstance(tags, list):
        raise err(f"{column!r} must be a list of tags, got {_short(tags)}")
    if len(tags) != len(words):
        raise err(f"{len(tags)} tags in {column!r} for {len(words)} tokens")
    for i, tag in enumerate(tags):
        if isinstance(tag, int) and not isinstance(tag, bool):
            if names is None:
                raise err(f"token {i}: integer tag {tag} but no tag names (config.data.tag_names)")
            if not 0 <= tag < len(names):
                raise err(f"token {i}: tag {tag} is not an index into the {len(names)} tag names")
            tag = names[tag]
        elif allowed is not None and tag not in allowed:
            raise err(f"token {i}: tag {tag!r} is not in config.data.tag_names")
        try:
            decoder.add(tag)
        except TagError as e:
            decoder.close()
            raise err(f"token {i}: {e}") from None
    return tuple(decoder.close())


def _nested_spans(words: list[str], ents: Any, type_names: list[str] | None, column: str,
                  err: Callable[[str], DataError]) -> tuple[Span, ...]:
    """One row's ``{start, end (exclusive), type}`` records -> spans ``(start, end - 1, type)``."""
    if isinstance(ents, dict):  # Sequence({...}) features come back as a dict of lists
        keys = ("start", "end", "type")
        if not all(isinstance(ents.get(key), list) for key in keys):
            raise err(f"{column!r} must hold start, end and type for each entity, got {_short(ents)}")
        ents = [dict(zip(keys, rec)) for rec in zip(*(ents[key] for key in keys))]
    if not isinstance(ents, list):
        raise err(f"{column!r} must be a list of {{start, end, type}} records, got {_short(ents)}")
    spans: list[Span] = []
    for j, ent in enumerate(ents):
        if not isinstance(ent, dict) or not {"start", "end", "type"} <= set(ent):
            raise err(f"entity {j}: expected a record with start, end and type, got {_short(ent)}")
        s, e, typ = ent["start"], ent["end"], ent["type"]
        if isinstance(typ, int) and not isinstance(typ, bool) and type_names is not None:
            if not 0 <= typ < len(type_names):
                raise err(f"entity {j}: type {typ} is not an index into the {len(type_names)} ClassLabel names")
            typ = type_names[typ]
        if not isinstance(typ, str) or not typ:
            raise err(f"entity {j}: 'type' must be a non-empty string, got {typ!r}")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (s, e)):
            raise err(f"entity {j} ({typ}): start and end must be integers, got {s!r}, {e!r}")
        if e <= s:
            raise err(f"entity {j} ({typ}): end {e} <= start {s} (end is exclusive: tokens[start:end])")
        if s < 0 or e > len(words):
            raise err(f"entity {j} ({typ}): [{s}, {e}) out of range for a {len(words)}-token row")
        spans.append((s, e - 1, typ))
    return tuple(spans)
