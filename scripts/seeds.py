"""Seeds of the issue "Quality": last-exit test F1 and the Table 1 rows as mean and standard deviation.

    python scripts/seeds.py [--runs ~/vee_runs]

Each recipe has three runs that differ only in ``--config.seed`` (``scripts/real_runs.sh
demo_seeds`` and ``conll03_seeds``; seed 0 is the run the README reports). A finished run's
``metrics.jsonl``, ``test_per_exit.json`` and, where it has one, ``sweeps/table1.json`` are copied
into ``results/seeds/<run>/``; the summary of every recipe goes to ``results/seeds/seeds.json``
(the docs table reads it: ``scripts/docs_tables.py``). The headline is the mean over the seeds
that finished, never the best seed; a recipe lists the seeds still missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "seeds"

# recipe: (data set, what it is, {seed: run name}); seed 0 lives where the README's results are.
RECIPES = {
    "demo": ("GENIA sample (demo)", "configs/demo.py, 5 epochs",
             {0: "demo", 1: "demo_seed1", 2: "demo_seed2"}),
    "demo_casing": ("GENIA sample (demo)", "configs/demo.py, 5 epochs, casing feature (model.casing=True)",
                    {0: "demo_casing_seed0", 1: "demo_casing_seed1", 2: "demo_casing_seed2"}),
    "conll03_long": ("CoNLL-2003", "configs/conll03.py, casing feature, up to 10 epochs, early stopping after 2",
                     {0: "conll03_long", 1: "conll03_long_seed1", 2: "conll03_long_seed2"}),
    "conll03_longer": ("CoNLL-2003", "configs/conll03.py, casing feature, up to 20 epochs, early stopping after 3",
                       {0: "conll03_longer_seed0", 1: "conll03_longer_seed1", 2: "conll03_longer_seed2"}),
}
# Runs whose results are committed elsewhere already.
COMMITTED = {"demo": ROOT / "results" / "demo", "conll03_long": ROOT / "results" / "levers" / "conll03_long"}
FILES = ("metrics.jsonl", "test_per_exit.json", "sweeps/table1.json", "sweeps/table1.md",  # table1.md: the bootstrap
         "sweeps/summary.json")


def run_folder(name: str, runs: Path) -> Path | None:
    """The folder with the run's ``test_per_exit.json`` (copied from its workdir when it finished)."""
    if name in COMMITTED:
        return COMMITTED[name]
    src, dst = runs / name, OUT / name
    if (src / "test_per_exit.json").exists():
        for f in FILES:
            if (src / f).exists():
                (dst / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src / f, dst / f)
    return dst if (dst / "test_per_exit.json").exists() else None


def mean_std(values: list[float]) -> dict:
    """``{"mean", "std" (sample, n-1; None for one value), "n", "values"}``."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": values}


def table1_cells(table1: dict) -> dict[str, dict[str, tuple[float, float]]]:
    """``{method: {target: (test F1, test avg exit layer)}}`` from a ``table1.json``."""
    cells: dict[str, dict[str, tuple[float, float]]] = {}
    for e in table1["entries"]:
        if "test_f1" not in e:  # no configuration this fast on dev ("n/a" in the table)
            continue
        cells.setdefault(e["method"], {})[f"{e['target']:g}"] = (e["test_f1"], e["test_avg_exit_layer"])
    cells["full model"] = {"all layers": (table1["full"]["test_f1"], table1["full"]["test_avg_exit_layer"])}
    return cells


def summarise(recipe: str, runs: Path) -> dict:
    data, what, seeds = RECIPES[recipe]
    found = {s: run_folder(n, runs) for s, n in seeds.items()}
    done = {s: f for s, f in found.items() if f is not None}
    last = [json.loads((f / "test_per_exit.json").read_text())["per_exit"][-1]["f1"] for f in done.values()]
    out = {"data": data, "recipe": what, "seeds_done": sorted(done), "seeds_missing": sorted(set(seeds) - set(done)),
           "runs": {str(s): seeds[s] for s in done},
           "test_f1_last_exit": mean_std(last) if last else None}
    tables = {s: table1_cells(json.loads((f / "sweeps" / "table1.json").read_text()))
              for s, f in done.items() if (f / "sweeps" / "table1.json").exists()}
    if tables:
        rows: dict[str, dict[str, dict]] = {}
        for method in next(iter(tables.values())):
            for target in next(iter(tables.values()))[method]:
                got = [t[method][target] for t in tables.values() if target in t.get(method, {})]
                rows.setdefault(method, {})[target] = {"f1": mean_std([g[0] for g in got]),
                                                       "avg_exit_layer": mean_std([g[1] for g in got])}
        out["table1"] = {"seeds": sorted(tables), "rows": rows}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(Path.home() / "vee_runs"))
    args = ap.parse_args(argv)
    runs = Path(args.runs).expanduser()
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {r: summarise(r, runs) for r in RECIPES}
    (OUT / "seeds.json").write_text(json.dumps(summary, indent=2) + "\n")
    for r, s in summary.items():
        f1 = s["test_f1_last_exit"]
        got = "none finished" if f1 is None else (
            f"{f1['mean']:.4f}" + (f" +- {f1['std']:.4f}" if f1["std"] is not None else "") + f" over {f1['n']}")
        print(f"{r}: last-exit test F1 {got}; missing seeds {s['seeds_missing']}")
    print(f"wrote {OUT / 'seeds.json'}")


if __name__ == "__main__":
    main()
