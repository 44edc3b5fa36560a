"""The lever table of the issue "Quality": dev and test F1 at every exit of each recipe, from the runs.

    python scripts/levers.py [--runs ~/vee_runs]

Each lever is a run of ``scripts/real_runs.sh`` (its workdir under ``--runs``). Where a run's
workdir holds a finished training (``metrics.jsonl``) and its test evaluation
(``test_per_exit.json``), both are copied into ``results/levers/<name>/``; then every lever with
its copies is summarised into ``results/levers/levers.json`` (the docs table reads it:
``scripts/docs_tables.py``). Runs not there yet are listed as missing, never invented.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "levers"

# name: (data set, protocol, what changes, the command that made it; "baseline" names the row it
# is compared with). The 4-epoch CoNLL-2003 baseline is results/conll03 (the README's run).
LEVERS = {
    "conll03": ("CoNLL-2003", "4 epochs", "baseline: configs/conll03.py", "bash scripts/real_runs.sh conll03"),
    "conll03_ffnn64": ("CoNLL-2003", "4 epochs", "exits trained 64 wide (model.ffnn_size=64)",
                       "bash scripts/real_runs.sh conll03_ffnn64"),
    "screen2_base": ("CoNLL-2003", "2-epoch screen", "baseline: configs/conll03.py",
                     "bash scripts/real_runs.sh screen"),
    "screen2_context32": ("CoNLL-2003", "2-epoch screen", "document context, 32 subwords a side "
                          "(data.context_subwords=32)", "bash scripts/real_runs.sh screen"),
    "screen2_casing": ("CoNLL-2003", "2-epoch screen", "casing feature: a word-shape embedding at every exit "
                       "(model.casing=True)", "bash scripts/real_runs.sh screen"),
    "conll03_long": ("CoNLL-2003", "up to 10 epochs, early stopping after 2 without a better dev F1",
                     "casing feature and the schedule over 10 epochs (model.casing=True, train.epochs=10)", "bash scripts/real_runs.sh conll03_long"),
    "conll03_long_nocasing": ("CoNLL-2003", "up to 10 epochs, early stopping after 2 without a better dev F1",
                              "the schedule over 10 epochs alone (train.epochs=10), no casing feature",
                              "bash scripts/real_runs.sh conll03_long_nocasing"),
    "conll03_longer_seed0": ("CoNLL-2003", "up to 20 epochs, early stopping after 3 without a better dev F1",
                             "casing feature and the schedule over 20 epochs (model.casing=True, train.epochs=20)",
                             "bash scripts/real_runs.sh conll03_longer_seeds"),
    "genia": ("GENIA", "5 epochs", "baseline: configs/genia.py", "bash scripts/real_runs.sh genia"),
    "genia_ffnn64": ("GENIA", "5 epochs", "exits trained 64 wide (model.ffnn_size=64)",
                     "bash scripts/real_runs.sh genia_ffnn64"),
    "genia_long": ("GENIA", "up to 12 epochs, early stopping after 3 without a better dev F1",
                   "64-wide exits and the schedule over 12 epochs (model.ffnn_size=64, train.epochs=12)",
                   "bash scripts/real_runs.sh genia_long"),
}
# Where the committed copies of the earlier runs already live.
COMMITTED = {"conll03": ROOT / "results" / "conll03", "genia": ROOT / "results" / "genia",
             "genia_ffnn64": ROOT / "results" / "genia_ffnn64"}


def copy_run(name: str, runs: Path) -> Path | None:
    """The folder holding the lever's metrics.jsonl and test_per_exit.json (copied from its workdir
    into results/levers/<name>/ when it finished there); None while it has not."""
    if name in COMMITTED:
        return COMMITTED[name]
    dst = OUT / name
    src = runs / name
    if (src / "test_per_exit.json").exists() and (src / "metrics.jsonl").exists():
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("metrics.jsonl", "test_per_exit.json", "test_per_exit.png"):
            if (src / f).exists():
                shutil.copy(src / f, dst / f)
    return dst if (dst / "test_per_exit.json").exists() else None


def summary(folder: Path) -> dict:
    """Dev F1 per exit at the selected (best) epoch, test F1 per exit, epochs run."""
    evals = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
             if '"dev_score"' in line]
    best = max(evals, key=lambda e: e["dev_score"])
    test = json.loads((folder / "test_per_exit.json").read_text())["per_exit"]
    return {"epochs_run": evals[-1]["epoch"], "best_epoch": best["epoch"],
            "dev_f1_per_exit": best["dev_f1_per_exit"], "test_f1_per_exit": [e["f1"] for e in test],
            "folder": str(folder.relative_to(ROOT))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default=str(Path.home() / "vee_runs"), help="the workdirs of scripts/real_runs.sh")
    args = ap.parse_args(argv)
    rows, missing = [], []
    for name, (data, protocol, change, command) in LEVERS.items():
        folder = copy_run(name, Path(args.runs).expanduser())
        if folder is None:
            missing.append(name)
            continue
        rows.append({"name": name, "data": data, "protocol": protocol, "change": change,
                     "command": command, **summary(folder)})
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "levers.json").write_text(json.dumps({"command": "python scripts/levers.py", "rows": rows,
                                                 "missing": missing}, indent=1) + "\n")
    for r in rows:
        print(f"{r['name']:20s} dev {r['dev_f1_per_exit'][-1]:.4f} test {r['test_f1_per_exit'][-1]:.4f}")
    if missing:
        print("not finished yet:", ", ".join(missing))


if __name__ == "__main__":
    main()
