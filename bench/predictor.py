"""What users call against what the benchmarks time: the Predictor and the engine run directly.

    python bench/predictor.py --workdir runs/demo --rounds 5 --out bench/results/predictor_cpu.json

On the same sentences (the workdir's test split, or ``--data``), one process, variants
interleaved round by round, each round timing every variant once over all sentences:

- ``predictor_b1`` / ``predictor_b32``: ``Predictor.predict_words`` at batch size 1 and 32
  (words in, spans out: encode, batch, engine, decode), whole batches (``engine="loop"``);
- ``predictor_b32_continuous``: the Predictor at batch 32 with ``engine="continuous"``
  (``batched_infer``: an exited sentence stops costing compute); sentences whose spans or exit
  layer differ from batch 1 are counted (near-ties), not asserted;
- ``direct_b1`` / ``direct_b32``: the same work written out over the library's pieces, with
  the engine on ``engine.prepare``'s layout (what bench/latency.py times): encode, plan
  batches, collate, ``vee_infer``, decode.

Per variant the best round; ratios ``predictor / direct`` (at most 1.0 means the Predictor is
as fast as the engine run directly) and ``b32 / b1`` throughput. Predictions are checked equal.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import cpu_name, write_results  # noqa: E402

from vee_jax.allocator import keep_freed_memory  # noqa: E402
from vee_jax.data.features import batch_plan, collate, encode_sentences  # noqa: E402
from vee_jax.data.splits import read_file  # noqa: E402
from vee_jax.data.sentence import Sentence  # noqa: E402
from vee_jax.decode import decode_table  # noqa: E402
from vee_jax.engine import vee_infer  # noqa: E402
from vee_jax.predict import Predictor, batch_shape, rows_bucket  # noqa: E402
from vee_jax.trained import load_run_info  # noqa: E402


def direct(pred: Predictor, model: dict, words, batch_size: int, policy):
    """Encode, plan, collate, vee_infer on the prepared layout, decode: ``[(spans, exit_layer)]``."""
    enc, _ = encode_sentences([Sentence(tuple(w)) for w in words], pred.tokenizer, pred.labels, pred.max_subwords,
                              casing=pred.spec.casing)
    out = [None] * len(enc)
    for _, idx in batch_plan(enc, batch_size, shuffle=False):
        group = [enc[i] for i in idx]
        rows = rows_bucket(len(group), batch_size)
        batch = collate(group, batch_shape(group, rows), rows)
        r = vee_infer(pred.spec.bert, model["encoder"], model["exits"], batch, policy, pooling=pred.spec.pooling)
        probs, exits = np.asarray(r["probs"]), np.asarray(r["exit_layer"])
        for row, (i, e) in enumerate(zip(idx, group)):
            spans = tuple((s, t, pred.labels[c - 1], p) for s, t, c, p in decode_table(probs[row], e.length, pred.nested))
            out[i] = (spans, int(exits[row]))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="runs/demo")
    ap.add_argument("--data", default=None, help="a data file in the workdir's format (default: its test split)")
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="bench/results/predictor_cpu.json")
    args = ap.parse_args(argv)
    keep_freed_memory()

    preds = {b: Predictor.from_workdir(args.workdir, batch_size=b) for b in (1, 32)}
    preds[32].engine = "loop"  # whole batches through vee_infer, as direct_b32
    continuous = Predictor.from_workdir(args.workdir, batch_size=32)
    continuous.engine = "continuous"
    p1 = preds[1]
    config_data = load_run_info(Path(args.workdir).expanduser())[0].data
    path = args.data or config_data.test
    sentences = read_file(config_data, path)[: args.sentences]
    words = [list(s.words) for s in sentences]
    model = p1.model  # the same prepared weights for the direct variants
    policy = p1.policy

    variants = {
        "predictor_b1": lambda: [(p.spans, p.exit_layer) for p in preds[1].predict_words(words)],
        "predictor_b32": lambda: [(p.spans, p.exit_layer) for p in preds[32].predict_words(words)],
        "predictor_b32_continuous": lambda: [(p.spans, p.exit_layer) for p in continuous.predict_words(words)],
        "direct_b1": lambda: direct(p1, model, words, 1, policy),
        "direct_b32": lambda: direct(p1, model, words, 32, policy),
    }
    results = {k: fn() for k, fn in variants.items()}  # warm-up: compile every shape
    ref = results["direct_b1"]
    # continuous batching runs other shapes: a decision within float noise of tau may differ (counted)
    differ = sum((x[1], [t[:3] for t in x[0]]) != (y[1], [t[:3] for t in y[0]])
                 for x, y in zip(results["predictor_b32_continuous"], ref))
    for k, r in results.items():
        if k == "predictor_b32_continuous":
            continue
        assert [x[1] for x in r] == [x[1] for x in ref], f"{k}: exit layers differ from direct_b1"
        assert [[s[:3] for s in x[0]] for x in r] == [[s[:3] for s in x[0]] for x in ref], f"{k}: spans differ"
    best = {k: float("inf") for k in variants}
    for _ in range(args.rounds):
        for k, fn in variants.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    n = len(words)
    res = {
        "machine": cpu_name(), "workdir": Path(args.workdir).name, "data": Path(path).name, "sentences": n,
        "rounds": args.rounds, "policy": policy.to_dict(),
        "avg_exit_layer": float(np.mean([x[1] for x in ref])),
        "sentences_per_s": {k: n / v for k, v in best.items()},
        "predictor_over_direct_time_b1": best["predictor_b1"] / best["direct_b1"],
        "predictor_over_direct_time_b32": best["predictor_b32"] / best["direct_b32"],
        "predictor_b32_over_b1_throughput": best["predictor_b1"] / best["predictor_b32"],
        "predictor_b32_continuous_over_b1_throughput": best["predictor_b1"] / best["predictor_b32_continuous"],
        "continuous_sentences_differing": differ,
    }
    md = ["| variant | sentences/s |", "|---|---|"]
    md += [f"| {k} | {v:.1f} |" for k, v in res["sentences_per_s"].items()]
    md += ["", f"Predictor / direct time: batch 1 {res['predictor_over_direct_time_b1']:.3f}, batch 32 "
               f"{res['predictor_over_direct_time_b32']:.3f}; Predictor batch 32 / batch 1 throughput "
               f"{res['predictor_b32_over_b1_throughput']:.2f} (whole batches), "
               f"{res['predictor_b32_continuous_over_b1_throughput']:.2f} (continuous) ({n} sentences of {res['data']}, best of "
               f"{args.rounds} rounds, average exit layer {res['avg_exit_layer']:.2f})", ""]
    write_results(args.out, res, "\n".join(md))


if __name__ == "__main__":
    main()
