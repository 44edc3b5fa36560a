"""The ladder of policies the depth controller moves along, deepest first.

``default_ladder`` (the base policy, then fixed budgets), ``ladder_from_sweep`` (the base policy,
then the dev sweep's best VEE-KL rows, chosen as Table 1 chooses) and ``load_ladder`` (a JSON
file). The sweep is read with ``sweeps.read_csv``, the inverse of the writer of ``sweep.csv``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from ..config import ConfigError
from ..policies import BudgetPolicy, Policy, policy_from_input
from ..sweeps import METHODS, choose, read_csv


@dataclasses.dataclass(frozen=True)
class Level:
    """One rung of the ladder: a policy and, when measured offline, its dev average exit layer and F1."""

    policy: Policy
    avg_exit_layer: float | None = None
    f1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.to_dict(), "avg_exit_layer": self.avg_exit_layer, "f1": self.f1}


def _depth(policy: Policy, num_layers: int) -> float:
    """A policy's deepest exit: the layer every sentence leaves at when it has one, else M."""
    fixed = policy.fixed_exit(num_layers, policy.knobs())
    return num_layers if fixed is None else int(fixed)


def default_ladder(base: Policy, num_layers: int) -> list[Level]:
    """``base``, then fixed budgets at 2M/3, M/2 and M/3 layers (those shallower than ``base``).

    A ``base`` that exits adaptively (VEE) starts the budgets at M/2: its average depth is not
    known here, and a budget of 2M/3 layers cost more than the default VEE policy on the demo
    (4 layers against 3.44 of 6), so stepping down to it made an overloaded service slower.
    ``ladder_from_sweep`` places rungs by measured depth instead.
    """
    levels = [Level(base)]
    fractions = (2 / 3, 1 / 2, 1 / 3) if base.fixed_exit(num_layers, base.knobs()) is not None else (1 / 2, 1 / 3)
    for layer in sorted({max(1, round(num_layers * f)) for f in fractions}, reverse=True):
        if layer < _depth(levels[-1].policy, num_layers):
            levels.append(Level(BudgetPolicy(layer=layer), avg_exit_layer=float(layer)))
    return levels


def ladder_from_sweep(rows: Sequence[dict[str, Any]] | str | Path, base: Policy, num_layers: int,
                      split: str = "dev") -> list[Level]:
    """``base``, then the VEE-KL configuration with the best ``split`` F1 at each average exit layer
    target 2M/3, M/2, M/3 (``sweeps.choose``, as Table 1 chooses), keeping only strictly shallower rungs.

    ``rows``: the sweep's rows, or the path of the ``sweep.csv`` that ``eval.py --sweep`` wrote.
    """
    if isinstance(rows, (str, Path)):
        rows = read_csv(rows)
    split_rows = [r for r in rows if r["split"] == split]
    base_row = next((r for r in split_rows if policy_from_input(r, strict=False) == base), None)
    levels = [Level(base, base_row["avg_exit_layer"] if base_row else None, base_row["f1"] if base_row else None)]
    for target in (2 * num_layers / 3, num_layers / 2, num_layers / 3):
        row = choose(split_rows, target, METHODS["VEE-KL"])
        prev = levels[-1].avg_exit_layer if levels[-1].avg_exit_layer is not None else num_layers
        if row is not None and row["avg_exit_layer"] < prev - 1e-9:
            levels.append(Level(policy_from_input(row, strict=False), row["avg_exit_layer"], row["f1"]))
    return levels


def load_ladder(path: str | Path) -> list[Level]:
    """A ladder from JSON: a list (deepest first) of policy dicts, or of ``{"policy": {...}, ...}``."""
    items = json.loads(Path(path).read_text())
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{path}: expected a non-empty JSON list of policies, deepest first")
    levels = []
    for i, it in enumerate(items):
        try:
            pol = policy_from_input(it["policy"] if isinstance(it, dict) and "policy" in it else it)
        except ValueError as e:
            raise ConfigError(f"{path}: policy {i}: {e}") from None
        extra = it if isinstance(it, dict) and "policy" in it else {}
        levels.append(Level(pol, extra.get("avg_exit_layer"), extra.get("f1")))
    return levels


__all__ = ["Level", "default_ladder", "ladder_from_sweep", "load_ladder"]
