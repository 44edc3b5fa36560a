"""What low-rank exits cost in F1: test F1 of every exit for each rank of ``compress_exits``.

    python bench/exit_rank.py --workdir ~/vee_runs/genia --ranks 0,128,96,64,32 --out bench/results/exit_rank_genia.json

The encoder runs once per batch; only the exits are recomputed per rank (rank 0 = exact).
No retraining: the Tucker truncation of each trained U (exits.compress_exits).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from vee_jax.bert import encode_layers, word_vectors  # noqa: E402
from vee_jax.data.features import iterate_batches  # noqa: E402
from vee_jax.decode import decode_table  # noqa: E402
from vee_jax.exits import biaffine, compress_exits  # noqa: E402
from vee_jax.metrics import span_prf  # noqa: E402
from vee_jax.data.features import encode_sentences  # noqa: E402
from vee_jax.data.splits import load_split  # noqa: E402
from vee_jax.paths import display_path  # noqa: E402
from vee_jax.trained import TrainedModel  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--ranks", default="0,128,96,64,32")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    ranks = [int(r) for r in args.ranks.split(",")]
    model = TrainedModel.load(args.workdir)
    spec, state, labels, nested = model.spec, model.state, model.labels, model.nested
    sentences = load_split(model.config.data, args.split)
    name = f"{args.split} ({display_path(model.config.data.get(args.split))})"
    encoded, _ = encode_sentences(sentences, model.tokenizer, labels, model.max_subwords, casing=spec.casing)
    enc = state["params"]["encoder"]

    @jax.jit
    def words_of(params, b):  # [M, B, L, d]: every layer's word vectors
        hidden = encode_layers(spec.bert, params, b["input_ids"], b["attention_mask"])[1:]
        return jax.vmap(lambda h: word_vectors(h, b["word_index"], b["word_mask"], spec.pooling, b.get("word_end")))(hidden)

    keys = ("input_ids", "attention_mask", "word_index", "word_mask") + (("word_end",) if spec.pooling == "mean" else ())
    batches = [(idx, b["lengths"], (words_of(enc, {k: b[k] for k in keys}), b.get("word_shape")))
               for idx, b in iterate_batches(encoded, 32)]
    tables = jax.jit(jax.vmap(lambda ep, w, s: jax.nn.softmax(biaffine(ep, w, s), -1), in_axes=(0, 0, None)))
    gold = [s.span_set() for s in sentences]
    result = {"workdir": display_path(args.workdir), "split": name, "f1": {}}
    for r in ranks:
        ex = compress_exits(state["params"]["exits"], r)
        M = ex["U"].shape[0]
        pred = [[set() for _ in sentences] for _ in range(M)]
        for idx, lengths, w in batches:
            P = np.asarray(tables(ex, *w))
            for m in range(M):
                for j, i in enumerate(idx):
                    pred[m][i] = {(s, e, labels[c - 1]) for s, e, c, _ in decode_table(P[m, j], int(lengths[j]), nested)}
        result["f1"][str(r)] = [span_prf(gold, pred[m], labels)["f1"] for m in range(M)]
        print(f"rank {r:4d}: " + " ".join(f"{x:.4f}" for x in result["f1"][str(r)]), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
