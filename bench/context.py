"""What document context costs at inference: the same model and sentences encoded alone and with up to
N subwords of document context a side, at batch 1, the full model and VEE's default policy, one process.

    python bench/context.py --workdir ~/vee_runs/genia_long --sentences 200 --context 0 32 \
        --out bench/results/context_cpu.json

Rows are shaped as the Predictor and eval.py shape them (``features.row_shape``: the subword bucket,
and for a row with context the word bucket of its own words). Context changes the inputs, not the
weights, so any trained model measures its cost; F1 needs a model trained with it (docs/results.md,
the lever table). A lone text (``Predictor(texts)``, ``POST /ner``) has no document, so no context:
the ``0`` row is what it costs. Prints each setting's ratio to ``0``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
from _common import cpu_name, write_results  # noqa: E402  (bench/ is on sys.path when run as a script)

from vee_jax import engine  # noqa: E402
from vee_jax.data.features import collate, encode_sentences, row_shape  # noqa: E402
from vee_jax.data.readers import read_split  # noqa: E402
from vee_jax.data.splits import reader_options  # noqa: E402
from vee_jax.policies import FullPolicy, VeePolicy  # noqa: E402
from vee_jax.trained import TrainedModel  # noqa: E402


def timings(call, n: int, rounds: int) -> list[float]:
    """ms per sentence: each sentence once to compile its shape, then ``rounds`` timed passes."""
    for i in range(n):
        jax.block_until_ready(call(i))
    out = []
    for _ in range(rounds):
        for i in range(n):
            t = time.perf_counter()
            jax.block_until_ready(call(i))
            out.append(1000 * (time.perf_counter() - t))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--data", default=None, help="default: the config's test split (with its document ids)")
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--context", type=int, nargs="+", default=[0, 32], help="subwords of context a side")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    model = TrainedModel.load(Path(args.workdir).expanduser())
    config, spec, state = model.config, model.spec, model.state
    data = args.data or config.data.test
    sentences = read_split(data, config.data.format, **reader_options(config.data))[: args.sentences]
    limit = min(config.data.max_subwords, spec.bert.max_position)
    prepared = engine.prepare(spec.bert, state["params"]["encoder"], state["params"]["exits"])
    policies = {"full": FullPolicy(), "vee_kl_tau0.01_p2": VeePolicy("kl", 0.01, 2)}
    rows = []
    for ctx in args.context:
        encoded, _ = encode_sentences(sentences, model.tokenizer, model.info["labels"], limit, ctx,
                                      casing=spec.casing)
        inputs = [engine.infer_inputs(collate([e], row_shape(e), 1), spec.pooling) for e in encoded]
        row = {"context_subwords": ctx, "rows": len(encoded),
               "rows_with_context": sum(sum(e.context) > 0 for e in encoded),
               "mean_subwords": statistics.fmean(len(e.input_ids) for e in encoded)}
        for name, pol in policies.items():
            ms = timings(lambda i, pol=pol: engine.vee_infer(spec.bert, prepared["encoder"], prepared["exits"],
                                                             inputs[i], pol), len(inputs), args.rounds)
            row[f"{name}_ms_p50"] = statistics.median(ms)
        # the model may not have been trained with context: its exits decide on other inputs
        vee = policies["vee_kl_tau0.01_p2"]
        row["vee_avg_exit_layer"] = statistics.fmean(
            int(engine.vee_infer(spec.bert, prepared["encoder"], prepared["exits"], x, vee)["exit_layer"][0])
            for x in inputs)
        rows.append(row)
        print(f"context {ctx:3d}: {row['mean_subwords']:.1f} subwords a row; "
              + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k.endswith("_ms_p50")))
    base = rows[0]
    for r in rows[1:]:
        for k in [k for k in r if k.endswith("_ms_p50")]:
            r[k.replace("_ms_p50", "_over_first")] = r[k] / base[k]
            print(f"context {r['context_subwords']} / context {base['context_subwords']}, {k[:-7]}: "
                  f"{r[k] / base[k]:.2f}x")
    home = str(Path.home())
    command = " ".join(["python bench/context.py", *(argv if argv is not None else sys.argv[1:])])
    result = {"command": command.replace(home, "~"), "machine": f"{cpu_name()}, jax {jax.__version__}",
              "data": Path(data).name, "sentences": len(sentences), "rounds": args.rounds, "rows": rows}
    if args.out:
        keys = ["context_subwords", "rows_with_context", "mean_subwords", "vee_avg_exit_layer", *[k for k in rows[-1]
                                                                            if k.endswith(("_ms_p50", "_over_first"))]]
        md = "| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n" + "".join(
            "| " + " | ".join(f"{r[k]:.2f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys)
            + " |\n" for r in rows)
        write_results(args.out, result, md)


if __name__ == "__main__":
    main()
