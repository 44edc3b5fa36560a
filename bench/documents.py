"""Documents end to end: raw abstracts and news stories through ``Predictor.predict_documents``.

    python bench/documents.py --workdir runs/demo --abstracts 80 --conll-docs 50
    # -> bench/results/documents_cpu.{json,md}

Documents are rebuilt from the test data, so the gold sentences and entities are known:

* GENIA test abstracts (``genia/test.doc_ids.txt`` names each sentence's abstract): the gold
  tokens joined by single spaces, the sentences by a space, one string per abstract; the
  sentence rule is the workdir's (``pysbd`` for GENIA's json format).
* CoNLL-2003 test documents (``eng.testb``, split at ``-DOCSTART-``): tokens joined by spaces,
  each sentence on its own line, the ``lines`` rule.

Per corpus, with one model and one policy:

* ``f1_documents``: entity P/R/F1 at exact character spans ``(start, end, type)`` of the
  document, from raw text (the splitter cuts sentences, the word rule cuts words);
* ``f1_gold_sentences``: the same model on the gold sentences' gold words
  (``Predictor.predict_words``), entities mapped to the same character spans: what is lost to
  the splitter and the word rule is the difference;
* ``agreement_f1``: the two predictions against each other;
* ``words_dropped``: gold words none of whose characters lie in a predicted sentence (never
  analysed; a sentence is analysed whole, past the subword limit as windows);
* ``words_cut``: gold words a predicted sentence boundary cuts in two (analysed, in two
  sentences: a splitter's error, e.g. after an abbreviation's period);
* throughput at batch 1 and at the default batch size: documents/s and words/s over the whole
  corpus, splitting included, after a pass that compiled every shape (best of ``--rounds``);
* the splitter's boundary precision/recall (a boundary: where sentences 2, 3, ... start).

A GENIA-trained model does not know CoNLL's types (PER, LOC, ORG, MISC): its CoNLL F1 is 0 by
construction and says nothing; agreement, words dropped, speed and boundaries still do. Give
``--conll-workdir`` for a CoNLL-trained model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import cpu_name, write_results  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


# --- documents with gold sentences and entities --------------------------------------------
def build(groups: list[list[tuple[tuple[str, ...], tuple]]], sep: str) -> list[dict]:
    """``{"text", "starts" (sentence starts), "gold" {(start, end, type)}, "sentences": [(offset, words)]}``
    per document from its sentences ``(words, spans over words, end inclusive)``."""
    docs = []
    for sents in groups:
        text, starts, gold, placed = "", [], set(), []
        for i, (words, spans) in enumerate(sents):
            if i:
                text += sep
            offs = []
            for j, w in enumerate(words):
                if j:
                    text += " "
                offs.append((len(text), len(text) + len(w)))
                text += w
            starts.append(offs[0][0])
            placed.append(offs)
            gold |= {(offs[s][0], offs[e][1], t) for s, e, t in spans}
        docs.append({"text": text, "starts": starts, "gold": gold, "sentences": [(o, w) for o, (w, _) in
                                                                                 zip(placed, sents)]})
    return docs


def genia_groups(limit: int | None) -> list:
    recs = json.loads((DATA / "genia" / "test.json").read_text())
    ids = (DATA / "genia" / "test.doc_ids.txt").read_text().split()
    groups: list[list] = []
    for i, (doc, r) in enumerate(zip(ids, recs, strict=True)):
        if i == 0 or doc != ids[i - 1]:
            groups.append([])
        groups[-1].append((tuple(r["sentence"]), [(n["index"][0], n["index"][-1], n["type"]) for n in r["ner"]]))
    return groups[:limit]


def conll_groups(limit: int | None) -> list:
    from vee_jax.data.readers import read_conll

    path = DATA / "conll2003" / "eng.testb"
    sentences = read_conll(path)
    counts, n = [], 0  # sentences per document, from the raw lines
    in_sentence = False
    for line in [*path.read_text().splitlines(), ""]:
        if line.startswith("-DOCSTART-"):
            if n:
                counts.append(n)
            n = 0
        elif line.strip():
            in_sentence = True
        elif in_sentence:
            n, in_sentence = n + 1, False
    counts.append(n)
    assert sum(counts) == len(sentences), (sum(counts), len(sentences))
    groups, k = [], 0
    for c in counts:
        groups.append([(s.words, list(s.spans)) for s in sentences[k:k + c]])
        k += c
    return [g for g in groups if g][:limit]


# --- scores --------------------------------------------------------------------------------
def prf(gold: list[set], pred: list[set]) -> dict:
    tp = sum(len(g & p) for g, p in zip(gold, pred))
    ng, npred = sum(map(len, gold)), sum(map(len, pred))
    p, r = tp / npred if npred else 0.0, tp / ng if ng else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
            "tp": tp, "n_gold": ng, "n_pred": npred}


def word_coverage(preds, docs) -> dict[str, int]:
    """``words_dropped`` (gold words with no character in any predicted sentence) and ``words_cut``
    (gold words that cross a predicted sentence's edge) over all documents."""
    dropped = cut = 0
    for p, d in zip(preds, docs):
        spans = [(s.start, s.end) for s in p.sentences]
        for offs, _ in d["sentences"]:
            for a, b in offs:
                inside = any(s <= a and b <= e for s, e in spans)
                touched = any(s < b and a < e for s, e in spans)
                dropped += not touched
                cut += touched and not inside
    return {"words_dropped": dropped, "words_cut": cut}


def run_corpus(predictor, docs: list[dict], rule: str, rounds: int) -> dict:
    texts = [d["text"] for d in docs]
    words_gold = sum(len(w) for d in docs for _, w in d["sentences"])
    # documents from raw text (also compiles the default batch's shapes)
    preds = predictor.predict_documents(texts, sentence_rule=rule)
    from_docs = [{(e.start, e.end, e.type) for e in p.entities} for p in preds]
    # the gold sentences' gold words, the same model and policy
    flat = [(i, offs, w) for i, d in enumerate(docs) for offs, w in d["sentences"]]
    wp = predictor.predict_words([w for _, _, w in flat])
    from_gold = [set() for _ in docs]
    for (i, offs, _), r in zip(flat, wp):
        from_gold[i] |= {(offs[s][0], offs[e][1], t) for s, e, t, _ in r.spans}
    gold = [d["gold"] for d in docs]
    # boundaries
    got_b = [{s.start for s in p.sentences[1:]} for p in preds]
    want_b = [set(d["starts"][1:]) for d in docs]
    tp = sum(len(a & b) for a, b in zip(got_b, want_b))
    n_got, n_want = sum(map(len, got_b)), sum(map(len, want_b))
    words = sum(p.num_words for p in preds)
    out = {"documents": len(docs), "gold_sentences": len(flat), "sentences": sum(len(p.sentences) for p in preds),
           "words": words, "gold_words": words_gold, **word_coverage(preds, docs),
           "sentence_rule": rule,
           "f1_documents": prf(gold, from_docs), "f1_gold_sentences": prf(gold, from_gold),
           "agreement_f1": prf(from_gold, from_docs)["f1"],
           "boundaries": {"precision": round(tp / n_got, 4) if n_got else 1.0,
                          "recall": round(tp / n_want, 4) if n_want else 1.0, "gold": n_want, "found": n_got},
           "avg_exit_layer": round(sum(s.exit_layer for p in preds for s in p.sentences)
                                   / max(1, sum(len(p.sentences) for p in preds)), 3)}
    # speed: batch 1 (its shapes compiled first) and the default batch (compiled by the pass above)
    max_subwords = max(len(e.input_ids) for e in predictor.encode([[w for w, _, _ in ws]
                                                                   for ws in _words(predictor, texts, rule)]))
    predictor.warm_up([predictor.policy], max_subwords=max_subwords, rows=[1])
    for name, bs in (("batch_1", 1), (f"batch_{predictor.batch_size}", predictor.batch_size)):
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            predictor.predict_documents(texts, sentence_rule=rule, batch_size=bs)
            best = min(best, time.perf_counter() - t0)
        out[name] = {"seconds": round(best, 3), "documents_per_s": round(len(docs) / best, 2),
                     "words_per_s": round(words / best, 1)}
    return out


def _words(predictor, texts, rule):
    from vee_jax.documents import plan_documents

    return [sp.words for sp in plan_documents(texts, rule, predictor.word_rule)]


# --- report --------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    lines = [f"Documents through `Predictor.predict_documents` (workdir `{result['workdir']}`, policy "
             f"`{json.dumps(result['policy'])}`, batch size {result['batch_size']}); {result['cpu']}, "
             f"{result['threads']} CPU threads.", ""]
    lines += ["| corpus | docs | sentences (gold) | words | dropped | cut | F1 documents | F1 gold sentences | agreement | "
              "boundary P | boundary R | docs/s b1 | words/s b1 | docs/s bN | words/s bN | avg exit |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in result["corpora"].items():
        bn = r[f"batch_{result['batch_size']}"]
        lines.append(f"| {name} ({r['sentence_rule']}) | {r['documents']} | {r['sentences']} ({r['gold_sentences']}) | "
                     f"{r['words']:,} | {r['words_dropped']} | {r['words_cut']} | {r['f1_documents']['f1']:.4f} | "
                     f"{r['f1_gold_sentences']['f1']:.4f} | {r['agreement_f1']:.4f} | "
                     f"{r['boundaries']['precision']:.4f} | {r['boundaries']['recall']:.4f} | "
                     f"{r['batch_1']['documents_per_s']:.2f} | {r['batch_1']['words_per_s']:,.0f} | "
                     f"{bn['documents_per_s']:.2f} | {bn['words_per_s']:,.0f} | {r['avg_exit_layer']:.2f} |")
    lines += ["", "F1 at exact character spans (start, end, type) of the document. 'F1 gold sentences': the same "
              "model on the gold sentences' gold words; 'agreement': documents against gold sentences. "
              + result.get("note", "")]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True, help="a trained workdir (GENIA's types)")
    ap.add_argument("--conll-workdir", default=None, help="a CoNLL-trained workdir for the CoNLL F1 (default --workdir)")
    ap.add_argument("--abstracts", type=int, default=None, help="first N GENIA test abstracts (default all 213)")
    ap.add_argument("--conll-docs", type=int, default=None, help="first N CoNLL test documents (default all 231)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=1, help="timed passes per batch size (best kept)")
    ap.add_argument("--out", default="bench/results/documents_cpu.json", help="relative to the repository")
    args = ap.parse_args(argv)
    args.workdir = str(Path(args.workdir).resolve())
    args.conll_workdir = args.conll_workdir and str(Path(args.conll_workdir).resolve())

    import os

    from vee_jax.allocator import keep_freed_memory
    from vee_jax.predict import Predictor

    keep_freed_memory()
    result = {"workdir": Path(args.workdir).name, "batch_size": args.batch_size, "cpu": cpu_name(),
              "threads": os.cpu_count(), "corpora": {}}
    p = Predictor.from_workdir(args.workdir, batch_size=args.batch_size)
    result["policy"] = p.policy.to_dict()
    t0 = time.perf_counter()
    result["corpora"]["GENIA test abstracts"] = run_corpus(
        p, build(genia_groups(args.abstracts), " "), p.sentence_rule, args.rounds)
    print(f"GENIA done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if args.conll_workdir:
        p = Predictor.from_workdir(args.conll_workdir, batch_size=args.batch_size)
        result["conll_workdir"] = Path(args.conll_workdir).name
    else:
        result["note"] = ("CoNLL-2003 runs the GENIA-trained model: its CoNLL F1 is 0 by construction (other "
                          "types); agreement, words dropped, boundaries and speed still hold.")
    t0 = time.perf_counter()
    result["corpora"]["CoNLL-2003 test documents"] = run_corpus(p, build(conll_groups(args.conll_docs), "\n"),
                                                                "lines", args.rounds)
    print(f"CoNLL done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    result["compilations"] = p.compilations
    os.chdir(ROOT)  # the file names printed are relative to the repository
    write_results(Path(args.out), result, markdown(result))


if __name__ == "__main__":
    main()
