"""Write the result tables of docs/*.md and README.md from the committed JSON (results/, bench/results/).

A table lives in a page between two markers, and everything between them is this script's:

    <!-- table:genia_per_exit -->
    | exit | P | R | F1 | entropy (Eq. 6) |
    ...
    <!-- /table -->

    python scripts/docs_tables.py           # rewrite every table in docs/
    python scripts/docs_tables.py --check   # exit 1 and name the tables that differ (tests/test_docs_tables.py)

Add a table: a function of ROOT returning Markdown, an entry in TABLES, the two markers in a page.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = re.compile(r"(<!-- table:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _load(rel: str) -> dict:
    return json.loads((ROOT / rel).read_text())


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows) -> str:
    lines = [_row(header), "|" + "---|" * len(header)]
    lines += [_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    """A layer count or target: 6 for 6.0, 3.5 for 3.5."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# --- results/: per-exit test scores, Table 1, the single-exit baseline, the load test ----------

def per_exit(rel: str) -> Callable[[], str]:
    def make() -> str:
        rows = [(e["exit"], f"{e['precision']:.4f}", f"{e['recall']:.4f}", f"{e['f1']:.4f}",
                 f"{e['entropy']:.4f}") for e in _load(rel)["per_exit"]]
        return _table(["exit", "P", "R", "F1", "entropy (Eq. 6)"], rows)
    make.source = rel
    return make


def table1(rel: str) -> Callable[[], str]:
    """Test F1 x 100 (test average exit layer) per method and target; n/a where no configuration fits."""
    def make() -> str:
        t = _load(rel)
        targets = t["targets"]
        methods = list(dict.fromkeys(e["method"] for e in t["entries"]))
        cell = {(e["method"], e["target"]): e for e in t["entries"]}
        rows = []
        for m in methods:
            row = [m]
            for tg in targets:
                e = cell.get((m, tg))
                row.append("n/a" if not e or e.get("config") is None
                           else f"{100 * e['test_f1']:.2f} ({e['test_avg_exit_layer']:.2f})")
            rows.append(row)
        full = t["full"]
        rows.append(["full model"] + [f"{100 * full['test_f1']:.2f} ({_num(full['test_avg_exit_layer'])})"] * len(targets))
        return _table(["method"] + [f"target <= {_num(tg)}" for tg in targets], rows)
    make.source = rel
    return make


def genia_last() -> str:
    single = _load("results/genia_last/test_per_exit.json")["per_exit"][-1]
    joint = _load("results/genia/test_per_exit.json")["per_exit"][-1]
    rows = [("single exit (`model.exits=last`), the paper's BERT-biaffine row", single),
            (f"all {joint['exit']} exits trained jointly (Eq. 5), exit {joint['exit']}", joint)]
    return _table(["model (GENIA test, last exit)", "P", "R", "F1"],
                  [(name, f"{e['precision']:.4f}", f"{e['recall']:.4f}", f"{e['f1']:.4f}") for name, e in rows])


genia_last.source = "results/genia_last/test_per_exit.json, results/genia/test_per_exit.json"


def load_test() -> str:
    rows = [(r["mode"], _num(r["offered_rps"]), r["ok"], r["rejected_503"], r["other"],
             f"{r['throughput_rps']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}",
             f"{r['avg_exit_layer']:.2f}", r["compilations"]) for r in _load("results/demo/load/load.json")["rows"]]
    return _table(["mode", "offered req/s", "200", "503", "other", "answered req/s", "p50 ms", "p95 ms",
                   "avg exit layer", "new compilations"], rows)


load_test.source = "results/demo/load/load.json"


# --- bench/results/: latency, batched throughput, low-rank exits ------------------------------

def _point(prefix: str, p: dict, dev: bool = False, int8: bool = False) -> list:
    return ([f"{prefix}, tau {p['tau']:.2g}, patience {p['patience']}"]
            + ([f"{p['dev_f1']:.4f}" if "dev_f1" in p else ""] if dev else [])
            + [f"{p['f1']:.4f}", f"{p['avg_exit_layer']:.2f}", f"{p['layer_speedup']:.2f}", f"{p['wall_speedup']:.2f}",
               f"{p['wall_over_layer_speedup']:.2f}", f"{p['ms_p50']:.2f}"]
            + ([f"{p['over_onnxruntime_int8']:.2f}"] if int8 else []))


def latency(rel: str) -> Callable[[], str]:
    """bench/latency.py's batch-1 rows: the peers, the JAX full model, the engine and the Python loop.

    Runs that chose their points on dev (``points_chosen_on``) get a dev F1 column and the full
    model on exact exits as the base of the exact-exit rows; older runs chose them on test.
    Runs with ONNX Runtime int8 (``onnxruntime_int8_ms_p50``) get its rows, the ORT F1s and a
    column of each p50 over ORT int8's."""
    def make() -> str:
        r = _load(rel)
        M = r["num_layers"]
        dev = "points_chosen_on" in r
        int8 = "onnxruntime_int8_ms_p50" in r
        pad = [""] if dev else []

        def over(ms: float) -> list:
            return [f"{ms / r['onnxruntime_int8_ms_p50']:.2f}"] if int8 else []

        def f1(key: str) -> str:
            return f"{r[key]:.4f}" if key in r else ""
        rows = [["PyTorch eager (`BertModel` + the exit in torch)", *pad, "", M, "", "", "",
                 f"{r['torch_eager_ms_p50']:.2f}", *over(r["torch_eager_ms_p50"])],
                ["ONNX Runtime (same module exported)", *pad, f1("onnxruntime_f1"), M, "", "", "",
                 f"{r['onnxruntime_ms_p50']:.2f}", *over(r["onnxruntime_ms_p50"])]]
        for key, name in (("onnxruntime_int8", "ONNX Runtime int8 (the same file, dynamic quantisation, exit too)"),
                          ("onnxruntime_int8_fp32_exit", "ONNX Runtime int8, the exit in float32")):
            if f"{key}_ms_p50" in r:
                rows.append([name, *pad, f1(f"{key}_f1"), M, "", "", "", f"{r[f'{key}_ms_p50']:.2f}",
                             *over(r[f"{key}_ms_p50"])])
        rows += [[f"JAX full model (jitted, every layer, the last exit{', ' + r['jax_full_exits'] + ' exits' if dev else ''})",
                  *([f"{r['dev_full_f1']:.4f}"] if dev else []), f"{r['full_f1']:.4f}", M, "1.00", "1.00", "1.00",
                  f"{r['jax_full_ms_p50']:.2f}", *over(r["jax_full_ms_p50"])]]
        if dev and "jax_full_exact_exits_ms_p50" in r:
            rows.append(["JAX full model, exact exits", f"{r['dev_full_f1_exact_exits']:.4f}",
                         f"{r['full_f1_exact_exits']:.4f}", M, "1.00", "1.00", "1.00",
                         f"{r['jax_full_exact_exits_ms_p50']:.2f}", *over(r["jax_full_exact_exits_ms_p50"])])
        if "jax_full_unpadded_ms_p50" in r:  # each sentence at its own shape, as the peers run
            rows.append(["JAX full model, exact exits, unpadded (each sentence at its own shape)", "",
                         f"{r['full_f1_unpadded']:.4f}", M, "1.00",
                         f"{1 / r['jax_full_unpadded_over_jax_full_exact_exits']:.2f}",
                         f"{1 / r['jax_full_unpadded_over_jax_full_exact_exits']:.2f}",
                         f"{r['jax_full_unpadded_ms_p50']:.2f}", *over(r["jax_full_unpadded_ms_p50"])])
        if "jax_full_int8_ms_p50" in r:  # the int8 layout (engine.prepare(weights="int8"))
            rows.append([f"JAX full model, {r['jax_full_exits']} exits, int8 weights", f"{r['dev_full_f1_int8']:.4f}",
                         f"{r['full_f1_int8']:.4f}", M, "1.00", f"{1 / r['jax_full_int8_over_jax_full']:.2f}",
                         f"{1 / r['jax_full_int8_over_jax_full']:.2f}", f"{r['jax_full_int8_ms_p50']:.2f}",
                         *over(r["jax_full_int8_ms_p50"])])
        rows += [_point(f"VEE-{p['measure'].upper()} engine, {p['exits']} exits", p, dev, int8) for p in r["points"]]
        rows += [_point(f"VEE-{p['measure'].upper()} engine, {p['exits']}", p, dev, int8)
                 for p in r.get("points_int8", [])]
        rows += [_point(f"VEE-{p['measure'].upper()} engine, exact exits", p, dev, int8)
                 for p in r.get("points_exact_exits", [])]
        rows += [_point(f"Python loop of per-layer jitted calls, {p['exits']} exits", p, dev, int8)
                 for p in r.get("python_loop_points", [])]
        return _table(["variant (batch 1)", *(["dev F1 (points chosen here)"] if dev else []), "test F1",
                       "avg exit layer", "layer speed-up", "wall speed-up", "wall / layer", "p50 ms",
                       *(["p50 / ORT int8 p50"] if int8 else [])], rows)
    make.source = rel
    return make


def peers(rel: str) -> Callable[[], str]:
    """bench/latency.py's full-model time ratios (total time over the same sentences, batch 1):
    the JAX full model on exact exits over each peer, padded to its bucket and unpadded."""
    names = (("jax_full_over_torch_eager", "JAX full model / PyTorch eager"),
             ("jax_full_over_onnxruntime", "JAX full model / ONNX Runtime float32"),
             ("jax_full_unpadded_over_onnxruntime", "JAX full model, unpadded / ONNX Runtime float32"),
             ("jax_full_unpadded_over_jax_full_exact_exits", "JAX full model, unpadded / padded to its bucket"),
             ("jax_full_over_onnxruntime_int8", "JAX full model / ONNX Runtime int8"),
             ("jax_full_int8_over_onnxruntime", "JAX full model, int8 weights (rank-128 exits) / ONNX Runtime float32"),
             ("jax_full_int8_over_onnxruntime_int8", "JAX full model, int8 weights (rank-128 exits) / ONNX Runtime int8"))

    def make() -> str:
        r = _load(rel)
        return _table(["ratio (exact exits unless stated)", "time ratio"],
                      [(label, f"{r[key]:.2f}") for key, label in names if key in r])
    make.source = rel
    return make


def peers_by_length(rel: str) -> Callable[[], str]:
    """bench/latency.py's ``by_length``: the JAX full model over ONNX Runtime per sentence length."""
    def make() -> str:
        rows = [(b["subwords"], b["sentences"], f"{b['onnxruntime_ms_p50']:.2f}", f"{b['jax_full_over_onnxruntime']:.2f}",
                 f"{b['jax_full_unpadded_over_onnxruntime']:.2f}") for b in _load(rel).get("by_length", [])]
        return _table(["subwords", "sentences", "ORT float32 p50 ms", "JAX full / ORT (padded to its bucket)",
                       "JAX full / ORT (unpadded)"], rows)
    make.source = rel
    return make


def batched(rel: str) -> Callable[[], str]:
    def make() -> str:
        rows = [(b["batch_size"], f"{b['tau']:.2g}", b["patience"], f"{b['avg_exit_layer']:.2f}", f"{b['ideal_ratio']:.2f}",
                 f"{b['throughput_ratio']:.2f}", f"{b['throughput_ratio'] / b['ideal_ratio']:.2f}",
                 f"{b['throughput_ratio_whole_batch_loop']:.2f}") for b in _load(rel)["batched"]]
        return _table(["batch", "tau", "patience", "avg exit layer", "ideal ratio", "throughput ratio (batched_infer)",
                       "ratio / ideal", "whole-batch loop ratio"], rows)
    make.source = rel
    return make


def exit_rank() -> str:
    f1 = _load("bench/results/exit_rank_genia.json")["f1"]
    M = len(f1["0"])
    rows = [["exact" if r == "0" else r] + [f"{x:.4f}" for x in f1[r]] for r in f1]
    return _table(["rank"] + [f"exit {m}" for m in range(1, M + 1)], rows)


exit_rank.source = "bench/results/exit_rank_genia.json"


def genia_exits_compared() -> str:
    f1 = _load("bench/results/exit_rank_genia.json")["f1"]
    small = [e["f1"] for e in _load("results/genia_ffnn64/test_per_exit.json")["per_exit"]]
    rows = [["biaffine on the 384-dim word vectors (the paper's exit)"] + f1["0"],
            ["the same after rank-128 truncation (inference only)"] + f1["128"],
            ["trained with 64-wide projections (`model.ffnn_size=64`)"] + small]
    return _table(["exits"] + [f"exit {m}" for m in range(1, len(small) + 1)],
                  [[r[0]] + [f"{x:.4f}" for x in r[1:]] for r in rows])


genia_exits_compared.source = "bench/results/exit_rank_genia.json, results/genia_ffnn64/test_per_exit.json"


def predictor() -> str:
    """bench/predictor.py: what users call (Predictor) against engine.prepare's layout run directly."""
    d = _load("bench/results/predictor_cpu.json")
    sps = d["sentences_per_s"]
    rows = [[b, f"{sps[f'predictor_b{b}']:.1f}", f"{sps[f'direct_b{b}']:.1f}",
             f"{d[f'predictor_over_direct_time_b{b}']:.3f}"] for b in (1, 32)]
    if "predictor_b32_continuous" in sps:
        rows.append(["32, continuous", f"{sps['predictor_b32_continuous']:.1f}", "", ""])
    return _table(["batch", "Predictor sentences/s", "direct sentences/s", "Predictor / direct time"], rows)


predictor.source = "bench/results/predictor_cpu.json"


def serve_startup() -> str:
    """bench/serve_startup.py: serve.py's seconds to ready, a first start and a later one (cache written)."""
    d = _load("bench/results/serve_startup.json")
    rows = [[name, r["seconds_to_listening"], r["seconds_to_ready"], r["warm_up_seconds"], r["programs_x_shapes"],
             r["warm_up_compilations"], r["warm_up_cache_hits"], r["compilations"], r["cache_hits"]]
            for name, r in (("first (empty cache)", d["first"]), ("later (cache written)", d["later"]))]
    return _table(["start", "s to listening", "s to ready (/health 200)", "warm-up s", "programs x shapes",
                   "warm-up: XLA compilations", "warm-up: read from cache", "process: XLA compilations",
                   "process: read from cache"], rows)


serve_startup.source = "bench/results/serve_startup.json"



def layer_layouts() -> str:
    """bench/layer.py: the full model (no exit) with the layer written several ways, ratios to the module."""
    d = _load("bench/results/layer_cpu.json")
    variants = list(d["rows"][0]["ms"])
    rows = [[r["batch"], r["subwords"]] + [f"{r['ms'][v]:.2f}" for v in variants]
            + [f"{r['over_module'][v]:.3f}" for v in variants[1:]] for r in d["rows"]]
    return _table(["batch", "subwords"] + [f"{v} ms" for v in variants] + [f"{v} / module" for v in variants[1:]], rows)


layer_layouts.source = "bench/results/layer_cpu.json"


def levers() -> str:
    """scripts/levers.py: dev (selected epoch) and test F1 at every exit of each recipe."""
    d = _load("results/levers/levers.json")
    M = max(len(r["test_f1_per_exit"]) for r in d["rows"])
    rows = [[r["data"], r["protocol"], r["change"], f"{r['best_epoch']}/{r['epochs_run']}"]
            + [f"{x:.4f}" for x in r["dev_f1_per_exit"]] + [f"{x:.4f}" for x in r["test_f1_per_exit"]]
            for r in d["rows"]]
    return _table(["data", "protocol", "recipe", "epoch chosen/run"] + [f"dev {m + 1}" for m in range(M)]
                  + [f"test {m + 1}" for m in range(M)], rows)


levers.source = "results/levers/levers.json"


def _mean_sd(x: dict | None, scale: float = 100.0, digits: int = 2) -> str:
    """``{"mean", "std"}`` (scripts/seeds.py's ``mean_std``) as "mean +- sd", scaled; the sd left out for one run."""
    if x is None:
        return ""
    sd = f" +- {scale * x['std']:.{digits}f}" if x["std"] is not None else ""
    return f"{scale * x['mean']:.{digits}f}{sd}"


def seeds() -> str:
    """scripts/seeds.py: last-exit test F1 and the Table 1 rows, mean and standard deviation over seeds."""
    d = _load("results/seeds/seeds.json")
    rows = []
    for r in d.values():
        if not r["seeds_done"]:  # planned, not run yet: listed in the JSON as missing
            continue
        seeds = ", ".join(map(str, r["seeds_done"]))
        rows.append([r["data"], r["recipe"], seeds, "last exit (all layers)", _mean_sd(r["test_f1_last_exit"]), "6"])
        for method, cells in (r.get("table1") or {}).get("rows", {}).items():
            if method == "full model":
                continue
            for target, c in cells.items():
                rows.append([r["data"], "", seeds, f"{method}, target <= {target}", _mean_sd(c["f1"]),
                             _mean_sd(c["avg_exit_layer"], 1.0)])
    return _table(["data", "recipe", "seeds", "row", "test F1 x 100 (mean +- sd)", "test avg exit layer"], rows)


seeds.source = "results/seeds/seeds.json"


def measures() -> str:
    """scripts/measures.py: VEE's test F1 per distance measure, chosen on dev, mean +- sd over seeds."""
    d = _load("results/measures/measures.json")
    rows = []
    for r in d["recipes"].values():
        for target, cells in r["summary"].items():
            for m in d["measures"]:
                c = cells.get(m)
                if c is None:
                    rows.append([r["data"], 0, f"<= {target}", m, "none this fast on dev", ""])
                    continue
                n = c["test_f1"]["n"]  # seeds where dev found a configuration this fast
                rows.append([r["data"], n, f"<= {target}", m, _mean_sd(c["test_f1"]),
                             _mean_sd(c["test_avg_exit_layer"], 1.0)])
    return _table(["data", "seeds with a configuration", "target avg exit layer", "VEE measure", "test F1 x 100 (mean +- sd)",
                   "test avg exit layer"], rows)


measures.source = "results/measures/measures.json"


def msra() -> str:
    """The MSRA floor: test F1 at every exit and the [UNK] rate of MiniLM's vocabulary on the data."""
    per = _load("results/msra/test_per_exit.json")["per_exit"]
    unk = _load("results/msra/unk.json")
    rows = [[e["exit"], f"{e['precision']:.4f}", f"{e['recall']:.4f}", f"{e['f1']:.4f}"] for e in per]
    return (_table(["exit", "precision", "recall", "F1"], rows)
            + f"\n[UNK] subwords with MiniLM's vocabulary: {unk['train_unk_percent']:.1f}% of train, "
              f"{unk['test_unk_percent']:.1f}% of test.\n")


msra.source = "results/msra/test_per_exit.json"


def precision() -> str:
    """bench/precision.py: the JAX full model in float32, bfloat16 and with int8 dense layers."""
    path = ROOT / "bench/results/precision_cpu.json"
    if not path.exists():
        return "Not measured yet: `python bench/precision.py --out bench/results/precision_cpu.json`.\n"
    d = _load("bench/results/precision_cpu.json")
    B = d["batch_size"]
    rows = [[w["variant"], f"{w['ms_p50_b1']:.2f}", f"{w['time_over_float32_b1']:.2f}",
             f"{w[f'sentences_per_s_b{B}']:.1f}", f"{w[f'time_over_float32_b{B}']:.2f}",
             f"{w['last_hidden_max_abs_diff']:.3g}", f"{w['f1_last_exit_b1']:.4f}", f"{w[f'f1_last_exit_b{B}']:.4f}"]
            for w in d["rows"]]
    return _table(["variant", "p50 ms (batch 1)", "time / float32 (batch 1)", f"sentences/s (batch {B})",
                   f"time / float32 (batch {B})",
                   f"last hidden max abs diff (float32 max {d['last_hidden_float32_max_abs']:.1f})",
                   "F1 last exit (batch 1)", f"F1 last exit (batch {B})"], rows)


precision.source = "bench/results/precision_cpu.json"


def precision_hlo() -> str:
    """bench/precision.py: what XLA:CPU compiled the dots of each variant into."""
    path = ROOT / "bench/results/precision_cpu.json"
    if not path.exists():
        return "Not measured yet: `python bench/precision.py --out bench/results/precision_cpu.json`.\n"

    def fmt(d: dict) -> str:
        return ", ".join(f"{k}: {n}" for k, n in sorted(d.items())) or "none"
    rows = [[w["variant"], fmt(w["hlo"]["dots"]), fmt(w["hlo"]["converts"]), fmt(w["hlo"]["custom_calls"]),
             fmt(w["hlo"]["fusion_kinds"])] for w in _load("bench/results/precision_cpu.json")["rows"]]
    return _table(["variant", "dots (lhs x rhs -> out)", "converts (from -> to)", "custom calls", "fusion kinds"], rows)


precision_hlo.source = "bench/results/precision_cpu.json"


def context_cost() -> str:
    """bench/context.py: batch-1 latency of rows encoded alone and with document context."""
    vee = "vee_kl_tau0.01_p2"
    rows = [[r["context_subwords"], f"{r['rows_with_context']}/{r['rows']}", f"{r['mean_subwords']:.1f}",
             f"{r['full_ms_p50']:.2f}", f"{r.get('full_over_first', 1.0):.2f}",  # the first row is the one alone
             f"{r[vee + '_ms_p50']:.2f}", f"{r.get(vee + '_over_first', 1.0):.2f}", f"{r['vee_avg_exit_layer']:.2f}"]
            for r in _load("bench/results/context_cpu.json")["rows"]]
    return _table(["context subwords a side", "rows with context", "subwords a row", "full model ms p50", "full / alone",
                   "VEE-KL ms p50", "VEE-KL / alone", "VEE avg exit layer"], rows)


context_cost.source = "bench/results/context_cpu.json"


TABLES: dict[str, Callable[[], str]] = {
    "demo_per_exit": per_exit("results/demo/test_per_exit.json"),
    "genia_per_exit": per_exit("results/genia/test_per_exit.json"),
    "conll03_per_exit": per_exit("results/conll03/test_per_exit.json"),
    "genia_long_per_exit": per_exit("results/levers/genia_long/test_per_exit.json"),
    "demo_table1": table1("results/demo/sweeps/table1.json"),
    "genia_table1": table1("results/genia/sweeps/table1.json"),
    "conll03_table1": table1("results/conll03/sweeps/table1.json"),
    "genia_long_table1": table1("results/levers/genia_long/sweeps/table1.json"),
    "genia_last": genia_last,
    "load": load_test,
    "latency_demo": latency("bench/results/cpu_demo.json"),
    "batched_demo": batched("bench/results/cpu_demo.json"),
    "peers_demo": peers("bench/results/cpu_demo.json"),
    "peers_by_length_demo": peers_by_length("bench/results/cpu_demo.json"),
    "latency_rank128": latency("bench/results/cpu.json"),
    "latency_ffnn64": latency("bench/results/cpu_ffnn64.json"),
    "batched_rank128": batched("bench/results/cpu.json"),
    "batched_ffnn64": batched("bench/results/cpu_ffnn64.json"),
    "exit_rank": exit_rank,
    "genia_exits_compared": genia_exits_compared,
    "predictor": predictor,
    "serve_startup": serve_startup,
    "layer_layouts": layer_layouts,
    "context_cost": context_cost,
    "levers": levers,
    "precision": precision,
    "precision_hlo": precision_hlo,
    "seeds": seeds,
    "measures": measures,
    "msra": msra,
}


def pages() -> list[Path]:
    """The pages that hold tables: README.md and docs/*.md."""
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def render(text: str) -> tuple[str, list[str]]:
    """The page with every marked table regenerated, and the names of the tables that changed."""
    changed: list[str] = []

    def sub(m: re.Match) -> str:
        name = m["name"]
        if name not in TABLES:
            raise SystemExit(f"unknown table {name!r} (known: {', '.join(TABLES)})")
        body = TABLES[name]()
        if body != m["body"]:
            changed.append(name)
        return m.group(1) + body + m.group(4)

    return MARKER.sub(sub, text), changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a table differs from its JSON")
    args = ap.parse_args(argv)
    stale, used = [], set()
    for page in pages():
        text = page.read_text()
        used |= {m["name"] for m in MARKER.finditer(text)}
        new, changed = render(text)
        stale += [f"{page.relative_to(ROOT)}: table {n} (from {TABLES[n].source})" for n in changed]
        if changed and not args.check:
            page.write_text(new)
    unused = sorted(set(TABLES) - used)
    if unused:
        print(f"tables placed in no page: {', '.join(unused)}", file=sys.stderr)
        return 1
    if stale:
        print(("differ from their JSON (run python scripts/docs_tables.py):\n  " if args.check else "rewrote:\n  ")
              + "\n  ".join(stale), file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
