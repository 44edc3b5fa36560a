"""Which measure is best (the paper's Figure 5 as numbers): VEE with KL, Euclidean and cosine, chosen on dev.

    python scripts/measures.py [--runs ~/vee_runs]

For each run of a recipe with a sweep (``eval.py --sweep`` writes ``sweeps/sweep.csv`` into the
workdir) and each target average exit layer, the VEE configuration (tau, patience; no ensemble)
of each measure with the best dev F1 at a dev average exit layer <= target, as Table 1 chooses
(``sweeps.choose``), and its test F1 and test average exit layer. The edit distance is left out:
the sweeps compute it on sentences of at most 48 words only, so its rows do not cover the split.
Writes ``results/measures/measures.json`` (per run, and mean and standard deviation over the
runs); the docs table reads it (``scripts/docs_tables.py``). A run whose workdir is gone (each
session's machine is fresh) keeps the choices the committed JSON already holds for it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from seeds import mean_std  # scripts/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "measures" / "measures.json"

RECIPES = {"conll03_long": ("CoNLL-2003", ("conll03_long", "conll03_long_seed1", "conll03_long_seed2")),
           "genia_long": ("GENIA", ("genia_long",))}
MEASURES = ("kl", "euclidean", "cosine")
TARGETS = (2.0, 3.0, 4.0)


def chosen(rows: list[dict], measure: str, target: float) -> dict | None:
    """``{"tau", "patience", "dev_f1", "dev_avg_exit_layer", "test_f1", "test_avg_exit_layer"}`` of
    the VEE configuration of ``measure`` chosen on dev under ``target``; None when none is that fast."""
    from vee_jax.sweeps import choose, config_id

    dev = [r for r in rows if r["split"] == "dev"]
    d = choose(dev, target, lambda r: r["strategy"] == "vee" and r["measure"] == measure and not r["ensemble"])
    if d is None:
        return None
    t = next(r for r in rows if r["split"] == "test" and r["sentences"] == d["sentences"]
             and config_id(r) == config_id(d))
    return {"tau": d["tau"], "patience": d["patience"], "dev_f1": d["f1"], "dev_avg_exit_layer": d["avg_exit_layer"],
            "test_f1": t["f1"], "test_avg_exit_layer": t["avg_exit_layer"]}


def summarise(runs: Path, names: tuple[str, ...], committed: dict) -> dict:
    """``committed``: the recipe's ``runs`` in the JSON written before (used where a workdir is gone)."""
    from vee_jax.sweeps import read_csv

    per_run, missing = {}, []
    for name in names:
        csv = runs / name / "sweeps" / "sweep.csv"
        if csv.exists():
            rows = read_csv(csv)
            per_run[name] = {f"{t:g}": {m: chosen(rows, m, t) for m in MEASURES} for t in TARGETS}
        elif name in committed:
            per_run[name] = committed[name]
        else:
            missing.append(name)
    summary = {}
    for t in TARGETS:
        for m in MEASURES:
            got = [r[f"{t:g}"][m] for r in per_run.values() if r[f"{t:g}"][m] is not None]
            if got:
                summary.setdefault(f"{t:g}", {})[m] = {
                    "test_f1": mean_std([g["test_f1"] for g in got]),
                    "test_avg_exit_layer": mean_std([g["test_avg_exit_layer"] for g in got])}
    return {"runs": per_run, "missing": missing, "summary": summary}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(Path.home() / "vee_runs"))
    args = ap.parse_args(argv)
    runs = Path(args.runs).expanduser()
    out = {"command": "python scripts/measures.py", "selection": "on dev: best dev F1 with dev avg exit layer <= "
           "target (VEE, no ensemble), reported on test", "targets": list(TARGETS), "measures": list(MEASURES),
           "recipes": {}}
    before = json.loads(OUT.read_text())["recipes"] if OUT.exists() else {}
    for recipe, (data, names) in RECIPES.items():
        committed = before.get(recipe, {}).get("runs", {})
        out["recipes"][recipe] = {"data": data, **summarise(runs, names, committed)}
        for t, cells in out["recipes"][recipe]["summary"].items():
            print(recipe, f"target <= {t}:", ", ".join(
                f"{m} {100 * c['test_f1']['mean']:.2f} at {c['test_avg_exit_layer']['mean']:.2f}" for m, c in cells.items()))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
