"""Batched throughput of two checkouts of the library, interleaved, with one benchmark code.

    python bench/batched_ab.py --before ../wt_before --workdir runs/demo --rounds 3

``bench/latency.py``'s batched part (continuous batching ``batched_infer`` and whole-batch
``vee_infer`` at batch 32, against the full model at batch 32 on the same exits) changed its
definition between two versions of the library (the full model's exits), so comparing the two
versions' committed results mixes a benchmark change with a library change. Here one copy of the
benchmark runs against each checkout (``PYTHONPATH`` picks the library), the checkouts take turns
in fresh processes, and each time is the best over all rounds. The operating points (tau,
patience) are the ones committed in ``bench/results/cpu_demo.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POINTS = ROOT / "bench" / "results" / "cpu_demo.json"


def _load(workdir: Path):
    """(config, info, spec, state, tokenizer) with whichever loader the checkout has."""
    import vee_jax

    # The editable install's finder would serve a module the checkout lacks from the installed
    # tree, so ask the checkout itself.
    if not (Path(vee_jax.__file__).parent / "trained.py").exists():  # before "one home for a trained model"
        from vee_jax.evaluate_cli import load_trained
        return load_trained(workdir)
    from vee_jax.trained import TrainedModel
    m = TrainedModel.load(workdir)
    return m.config, m.info, m.spec, m.state, m.tokenizer


def worker(args) -> dict:
    """Times in seconds of every variant, best of ``args.repeats``, in this process's library."""
    import jax
    import numpy as np

    from vee_jax import engine
    from vee_jax.batched import batched_infer, whole_batches
    from vee_jax.data.features import encode_sentences
    from vee_jax.data.readers import read_split
    from vee_jax.data.splits import reader_options
    from vee_jax.policies import FullPolicy, VeePolicy

    config, info, spec, state, tokenizer = _load(Path(args.workdir))
    sentences = read_split(args.data, config.data.format, **reader_options(config.data))[: args.sentences]
    casing = {"casing": True} if getattr(spec, "casing", False) else {}  # checkouts before model.casing lack it
    encoded, _ = encode_sentences(sentences, tokenizer, info["labels"],
                                  min(config.data.max_subwords, spec.bert.max_position), **casing)
    cfg, pooling, B = spec.bert, spec.pooling, args.batch_size
    enc, ex = state["params"]["encoder"], state["params"]["exits"]
    exact = engine.prepare(cfg, enc, ex)
    low = engine.prepare(cfg, enc, ex, exit_rank=args.exit_rank)
    batches = [engine.infer_inputs(b, pooling) for _, b in whole_batches(encoded, B)]

    def best(fn):
        fn()  # compile
        ts = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t)
        return min(ts)

    out = {"library": str(Path(sys.modules["vee_jax"].__file__).parent.parent.name)}
    out["full"] = best(lambda: batched_infer(cfg, low, encoded, FullPolicy(), batch_size=B, pooling=pooling)[0])
    out["full_exact_exits"] = best(
        lambda: batched_infer(cfg, exact, encoded, FullPolicy(), batch_size=B, pooling=pooling)[0])
    for k, p in enumerate(json.loads(POINTS.read_text())["batched"]):
        pol = VeePolicy("kl", p["tau"], p["patience"])
        out[f"batched{k}"] = best(lambda: batched_infer(cfg, low, encoded, pol, batch_size=B, pooling=pooling)[0])
        out[f"whole{k}"] = best(lambda: [engine.vee_infer(cfg, low["encoder"], low["exits"], b, pol)
                                         for b in batches])
        res, _ = batched_infer(cfg, low, encoded, pol, batch_size=B, pooling=pooling)
        out[f"avg_exit{k}"] = float(np.mean([r["exit_layer"] for r in res]))
    return out


def ratios(t: dict) -> dict:
    """The throughput ratios bench/latency.py reports, from one checkout's best times."""
    r = {"full_exact_over_full": t["full_exact_exits"] / t["full"]}
    k = 0
    while f"batched{k}" in t:
        r[f"batched[{k}] throughput_ratio"] = t["full"] / t[f"batched{k}"]
        r[f"batched[{k}] throughput_ratio_whole_batch_loop"] = t["full"] / t[f"whole{k}"]
        r[f"batched[{k}] throughput_ratio vs exact-exit full model"] = t["full_exact_exits"] / t[f"batched{k}"]
        k += 1
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="root of the checkout measured as 'before'")
    ap.add_argument("--after", default=str(ROOT), help="root of the checkout measured as 'after' (this one)")
    ap.add_argument("--workdir", default="runs/demo")
    ap.add_argument("--data", default=str(ROOT / "vee_jax" / "data" / "demo" / "test.json"))
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--exit-rank", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per variant in one process")
    ap.add_argument("--rounds", type=int, default=3, help="processes per checkout, taking turns")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "flax_ab_batched"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    trees = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    best: dict[str, dict] = {}
    runs: dict[str, list] = {name: [] for name in trees}
    for rnd in range(args.rounds):
        for name, tree in trees.items():
            cmd = [sys.executable, __file__, "--worker"] + [a for a in (argv or sys.argv[1:])]
            env = dict(os.environ, PYTHONPATH=str(tree))
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            t = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
            runs[name].append(t)
            best[name] = {k: (min(v, best[name][k]) if name in best and isinstance(v, float) and
                              not k.startswith("avg_exit") else v) for k, v in t.items()}
            print(f"round {rnd + 1} {name}: full {t['full']:.3f} s", flush=True)
    rb, ra = ratios(best["before"]), ratios(best["after"])
    shown = [os.path.relpath(a, ROOT) if os.path.isabs(a) else a for a in (argv or sys.argv[1:])]
    result = {"command": "python bench/batched_ab.py " + " ".join(shown),  # no machine paths
              "points": str(POINTS.relative_to(ROOT)), "best_times_s": best, "runs": runs,
              "ratios_before": rb, "ratios_after": ra,
              "after_over_before": {k: ra[k] / rb[k] for k in rb}}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"Command: `{result['command']}`  ",
             f"Each checkout's library under the same benchmark code, {args.rounds} processes each taking "
             f"turns, best of {args.repeats} passes per process; operating points from `{result['points']}`.",
             "", "| ratio | before | after | after / before |", "|---|---|---|---|"]
    for k in rb:
        lines.append(f"| {k} | {rb[k]:.3f} | {ra[k]:.3f} | {ra[k] / rb[k]:.3f} |")
    for k in ("before", "after"):
        exits = [best[k][f"avg_exit{i}"] for i in range(len([x for x in best[k] if x.startswith("avg_exit")]))]
        lines.append(f"\n{k}: average exit layers {exits}")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
