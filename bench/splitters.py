"""Which sentence splitter: boundary precision / recall / F1 and speed on real documents.

    python bench/splitters.py                      # ../shared/data -> results/splitters/splitters.{json,md}
    python bench/splitters.py --docs docs/sentences.md   # also refresh the table in the docs

Documents are rebuilt from the development data, so the gold boundaries are known:

* ``genia``: GENIA test abstracts. ``test.doc_ids.txt`` names each sentence's MEDLINE abstract;
  an abstract is its sentences' tokens joined by single spaces, sentences joined by a space.
* ``conll``: CoNLL-2003 test (``eng.testb``) documents, split at ``-DOCSTART-``; each
  sentence's tokens joined by spaces, one sentence per line (as a news story is laid out:
  the headline and the dateline have no final punctuation).
* ``conll_joined``: the same documents with the sentences joined by a space (no line breaks):
  what a splitter does on news text alone.

A boundary is the character offset where a gold sentence starts, offset 0 excluded; a
splitter's boundaries are the starts of its spans after the first. Scores are micro-averaged
over all boundaries of a corpus. Speed is documents per second over the whole corpus (one
warm-up document first), on this machine's CPU. Every candidate's output goes through
``vee_jax.sentences.align``, as the library's rules do. On ``conll`` the ``lines`` rule is exact
by construction (the gold sentences are the lines); ``lines+X`` then measures how often X
splits a CoNLL sentence further.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import cpu_name, write_results  # noqa: E402
from vee_jax.sentences import align, split_sentences  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
Doc = tuple[str, list[int]]
"""``(text, gold boundaries)``: the offsets where sentences 2, 3, ... start."""


# --- documents with known boundaries -------------------------------------------------------

def _join(sentences: list[str], sep: str) -> Doc:
    text, starts = "", []
    for i, s in enumerate(sentences):
        if i:
            text += sep
            starts.append(len(text))
        text += s
    return text, starts


def genia_documents(data: Path = DATA, split: str = "test") -> list[Doc]:
    """GENIA abstracts of ``split``: consecutive sentences with the same MEDLINE id."""
    records = json.loads((data / "genia" / f"{split}.json").read_text())
    ids = (data / "genia" / f"{split}.doc_ids.txt").read_text().split()
    assert len(ids) == len(records), (len(ids), len(records))
    groups: list[list[str]] = []
    for i, (doc, rec) in enumerate(zip(ids, records)):
        if i == 0 or doc != ids[i - 1]:
            groups.append([])
        groups[-1].append(" ".join(rec["sentence"]))
    return [_join(g, " ") for g in groups]


def conll_documents(data: Path = DATA, sep: str = "\n", name: str = "eng.testb") -> list[Doc]:
    """CoNLL-2003 documents (split at ``-DOCSTART-``), sentences joined by ``sep``."""
    docs: list[list[str]] = [[]]  # this copy of eng.testb does not open with -DOCSTART-
    sentence: list[str] = []
    for line in [*(data / "conll2003" / name).read_text().splitlines(), ""]:
        if line.startswith("-DOCSTART-"):
            if docs[-1]:
                docs.append([])
        elif line.strip():
            sentence.append(line.split(" ")[0])
        elif sentence:
            docs[-1].append(" ".join(sentence))
            sentence = []
    return [_join(d, sep) for d in docs if d]


# --- the candidates ------------------------------------------------------------------------

def _sentencizer() -> Callable[[str], list[tuple[int, int]]]:
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.max_length = 10**8
    return lambda text: align(text, [s.text for s in nlp(text).sents])


def _blingfire() -> Callable[[str], list[tuple[int, int]]]:
    import blingfire

    return lambda text: align(text, blingfire.text_to_sentences(text).split("\n"))


def _naive(text: str) -> list[tuple[int, int]]:
    """Baseline: after ``. ! ?`` followed by whitespace."""
    return align(text, re.split(r"(?<=[.!?])\s+", text))


def _lines_then(within):
    from vee_jax.sentences import _by_lines

    return lambda text: _by_lines(text, within)


def candidates(corpus: str) -> dict[str, Callable[[str], list[tuple[int, int]]]]:
    libs: dict[str, Callable] = {"pysbd": lambda t: split_sentences(t, "pysbd")}
    for name, make in (("sentencizer", _sentencizer), ("blingfire", _blingfire)):
        try:
            libs[name] = make()
        except ImportError as e:
            print(f"skipping {name}: {e}", file=sys.stderr)
    libs["naive . ! ?"] = _naive
    if corpus != "conll":
        return libs
    out = dict(libs)
    out["lines"] = lambda t: split_sentences(t, "lines")
    out["lines+pysbd"] = lambda t: split_sentences(t, "lines+pysbd")
    for name, fn in libs.items():
        if name != "pysbd":
            out[f"lines+{name}"] = _lines_then(fn)
    return out


# --- scoring -------------------------------------------------------------------------------

def boundaries(spans: list[tuple[int, int]]) -> set[int]:
    return {s for s, _ in spans[1:]}


def score(fn: Callable[[str], list[tuple[int, int]]], docs: list[Doc]) -> dict:
    """Micro boundary P/R/F1 of ``fn`` over ``docs`` and its speed in documents per second."""
    fn(docs[0][0])  # warm-up: a library's first call builds its rules
    tp = fp = fn_ = 0
    t0 = time.perf_counter()
    predicted = [boundaries(fn(text)) for text, _ in docs]
    seconds = time.perf_counter() - t0
    for (_, gold), pred in zip(docs, predicted):
        gold = set(gold)
        tp += len(gold & pred)
        fp += len(pred - gold)
        fn_ += len(gold - pred)
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn_) if tp + fn_ else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "tp": tp, "fp": fp, "fn": fn_, "docs_per_s": len(docs) / seconds}


# --- the report ----------------------------------------------------------------------------

TITLES = {"genia": "GENIA test abstracts", "conll": "CoNLL-2003 test documents, one sentence per line",
          "conll_joined": "CoNLL-2003 test documents, sentences joined by a space"}


def markdown(result: dict) -> str:
    lines = []
    for corpus, rows in result["results"].items():
        c = result["corpora"][corpus]
        lines += [f"**{TITLES[corpus]}** ({c['documents']} documents, {c['boundaries']} boundaries)", "",
                  "| splitter | precision | recall | F1 | documents/s |", "| --- | ---: | ---: | ---: | ---: |"]
        for name, m in sorted(rows.items(), key=lambda kv: -kv[1]["f1"]):
            lines.append(f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['docs_per_s']:,.0f} |")
        lines.append("")
    first = ", ".join(f"{k} {v:.4f}" for k, v in result["genia_first20_f1"].items())
    lines += [f"Boundary F1 on the first 20 GENIA test abstracts (tests/test_sentences.py checks it): {first}.", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items())
              + f". CPU: {result['cpu']}.", ""]
    return "\n".join(lines)


BEGIN, END = "<!-- begin: bench/splitters.py -->", "<!-- end: bench/splitters.py -->"


def refresh_docs(path: Path, table: str) -> None:
    """Replace the block between BEGIN and END in ``path`` with ``table``."""
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DATA), help="the shared data folder (default ../shared/data)")
    ap.add_argument("--out", default=str(ROOT / "results" / "splitters" / "splitters.json"))
    ap.add_argument("--docs", default=None, help="a Markdown file whose generated block to refresh")
    args = ap.parse_args(argv)
    data = Path(args.data)
    if not (data / "genia" / "test.doc_ids.txt").exists() or not (data / "conll2003" / "eng.testb").exists():
        sys.exit(f"bench/splitters.py needs the development data: {data}/genia/test.json, test.doc_ids.txt "
                 f"and {data}/conll2003/eng.testb (give the folder with --data)")
    corpora = {"genia": genia_documents(data), "conll": conll_documents(data, "\n"),
               "conll_joined": conll_documents(data, " ")}
    result: dict = {"corpora": {}, "results": {}, "genia_first20_f1": {}, "versions": {}, "cpu": cpu_name()}
    for corpus, docs in corpora.items():
        result["corpora"][corpus] = {"documents": len(docs), "sentences": sum(len(g) + 1 for _, g in docs),
                                     "boundaries": sum(len(g) for _, g in docs)}
        result["results"][corpus] = {}
        for name, fn in candidates(corpus).items():
            result["results"][corpus][name] = m = score(fn, docs)
            print(f"{corpus:13s} {name:24s} P {m['precision']:.4f} R {m['recall']:.4f} F1 {m['f1']:.4f} "
                  f"{m['docs_per_s']:8.0f} docs/s", flush=True)
            if corpus == "genia":
                result["genia_first20_f1"][name] = score(fn, corpora["genia"][:20])["f1"]
    for dist in ("pysbd", "spacy", "blingfire"):
        try:
            result["versions"][dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    table = markdown(result)
    write_results(args.out, result, table)
    if args.docs:
        refresh_docs(Path(args.docs), table)


if __name__ == "__main__":
    main()
