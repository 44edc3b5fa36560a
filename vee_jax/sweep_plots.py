"""The sweep figures: F1 against the average exit layer (the paper's Figures 3, 4 and 5).

Each takes the rows of ``sweeps.sweep_split`` for one split and writes a PNG. Every
configuration is a faint dot; a strategy's curve is its Pareto front (``sweeps.pareto_front``):
the best F1 reachable at each average exit layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from .sweeps import ALL, pareto_front

_COLORS = {"VEE-KL": "tab:blue", "entropy": "tab:red", "max-prob": "tab:green", "budget": "tab:gray",
           "kl": "tab:blue", "euclidean": "tab:orange", "cosine": "tab:purple", "edit": "tab:brown"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(ax, rows, label, color, *, front=True, marker="o", linestyle="-"):
    if not rows:
        return
    x = [r["avg_exit_layer"] for r in rows]
    y = [100 * r["f1"] for r in rows]
    ax.scatter(x, y, s=6, color=color, alpha=0.2, linewidths=0)
    if front:
        idx = pareto_front(x, y)
    else:  # one threshold curve: every point, by cost
        idx = sorted(range(len(x)), key=lambda i: (x[i], y[i]))
    ax.plot([x[i] for i in idx], [y[i] for i in idx], marker=marker, ms=3, lw=1.4, color=color,
            linestyle=linestyle, label=label)


def _finish(fig, ax, path, title, num_layers):
    ax.set_xlabel("average exit layer")
    ax.set_ylabel("F1 x 100")
    ax.set_xlim(0.8, num_layers + 0.2)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def _select(rows, **want) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in want.items())]


def plot_strategies(rows: Sequence[dict], path: str | Path, title: str, num_layers: int) -> None:
    """Figure 3: each strategy's Pareto front of F1 against the average exit layer (no ensemble)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.8, 4.0), dpi=130)
    base = dict(ensemble=False, sentences=ALL)
    _curve(ax, _select(rows, strategy="vee", measure="kl", **base), "VEE-KL (all patiences)", _COLORS["VEE-KL"])
    _curve(ax, _select(rows, strategy="entropy", **base), "entropy (BranchyNet)", _COLORS["entropy"])
    _curve(ax, _select(rows, strategy="maxprob", **base), "max-prob (Shallow-Deep)", _COLORS["max-prob"])
    _curve(ax, _select(rows, strategy="budget", **base), "budget (fixed exit)", _COLORS["budget"], marker="s",
           linestyle="--")
    _finish(fig, ax, path, title, num_layers)
    plt.close(fig)


def plot_ensemble(rows: Sequence[dict], path: str | Path, title: str, num_layers: int) -> None:
    """Figure 4: VEE-KL with and without the cross-layer ensemble (Pareto fronts), and budget both ways."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.8, 4.0), dpi=130)
    _curve(ax, _select(rows, strategy="vee", measure="kl", ensemble=False, sentences=ALL), "VEE-KL", "tab:blue")
    _curve(ax, _select(rows, strategy="vee", measure="kl", ensemble=True, sentences=ALL), "VEE-KL + ensemble",
           "tab:cyan", marker="^")
    _curve(ax, _select(rows, strategy="budget", ensemble=False, sentences=ALL), "budget", "tab:gray", marker="s",
           linestyle="--")
    _curve(ax, _select(rows, strategy="budget", ensemble=True, sentences=ALL), "budget + ensemble", "black",
           marker="s", linestyle=":")
    _finish(fig, ax, path, title, num_layers)
    plt.close(fig)


def plot_measures(rows: Sequence[dict], path: str | Path, title: str, num_layers: int,
                  patiences: Sequence[int] | None = None) -> None:
    """Figure 5: VEE with each measure, one panel per patience, one curve per measure over tau.

    When the edit distance was computed on part of the split only, every measure is drawn on
    that part (rows with ``sentences`` = "edit subset"), so that the curves compare like with like.
    """
    plt = _plt()
    vee = [r for r in rows if r["strategy"] == "vee" and not r["ensemble"]]
    subset = "edit subset" if any(r["sentences"] == "edit subset" for r in vee) else ALL
    vee = [r for r in vee if r["sentences"] == subset]
    have = sorted({r["patience"] for r in vee})
    if patiences is None:
        patiences = [p for p in (1, 2, 3, num_layers - 1) if p in have]
        patiences = sorted(set(patiences))
    fig, axes = plt.subplots(1, len(patiences), figsize=(3.3 * len(patiences), 3.4), dpi=130, sharey=True,
                             squeeze=False)
    measures = [m for m in ("kl", "euclidean", "cosine", "edit") if any(r["measure"] == m for r in vee)]
    for ax, p in zip(axes[0], patiences):
        for m in measures:
            _curve(ax, [r for r in vee if r["measure"] == m and r["patience"] == p], m, _COLORS[m], front=False)
        ax.set_xlabel("average exit layer")
        ax.set_xlim(0.8, num_layers + 0.2)
        ax.grid(alpha=0.3)
        ax.set_title(f"patience {p}", fontsize=9)
    axes[0][0].set_ylabel("F1 x 100")
    axes[0][0].legend(fontsize=7, loc="lower right")
    n = vee[0]["n_sentences"] if vee else 0
    fig.suptitle(f"{title} ({n} sentences{'; edit computed on these only' if subset != ALL else ''})", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


PLOTS: dict[str, Callable] = {"pareto": plot_strategies, "ensemble": plot_ensemble, "measures": plot_measures}
"""File stem -> plot function: ``sweeps/<stem>_<split>.png``."""
