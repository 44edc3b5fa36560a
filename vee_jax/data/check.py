"""`python -m vee_jax.data check PATH --format json|conll|msra|hf`: read a split and describe it.

In the spirit of ``spacy debug data``: counts, entity types, nesting, length percentiles and
warnings, so a file can be checked against its README before training. A DataError (or a
backbone folder that cannot be loaded) prints one line and exits with code 2.

The report is a list of sections built from a stats dict (``describe``). Subword statistics
(pieces per word, sentences over the model's 512 positions) are meant to come as one more
``describe_*`` function that takes a tokenizer and one more section, without touching these.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any, Sequence

import numpy as np

from ..errors import UserError
from .readers import FORMATS, read_split
from .sentence import Sentence

PERCENTILES = (50, 90, 99)
BERT_POSITIONS = 510  # 512 minus [CLS] and [SEP]: longer sentences need windows (MSRA README)

Section = tuple[str, list[tuple[str, str]]]


def percentiles(values: Sequence[int]) -> dict[str, int]:
    """Nearest-rank percentiles (an observed value: the smallest v with >= p% of values <= v)
    and the max; zeros for no values."""
    if len(values) == 0:
        return {**{f"p{p}": 0 for p in PERCENTILES}, "max": 0}
    arr = np.asarray(values)
    out = {f"p{p}": int(np.percentile(arr, p, method="inverted_cdf")) for p in PERCENTILES}
    out["max"] = int(arr.max())
    return out


def span_relations(spans: Sequence[tuple[int, int, str]]) -> tuple[int, int, int]:
    """(entities in a nesting relation, crossing pairs, cells with more than one type).

    Nesting as in the GENIA README: an entity that contains, or lies inside, another entity
    of the sentence (shared boundaries included). Crossing: s1 < s2 <= e1 < e2.
    """
    nested = [False] * len(spans)
    crossing = 0
    for i, (s1, e1, _) in enumerate(spans):
        for j in range(i + 1, len(spans)):
            s2, e2, _ = spans[j]
            if (s1 <= s2 and e2 <= e1) or (s2 <= s1 and e1 <= e2):
                nested[i] = nested[j] = True
            elif s1 <= e2 and s2 <= e1:
                crossing += 1
    cells = Counter((s, e) for s, e, _ in spans)
    multi = sum(1 for c in cells.values() if c > 1)
    return sum(nested), crossing, multi


def describe(sentences: Sequence[Sentence]) -> dict[str, Any]:
    """Word-level statistics of a split (the numbers its README tabulates)."""
    types: Counter[str] = Counter()
    nested = crossing = multi = 0
    for sent in sentences:
        types.update(t for _, _, t in sent.spans)
        n, c, m = span_relations(sent.spans)
        nested, crossing, multi = nested + n, crossing + c, multi + m
    lengths = [len(s) for s in sentences]
    return {
        "sentences": len(sentences),
        "words": sum(lengths),
        "empty_sentences": sum(1 for n in lengths if n == 0),
        "sentences_without_entities": sum(1 for s in sentences if not s.spans),
        "entities": sum(types.values()),
        "entities_per_type": dict(sorted(types.items())),
        "nested_entities": nested,
        "crossing_pairs": crossing,
        "multi_type_cells": multi,
        "sentence_length": percentiles(lengths),
        "entity_length": percentiles([e - s + 1 for sent in sentences for s, e, _ in sent.spans]),
        "sentences_over_bert": sum(1 for n in lengths if n > BERT_POSITIONS),
    }


def _n(x: int) -> str:
    return f"{x:,}"


def _pct(p: dict[str, int]) -> str:
    return "  ".join(f"{k} {v}" for k, v in p.items())


def sections(stats: dict[str, Any]) -> list[Section]:
    """The report's sections for the stats of ``describe``."""
    ents = stats["entities"]
    overview = [
        ("sentences", _n(stats["sentences"])),
        ("words", _n(stats["words"])),
        ("empty sentences", _n(stats["empty_sentences"])),
        ("sentences without entities", _n(stats["sentences_without_entities"])),
        ("words per sentence", _pct(stats["sentence_length"])),
    ]
    entities = [("entities", _n(ents))]
    for t, c in stats["entities_per_type"].items():
        entities.append((f"  {t}", f"{_n(c)} ({100 * c / ents:.1f}%)"))
    entities += [
        ("nested (contain or inside another)", _n(stats["nested_entities"])),
        ("crossing pairs", _n(stats["crossing_pairs"])),
        ("cells with two or more types", _n(stats["multi_type_cells"])),
        ("entity length (words)", _pct(stats["entity_length"])),
    ]
    return [("Overview", overview), ("Entities", entities)]


def warnings(stats: dict[str, Any]) -> list[str]:
    """Things a user should know before training on the split."""
    out = []
    if stats["sentences"] == 0:
        out.append("no sentences")
    if stats["entities"] == 0:
        out.append("no entities")
    if stats["multi_type_cells"]:
        out.append(f"{stats['multi_type_cells']} span(s) carry two or more types; a table "
                   "cell holds one class, so all but one will be lost")
    if stats["crossing_pairs"]:
        out.append(f"{stats['crossing_pairs']} crossing pair(s): no decoding can return both")
    if stats["sentences_over_bert"]:
        out.append(f"{stats['sentences_over_bert']} sentence(s) over {BERT_POSITIONS} words "
                   "(more subwords still): they run as overlapping windows")
    return out


def format_report(title: str, secs: list[Section], notes: list[str]) -> str:
    """Plain-text report: a banner per section, aligned rows, then warnings with ``!``."""
    width = max((len(k) for _, rows in secs for k, _ in rows), default=0) + 2
    lines = [f"== {title}"]
    for name, rows in secs:
        lines += ["", f"-- {name}"]
        lines += [f"{k:<{width}}{v}" for k, v in rows]
    if notes:
        lines += ["", "-- Warnings"] + [f"! {n}" for n in notes]
    return "\n".join(lines)


def subword_section(sentences: Sequence[Sentence], tokenizer, max_subwords: int = 512) -> tuple[Section, list[str]]:
    """Subword statistics with the model's tokenizer: lengths, [UNK] words, sentences over the limit."""
    lengths, unk, total, rep = subword_counts(sentences, tokenizer, max_subwords)
    rows = [
        ("tokenizer", str(tokenizer.name_or_path)),
        ("subwords per sentence (+[CLS],[SEP])", _pct(percentiles(lengths))),
        ("[UNK] subwords", f"{_n(unk)} ({100 * unk / total:.1f}%)"),
        (f"sentences over {max_subwords} subwords (windowed)", _n(rep.windowed_sentences)),
        ("entities in no single window", _n(rep.lost_spans)),
    ]
    notes = []
    if rep.windowed_sentences:
        notes.append(rep.summary("subwords").split("; ", 1)[1])
    if unk / total > 0.05:
        notes.append(f"{100 * unk / total:.0f}% of subwords are [UNK]: this tokenizer does not cover the "
                     "data's characters well (use a backbone whose vocabulary does)")
    return ("Subwords", rows), notes


def subword_counts(sentences: Sequence[Sentence], tokenizer, max_subwords: int = 512):
    """``(subwords per sentence with [CLS] and [SEP], [UNK] subwords, subwords, EncodeReport)``;
    a windowed sentence's overlapping windows counted once."""
    from ..windows import sentence_rows
    from .features import encode_sentences

    labels = sorted({t for s in sentences for _, _, t in s.spans})
    encoded, rep = encode_sentences(sentences, tokenizer, labels, max_subwords)
    pieces = [_sentence_pieces([encoded[r] for r in g]) for g in sentence_rows([e.offset for e in encoded])]
    lengths = [2 + sum(len(p) for p in ps) for ps in pieces]
    unk = sum(int((p == tokenizer.unk_token_id).sum()) for ps in pieces for p in ps)
    return lengths, unk, max(sum(lengths) - 2 * len(pieces), 1), rep


def _sentence_pieces(rows) -> list[np.ndarray]:
    """A sentence's subword ids per word from its rows (``Encoded``; overlapping windows counted once)."""
    out: dict[int, np.ndarray] = {}
    for e in rows:
        for w, (a, b) in enumerate(zip(e.word_index, e.word_end)):
            out.setdefault(e.offset + w, e.input_ids[a:b])
    return [out[w] for w in sorted(out)]


def check(path: str, format: str, *, tokenizer=None, max_subwords: int = 512, **options: Any) -> str:
    """Read ``path`` and return the report (raises DataError on a bad file).

    With a ``tokenizer`` the report adds subword lengths, [UNK] rates and sentences over
    ``max_subwords`` (what the model would not see, and the entities there).
    """
    read_stats: dict[str, int] = {}
    if format in ("conll", "hf"):
        options["stats"] = read_stats
    sentences = read_split(path, format, **options)
    stats = describe(sentences)
    secs = sections(stats)
    if format == "conll":
        secs[0][1].append(("-DOCSTART- lines", _n(read_stats["documents"])))
    if format == "hf" and options.get("doc_id_column"):
        secs[0][1].append(("documents", _n(read_stats["documents"])))
    if format in ("conll", "hf") and options.get("lenient"):
        secs[0][1].append(("lenient BIO repairs", _n(read_stats["repairs"])))
    notes = warnings(stats)
    if tokenizer is not None:
        sec, more = subword_section(sentences, tokenizer, max_subwords)
        secs.append(sec)
        notes += more
    return format_report(f"{path} ({format})", secs, notes)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (2 on a data error)."""
    parser = argparse.ArgumentParser(prog="python -m vee_jax.data",
                                     description="Check an NER data file.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="read a split and print its statistics")
    p.add_argument("path")
    p.add_argument("--format", required=True, choices=sorted(FORMATS))
    p.add_argument("--scheme", choices=["iob1", "bio"], default="iob1",
                   help="CoNLL (and hf flat) tag scheme (default iob1, as in CoNLL-2003)")
    p.add_argument("--token-column", type=int, default=0, help="CoNLL word column")
    p.add_argument("--tag-column", type=int, default=-1, help="CoNLL tag column")
    p.add_argument("--lenient", action="store_true",
                   help="CoNLL or hf BIO: read a stray I-X as B-X and count it")
    hf = p.add_argument_group("hf format (config.data.hf_*, tag_names; PATH is FOLDER, FOLDER:SPLIT, "
                              "a .jsonl/.json/.parquet file or hub:NAME:SPLIT)")
    hf.add_argument("--hf-config", default="", help="Hub dataset configuration")
    hf.add_argument("--tokens-column", default="tokens")
    hf.add_argument("--tags-column", default="ner_tags", help="flat layout ('' = none)")
    hf.add_argument("--entities-column", default="entities", help="nested layout ('' = none)")
    hf.add_argument("--doc-id-column", default="", help="document ids ('' = none)")
    hf.add_argument("--tag-names", default="",
                    help="comma-separated tags of integer ids when the column has no ClassLabel names")
    p.add_argument("--backbone", default="minilm",
                   help="tokenizer for subword statistics: 'minilm', a model folder, or 'none'")
    p.add_argument("--max-subwords", type=int, default=512)
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.format == "conll":
        options = dict(scheme=args.scheme, token_column=args.token_column,
                       tag_column=args.tag_column, lenient=args.lenient)
    elif args.format == "hf":
        options = dict(scheme=args.scheme, lenient=args.lenient, hf_config=args.hf_config,
                       tokens_column=args.tokens_column, tags_column=args.tags_column,
                       entities_column=args.entities_column, doc_id_column=args.doc_id_column,
                       tag_names=tuple(t for t in args.tag_names.split(",") if t))
    try:
        tokenizer = None
        if args.backbone != "none":
            from ..weights import load_tokenizer, resolve_backbone

            tokenizer = load_tokenizer(resolve_backbone(args.backbone))
        print(check(args.path, args.format, tokenizer=tokenizer, max_subwords=args.max_subwords, **options))
    except (UserError, FileNotFoundError) as err:  # bad data, a wrong backbone: one line; else a bug
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
