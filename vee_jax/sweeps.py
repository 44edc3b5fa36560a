"""Sweeps over every exit policy from cached tables (Sec. 5.4-5.5: Figures 3-5, Table 1).

Once per split (``summarize``):

* every measure's distance matrices ``D[i, m]`` and the baselines' signals of every layer
  (``offline.layer_distances`` / ``layer_signals`` on the cached tables, re-batched by length);
* the decoded spans of every (sentence, layer), and of every (sentence, layer) of the cross-layer
  ensemble (the mean of tables 1..m, Sec. 5.5.1), reduced to counts: true positives and
  predicted spans per (ensemble, layer, sentence), gold spans per sentence.

After that a configuration's exit layers are a few numpy comparisons (its policy's
``exit_layers`` over the summary, which is a ``policies.Evidence``; each policy class's ``sweep``
for a whole grid) and its micro P/R/F1 a lookup and a sum, so whole grids cost milliseconds, and
a paired bootstrap over sentences only resamples those counts.

Table 1 is chosen on dev (``table1``): for each target average exit layer, each method's
configuration with the best dev F1 among those whose dev average exit layer is <= the target;
its test F1 and test average exit layer are reported. The paper varied the thresholds on test.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .config import ConfigError
from .data.features import WORD_BUCKETS
from .decode import decode_table
from .offline import layer_distances, layer_signals
from .policies import POLICIES, Policy, policy_from_input

ALL = "all"  # the ``sentences`` field of rows over the whole split
_BUCKETS = WORD_BUCKETS
_EDIT_BUCKETS = tuple(range(8, 513, 8))  # finer: the edit distance's cost grows with the padded length
MAX_CELLS = 48 * 48 * 64  # padded cells per batch when re-batching cached tables


# --- one split, summarised once -------------------------------------------------------------------
@dataclasses.dataclass
class SplitSummary:
    """Everything a sweep needs of one split (N sentences, M layers).

    distances: measure -> [M, M, N] float32 (``D[i, m]`` for i < m, NaN elsewhere; for ``edit``
    also NaN for the sentences it was not computed on, see ``edit_done``). signals: "entropy",
    "maxprob" -> [M, N]. tp, n_pred: [2, M, N] int (axis 0: without / with the ensemble; axis 1:
    the exit layer, 0-based). n_gold: [N]. timings: seconds per measure, "decode", "edit_sentences".
    """

    lengths: np.ndarray
    distances: dict[str, np.ndarray]
    signals: dict[str, np.ndarray]
    tp: np.ndarray
    n_pred: np.ndarray
    n_gold: np.ndarray
    edit_done: np.ndarray
    timings: dict[str, float]

    @property
    def num_layers(self) -> int:
        return self.tp.shape[1]

    @property
    def num_sentences(self) -> int:
        return len(self.lengths)

    # ``policies.Evidence``: what a policy's ``exit_layers`` and ``sweep`` read
    def distance(self, measure: str) -> np.ndarray:
        return self.distances[measure]

    def signal(self, name: str) -> np.ndarray:
        return self.signals[name]

    def computed(self, measure: str) -> np.ndarray:
        """[N] bool: the sentences whose ``distance(measure)`` was computed."""
        if measure not in self.distances:
            return np.zeros(self.num_sentences, bool)
        return self.edit_done if measure == "edit" else np.ones(self.num_sentences, bool)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"lengths": self.lengths, "tp": self.tp, "n_pred": self.n_pred, "n_gold": self.n_gold,
               "edit_done": self.edit_done, "timings": np.asarray(json.dumps(self.timings))}
        out.update({f"dist_{k}": v for k, v in self.distances.items()})
        out.update({f"signal_{k}": v for k, v in self.signals.items()})
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "SplitSummary":
        return cls(lengths=a["lengths"], tp=a["tp"], n_pred=a["n_pred"], n_gold=a["n_gold"],
                   edit_done=a["edit_done"].astype(bool), timings=json.loads(str(a["timings"])),
                   distances={k[5:]: a[k] for k in a if k.startswith("dist_")},
                   signals={k[7:]: a[k] for k in a if k.startswith("signal_")})


def _bucket(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= n; n itself past the last one (a windowed sentence can be that long)."""
    return next((b for b in buckets if max(n, 1) <= b), n)


def _rebatch(tables: Sequence[np.ndarray], idx: Iterable[int], buckets: Sequence[int]):
    """Yield ``(indices, probs [M, B, L, L, K], lengths [B])``: cached tables padded by length bucket.

    Rows past ``indices`` are empty sentences (length 0), so one bucket compiles once. Results do
    not depend on the padding (NOTES item 3).
    """
    idx = sorted(idx, key=lambda i: tables[i].shape[1])
    groups: dict[int, list[int]] = {}
    for i in idx:
        groups.setdefault(_bucket(tables[i].shape[1], buckets), []).append(i)
    for L, members in groups.items():
        B = max(1, min(64, MAX_CELLS // (L * L)))
        M, K = tables[members[0]].shape[0], tables[members[0]].shape[-1]
        for k in range(0, len(members), B):
            chunk = members[k:k + B]
            probs = np.zeros((M, B, L, L, K), np.float32)
            lengths = np.zeros(B, np.int32)
            for r, i in enumerate(chunk):
                n = tables[i].shape[1]
                probs[:, r, :n, :n] = tables[i]
                lengths[r] = n
            yield chunk, probs, lengths


def span_counts(tables: Sequence[np.ndarray], gold: Sequence[set], labels: Sequence[str], nested: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tp [2, M, N], n_pred [2, M, N], n_gold [N])`` of every (ensemble, layer, sentence).

    The spans decoded (Yu et al.) from table m, and from the ensemble table (mean of tables
    0..m, summed in order in float32 as ``engine.vee_infer`` and ``offline.exit_tables`` do),
    matched exactly against the gold ``(start, end, type)`` set of each sentence.
    """
    N = len(tables)
    M = tables[0].shape[0] if N else 0
    tp = np.zeros((2, M, N), np.int32)
    n_pred = np.zeros((2, M, N), np.int32)
    n_gold = np.asarray([len(g) for g in gold], np.int32)
    for i, (t, g) in enumerate(zip(tables, gold)):
        n = t.shape[1]
        acc = np.zeros(t.shape[1:], np.float32)
        for m in range(M):
            acc = acc + t[m]
            for e, table in ((0, t[m]), (1, acc / np.float32(m + 1))):
                if e == 1 and m == 0:  # the mean of one table is the table
                    tp[1, 0, i], n_pred[1, 0, i] = tp[0, 0, i], n_pred[0, 0, i]
                    continue
                pred = {(s, en, labels[c - 1]) for s, en, c, _ in decode_table(table, n, nested)}
                tp[e, m, i], n_pred[e, m, i] = len(pred & g), len(pred)
    return tp, n_pred, n_gold


def summarize(
    tables: Sequence[np.ndarray], gold: Sequence[set], labels: Sequence[str], nested: bool, *,
    measures: Sequence[str] = ("kl", "euclidean", "cosine", "edit"), edit_max_words: int | None = None,
    progress: bool = False, log: Callable[[str], None] | None = None,
) -> SplitSummary:
    """Distances, signals and span counts of one split from its cached tables.

    tables: per sentence float32 [M, n_i, n_i, K]; gold: per sentence the set of gold
    ``(start, end, type)`` (``Sentence.span_set()``; entities that no window holds included, so
    they count as missed). ``edit_max_words``: compute the edit distance (O(n^2) per pair with
    n = L(L+1)/2 cells, so O(L^4)) only for sentences of at most this many words (None: all).
    """
    N = len(tables)
    if N == 0:
        raise ValueError("no sentences to summarise")
    M = tables[0].shape[0]
    lengths = np.asarray([t.shape[1] for t in tables], np.int32)
    distances = {m: np.full((M, M, N), np.nan, np.float32) for m in measures}
    signals = {"entropy": np.zeros((M, N), np.float32), "maxprob": np.zeros((M, N), np.float32)}
    timings: dict[str, float] = {}
    say = log or (lambda s: None)

    cheap = [m for m in measures if m != "edit"]
    t0 = time.perf_counter()
    for chunk, probs, lens in _rebatch(tables, range(N), _BUCKETS):
        B = len(chunk)
        sig = layer_signals(probs, lens)
        for k in signals:
            signals[k][:, chunk] = sig[k][:, :B]
        for m in cheap:
            distances[m][:, :, chunk] = layer_distances(m, probs, lens)[:, :, :B]
    timings["distances_and_signals"] = time.perf_counter() - t0
    say(f"{', '.join(cheap)} distances and signals of {N} sentences: {timings['distances_and_signals']:.1f} s")

    edit_done = np.zeros(N, bool)
    if "edit" in measures:
        limit = edit_max_words if edit_max_words is not None else int(lengths.max())
        todo = [i for i in range(N) if lengths[i] <= limit]
        t0 = time.perf_counter()
        batches = list(_rebatch(tables, todo, _EDIT_BUCKETS))
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="edit distance", unit="batch", leave=False)
        for chunk, probs, lens in batches:
            distances["edit"][:, :, chunk] = layer_distances("edit", probs, lens)[:, :, :len(chunk)]
        edit_done[todo] = True
        timings["edit"] = time.perf_counter() - t0
        timings["edit_sentences"] = float(len(todo))
        say(f"edit distance of {len(todo)}/{N} sentences (<= {limit} words): {timings['edit']:.1f} s")

    t0 = time.perf_counter()
    tp, n_pred, n_gold = span_counts(tables, gold, labels, nested)
    timings["decode"] = time.perf_counter() - t0
    say(f"decoding {N} sentences x {M} layers x (single, ensemble): {timings['decode']:.1f} s")
    return SplitSummary(lengths, distances, signals, tp, n_pred, n_gold, edit_done, timings)


# --- grids ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SweepGrid:
    """The configurations of a sweep. Distances and entropy are swept on a log grid; max-prob on
    1 - a log grid (its threshold lives just below 1). ``patiences`` None: 1..M-1."""

    measures: tuple[str, ...] = ("kl", "euclidean", "cosine", "edit")
    patiences: tuple[int, ...] | None = None
    distance_taus: tuple[float, ...] = tuple(np.logspace(-6, 0, 61).tolist())
    entropy_taus: tuple[float, ...] = tuple(np.logspace(-6, 0, 61).tolist())
    maxprob_taus: tuple[float, ...] = tuple((1 - np.logspace(-6, 0, 61)).tolist())
    ensembles: tuple[bool, ...] = (False, True)


def _prf(tp, n_pred, n_gold):
    tp, n_pred, n_gold = (np.asarray(x, np.float64) for x in (tp, n_pred, n_gold))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n_pred > 0, tp / n_pred, 0.0)
        r = np.where(n_gold > 0, tp / n_gold, 0.0)
        f = np.where(n_gold + n_pred > 0, 2 * tp / (n_gold + n_pred), 0.0)
    return p, r, f


def sentence_counts(summary: SplitSummary, exits: np.ndarray, ensemble: bool,
                    cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-sentence ``(tp, n_pred)`` at the given exits: exits [..., n] 1-based over sentences ``cols``."""
    cols = np.arange(summary.num_sentences) if cols is None else cols
    e = int(bool(ensemble))
    return summary.tp[e][exits - 1, cols], summary.n_pred[e][exits - 1, cols]


def _rows(split, summary, exits, ensemble, cols, sentences, **config) -> list[dict]:
    """Rows of configurations whose exit layers are ``exits`` [C, n] (C configs over sentences cols)."""
    tp, n_pred = sentence_counts(summary, exits, ensemble, cols)
    n_gold = summary.n_gold[cols].sum()
    p, r, f = _prf(tp.sum(-1), n_pred.sum(-1), n_gold)
    avg = exits.mean(-1)
    rows = []
    for c in range(exits.shape[0]):
        row = {"split": split, "strategy": config["strategy"], "measure": config.get("measure", ""),
               "tau": config["tau"][c] if "tau" in config else "",
               "patience": config["patience"][c] if "patience" in config else "",
               "layer": config["layer"][c] if "layer" in config else "", "ensemble": bool(ensemble),
               "avg_exit_layer": float(avg[c]), "precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]),
               "tp": int(tp[c].sum()), "n_pred": int(n_pred[c].sum()), "n_gold": int(n_gold),
               "n_sentences": len(cols), "sentences": sentences}
        rows.append(row)
    return rows


def sweep_split(summary: SplitSummary, split: str, grid: SweepGrid = SweepGrid(),
                kinds: Sequence[type] | None = None) -> list[dict]:
    """Every configuration of ``grid`` on one split: a list of rows (see ``CSV_FIELDS``).

    Each policy class in ``kinds`` (default: every registered one, ``policies.POLICIES``) gives
    its own grid (``Policy.sweep``): VEE with every measure, patience and tau; entropy and
    max-prob with every tau; budget at every layer; the full model; each with and without the
    ensemble (the full model without). When the edit distance was computed on part of the split
    only, the VEE rows of every measure are repeated on that part (``sentences`` = "edit
    subset") so that the measure ablation compares like with like.
    """
    N = summary.num_sentences
    everyone = np.arange(N)
    edit_subset = np.flatnonzero(summary.computed("edit"))
    subsets = [(ALL, everyone)]
    if "edit" in summary.distances and 0 < len(edit_subset) < N:
        subsets.append(("edit subset", edit_subset))
    rows: list[dict] = []
    for ens in grid.ensembles:
        for kind in (POLICIES.values() if kinds is None else kinds):
            for name, cols, exits, fields in kind.sweep(summary, grid, subsets, ens):
                rows += _rows(split, summary, exits, ens, cols, name, strategy=kind.name, **fields)
    return rows


def config_exits(summary: SplitSummary, row: dict | Policy) -> np.ndarray:
    """Exit layers [N] (1-based) of the configuration of ``row`` (or a policy) on every sentence of ``summary``."""
    return policy_from_input(row, strict=False).exit_layers(summary)["exit_layer"]


def near_ties(summary: SplitSummary, row: dict | Policy, exits: np.ndarray | None = None) -> int:
    """Decisions up to the exit whose distance (or signal) lies within ``policies.NEAR_TIE`` of tau:
    they may go the other way in the online engine (float rounding differs between batch shapes).
    ``exits`` (the configuration's exit layers) is not needed: the policy finds them again."""
    return int(policy_from_input(row, strict=False).exit_layers(summary)["near_ties"].sum())


# --- Pareto fronts, bootstrap, Table 1 ---------------------------------------------------------
def pareto_front(cost: Sequence[float], score: Sequence[float]) -> np.ndarray:
    """Indices of the non-dominated points (lower cost, higher score), sorted by cost.

    A point is dominated when another has cost <= and score >= with one of them strict; of
    identical points the first is kept.
    """
    cost, score = np.asarray(cost, float), np.asarray(score, float)
    order = np.lexsort((-score, cost))  # by cost, then best score first
    front, best = [], -np.inf
    for i in order:
        if score[i] > best:
            front.append(i)
            best = score[i]
    return np.asarray(front, int)


def paired_bootstrap(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], n_gold: np.ndarray,
                     n_resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap over sentences of the micro-F1 difference F1(a) - F1(b).

    a, b: per-sentence ``(tp, n_pred)`` of the two systems on the same N sentences; n_gold [N].
    Each resample draws N sentences with replacement (the same for both systems) and recomputes
    both micro F1s from the summed counts. Returns the observed difference, the resamples' mean,
    a 95% percentile interval, and ``p_le_0``: the fraction of resamples with difference <= 0
    (small: a is reliably better; identical systems give 1).
    """
    tp_a, np_a = (np.asarray(x, np.float64) for x in a)
    tp_b, np_b = (np.asarray(x, np.float64) for x in b)
    g = np.asarray(n_gold, np.float64)
    N = len(g)
    rng = np.random.default_rng(seed)
    W = np.stack([np.bincount(rng.integers(0, N, N), minlength=N) for _ in range(n_resamples)]).astype(np.float64)
    f = lambda tp, npred, w: _prf(w @ tp, w @ npred, w @ g)[2]
    diffs = f(tp_a, np_a, W) - f(tp_b, np_b, W)
    observed = float(f(tp_a, np_a, np.ones(N)) - f(tp_b, np_b, np.ones(N)))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": observed, "mean": float(diffs.mean()), "ci95": [float(lo), float(hi)],
            "p_le_0": float((diffs <= 0).mean()), "n_resamples": int(n_resamples), "seed": int(seed)}


METHODS: dict[str, Callable[[dict], bool]] = {
    "VEE-KL": lambda r: r["strategy"] == "vee" and r["measure"] == "kl" and not r["ensemble"],
    "VEE-KL + ensemble": lambda r: r["strategy"] == "vee" and r["measure"] == "kl" and r["ensemble"],
    "entropy (BranchyNet)": lambda r: r["strategy"] == "entropy" and not r["ensemble"],
    "max-prob (Shallow-Deep)": lambda r: r["strategy"] == "maxprob" and not r["ensemble"],
    "budget": lambda r: r["strategy"] == "budget" and not r["ensemble"],
}
"""Table 1's methods: which sweep rows each may choose from (always over the whole split)."""
BASELINES = ("entropy (BranchyNet)", "max-prob (Shallow-Deep)", "budget")
_CONFIG = ("strategy", "measure", "tau", "patience", "layer", "ensemble")


def config_id(row: dict) -> tuple:
    """A sweep row's configuration (strategy, measure, tau, patience, layer, ensemble): the same on dev and test."""
    return tuple(row[k] for k in _CONFIG)


def choose(rows: Sequence[dict], target: float, method: Callable[[dict], bool]) -> dict | None:
    """The row with the best F1 among ``method``'s rows whose avg exit layer is <= target (ties: the
    lower avg exit layer, then the first in grid order); None when no row is that fast."""
    ok = [r for r in rows if r["sentences"] == ALL and method(r) and r["avg_exit_layer"] <= target + 1e-9]
    if not ok:
        return None
    return min(ok, key=lambda r: (-r["f1"], r["avg_exit_layer"]))


def default_targets(num_layers: int) -> list[float]:
    """Low, middle and high average exit layers: M/3, M/2, 2M/3 (2, 3, 4 of 6 layers)."""
    return [round(num_layers / 3, 2), round(num_layers / 2, 2), round(2 * num_layers / 3, 2)]


def table1(dev_rows: Sequence[dict], test_rows: Sequence[dict], test: SplitSummary, targets: Sequence[float], *,
           n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Table 1 chosen on dev, reported on test, with a paired bootstrap of VEE-KL against each baseline."""
    by_id = {config_id(r): r for r in test_rows if r["sentences"] == ALL}
    full = next(r for r in test_rows if r["strategy"] == "full")
    entries, boot = [], []
    for target in targets:
        chosen: dict[str, dict] = {}
        for name, method in METHODS.items():
            d = choose(dev_rows, target, method)
            if d is None:
                entries.append({"target": target, "method": name, "config": None})
                continue
            t = by_id[config_id(d)]
            exits = config_exits(test, t)
            chosen[name] = {"row": t, "exits": exits}
            entries.append({
                "target": target, "method": name, "config": {k: d[k] for k in _CONFIG if d[k] != ""},
                "dev_f1": d["f1"], "dev_avg_exit_layer": d["avg_exit_layer"],
                "test_f1": t["f1"], "test_precision": t["precision"], "test_recall": t["recall"],
                "test_avg_exit_layer": t["avg_exit_layer"], "test_near_ties": near_ties(test, t, exits),
            })
        if "VEE-KL" in chosen:
            a = sentence_counts(test, chosen["VEE-KL"]["exits"], False)
            for base in BASELINES:
                if base in chosen:
                    b = sentence_counts(test, chosen[base]["exits"], chosen[base]["row"]["ensemble"])
                    boot.append({"target": target, "a": "VEE-KL", "b": base,
                                 **paired_bootstrap(a, b, test.n_gold, n_resamples, seed)})
    return {"targets": list(targets), "selection": "on dev: best dev F1 with dev avg exit layer <= target",
            "entries": entries, "bootstrap": boot,
            "full": {"test_f1": full["f1"], "test_avg_exit_layer": full["avg_exit_layer"]},
            "num_layers": test.num_layers, "test_sentences": test.num_sentences}


def format_table1(t1: dict[str, Any]) -> str:
    """Table 1 as markdown: test F1 (test avg exit layer) per method and target, the chosen configs,
    and the bootstrap of each difference."""
    targets = t1["targets"]
    cell = {(e["target"], e["method"]): e for e in t1["entries"]}
    lines = ["| method | " + " | ".join(f"target <= {t:g}" for t in targets) + " |",
             "|---|" + "---|" * len(targets)]
    for name in METHODS:
        vals = []
        for t in targets:
            e = cell.get((t, name))
            vals.append("n/a" if not e or e["config"] is None else f"{100 * e['test_f1']:.2f} ({e['test_avg_exit_layer']:.2f})")
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    M = t1["num_layers"]
    lines.append("| full model | " + " | ".join(f"{100 * t1['full']['test_f1']:.2f} ({M})" for _ in targets) + " |")
    lines += ["", "Test F1 x 100 (test average exit layer). Each method's tau and patience are chosen on dev: the "
              "best dev F1 among configurations whose dev average exit layer is <= the target (the paper varied "
              "them on test). Test average exit layers can exceed the target slightly.", "",
              "| target | method | chosen on dev | dev F1 | dev avg layer | test near-ties |", "|---|---|---|---|---|---|"]
    for e in t1["entries"]:
        if e["config"] is None:
            lines.append(f"| {e['target']:g} | {e['method']} | none this fast | | | |")
            continue
        cfg = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in e["config"].items()
                        if k not in ("strategy", "ensemble"))
        lines.append(f"| {e['target']:g} | {e['method']} | {cfg} | {100 * e['dev_f1']:.2f} | "
                     f"{e['dev_avg_exit_layer']:.2f} | {e['test_near_ties']} |")
    if t1["bootstrap"]:
        b0 = t1["bootstrap"][0]
        lines += ["", f"Paired bootstrap over test sentences ({b0['n_resamples']} resamples, seed {b0['seed']}): "
                  "VEE-KL minus the baseline, F1 x 100; p = fraction of resamples with difference <= 0.", "",
                  "| target | baseline | difference | 95% interval | p |", "|---|---|---|---|---|"]
        for b in t1["bootstrap"]:
            lines.append(f"| {b['target']:g} | {b['b']} | {100 * b['diff']:+.2f} | "
                         f"[{100 * b['ci95'][0]:+.2f}, {100 * b['ci95'][1]:+.2f}] | {b['p_le_0']:.3f} |")
    return "\n".join(lines) + "\n"


# --- output -------------------------------------------------------------------------------------
# The columns of sweep.csv and the type of each ("" in a cell: the configuration has no such field).
CSV_COLUMNS: dict[str, type] = {
    "split": str, "strategy": str, "measure": str, "tau": float, "patience": int, "layer": int, "ensemble": bool,
    "avg_exit_layer": float, "precision": float, "recall": float, "f1": float, "tp": int, "n_pred": int,
    "n_gold": int, "n_sentences": int, "sentences": str}
CSV_FIELDS = list(CSV_COLUMNS)


def write_csv(rows: Sequence[dict], path: str | Path) -> None:
    """``sweep.csv``: one line per row, the ``CSV_FIELDS`` columns (floats written exactly, as ``repr``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})


def _cell(kind: type, text: str):
    if text == "" and kind is not str:
        return ""  # a field the configuration does not have (tau of a budget row, ...)
    if kind is bool:
        if text not in ("True", "False"):
            raise ValueError(f"expected True or False, got {text!r}")
        return text == "True"
    return kind(text)


def read_csv(path: str | Path) -> list[dict]:
    """The rows ``write_csv`` wrote to ``path``, with the types they had: ``read_csv(p) == rows`` (on the
    ``CSV_FIELDS`` keys) after ``write_csv(rows, p)``."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [k for k in CSV_FIELDS if k not in (reader.fieldnames or ())]
        if missing:
            raise ConfigError(f"{path}: not a sweep CSV (columns {missing} missing)")
        rows = []
        for i, r in enumerate(reader, 2):
            try:
                rows.append({k: _cell(kind, r[k]) for k, kind in CSV_COLUMNS.items()})
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{path}: line {i}: {e}") from None
    return rows


__all__ = ["CSV_COLUMNS", "CSV_FIELDS", "METHODS", "SplitSummary", "SweepGrid", "choose", "config_exits",
           "default_targets", "format_table1", "near_ties", "paired_bootstrap", "pareto_front", "read_csv",
           "sentence_counts", "summarize", "sweep_split", "table1", "write_csv"]
