"""scripts/measures.py: a run's choices come from its workdir's sweep when it is there, else from the
committed JSON (each session's machine is fresh), else the run is listed as missing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from vee_jax.sweeps import ALL, write_csv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # measures.py imports seeds.py as a script would
spec = importlib.util.spec_from_file_location("measures", ROOT / "scripts" / "measures.py")
measures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(measures)


def _row(split: str, measure: str, tau: float, layer: float, f1: float) -> dict:
    return {"split": split, "strategy": "vee", "measure": measure, "tau": tau, "patience": 2, "layer": "",
            "ensemble": False, "avg_exit_layer": layer, "precision": f1, "recall": f1, "f1": f1, "tp": 1,
            "n_pred": 1, "n_gold": 1, "n_sentences": 10, "sentences": ALL}


def _sweep(workdir: Path) -> None:
    """Two KL configurations: the faster is chosen on dev at target 3; its test row must be reported."""
    rows = [_row("dev", "kl", 0.1, 2.5, 0.70), _row("dev", "kl", 0.01, 3.5, 0.80),
            _row("test", "kl", 0.1, 2.6, 0.65), _row("test", "kl", 0.01, 3.4, 0.75)]
    write_csv(rows, workdir / "sweeps" / "sweep.csv")


def test_a_present_sweep_is_chosen_on_dev_and_reported_on_test(tmp_path):
    _sweep(tmp_path / "run_a")
    out = measures.summarise(tmp_path, ("run_a",), committed={"run_a": {"stale": True}})
    got = out["runs"]["run_a"]["3"]["kl"]
    assert (got["tau"], got["dev_f1"], got["test_f1"], got["test_avg_exit_layer"]) == (0.1, 0.70, 0.65, 2.6)
    assert out["runs"]["run_a"]["4"]["kl"]["test_f1"] == 0.75
    assert out["runs"]["run_a"]["2"]["kl"] is None and out["missing"] == []
    assert out["summary"]["3"]["kl"]["test_f1"]["mean"] == 0.65


def test_a_gone_workdir_keeps_its_committed_choices_and_an_unknown_one_is_missing(tmp_path):
    kept = {f"{t:g}": {m: None for m in measures.MEASURES} for t in measures.TARGETS}
    kept["3"]["kl"] = {"tau": 0.1, "patience": 2, "dev_f1": 0.7, "dev_avg_exit_layer": 2.5, "test_f1": 0.6,
                       "test_avg_exit_layer": 2.7}
    out = measures.summarise(tmp_path, ("gone", "never"), committed={"gone": kept})
    assert out["runs"] == {"gone": kept}
    assert out["missing"] == ["never"]
    assert out["summary"]["3"]["kl"]["test_f1"]["values"] == [0.6]
