"""Evaluation exit by exit (budgeted exiting, Sec. 2.3.2): P/R/F1 and the entropy of Eq. 6 per exit."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from .data.features import Encoded, iterate_batches
from .data.sentence import Sentence
from .decode import decode_table
from .measures import normalized_entropy
from .metrics import span_prf
from .training import ModelSpec, eval_step

_entropy = jax.jit(normalized_entropy)


def exit_tables(state: Any, spec: ModelSpec, encoded: Sequence[Encoded], batch_size: int, *, progress: bool = False):
    """Yield ``(sentence indices, lengths [B], probs [M, B, L, L, K] numpy, entropy [M, B])`` per batch."""
    batches = iterate_batches(encoded, batch_size)
    if progress:
        batches = tqdm(list(batches), desc="eval", unit="batch", leave=False)
    for idx, batch in batches:
        probs = eval_step(state, batch, spec=spec)
        ent = _entropy(probs, batch["lengths"])
        yield idx, batch["lengths"], np.asarray(probs), np.asarray(ent)


def predict_exits(
    state: Any, spec: ModelSpec, encoded: Sequence[Encoded], labels: Sequence[str], nested: bool,
    batch_size: int = 32, *, progress: bool = False,
) -> tuple[list[list[set]], np.ndarray]:
    """Decoded spans of every exit: ``(pred[m][i] = {(start, end, type)}, entropy [M, N])``."""
    M, N = spec.num_exits, len(encoded)
    pred: list[list[set]] = [[set() for _ in range(N)] for _ in range(M)]
    entropy = np.zeros((M, N), np.float32)
    for idx, lengths, probs, ent in exit_tables(state, spec, encoded, batch_size, progress=progress):
        for r, i in enumerate(idx):
            entropy[:, i] = ent[:, r]
            for m in range(M):
                pred[m][i] = {(s, e, labels[c - 1]) for s, e, c, _ in decode_table(probs[m, r], int(lengths[r]), nested)}
    return pred, entropy


def evaluate_exits(
    state: Any, spec: ModelSpec, sentences: Sequence[Sentence], encoded: Sequence[Encoded],
    labels: Sequence[str], nested: bool, batch_size: int = 32, *, progress: bool = False,
) -> dict[str, Any]:
    """Per-exit micro P/R/F1 (with per-type scores) and mean normalised entropy.

    Gold spans come from ``sentences`` themselves, so entities past the model's length limit
    (not in ``encoded``) count as missed rather than disappearing.
    """
    pred, entropy = predict_exits(state, spec, encoded, labels, nested, batch_size, progress=progress)
    gold = [s.span_set() for s in sentences]
    rows = []
    for m in range(spec.num_exits):
        r = span_prf(gold, pred[m], labels)
        rows.append({"exit": m + 1, "precision": r["precision"], "recall": r["recall"], "f1": r["f1"],
                     "entropy": float(entropy[m].mean()) if len(sentences) else 0.0,
                     "tp": r["tp"], "n_gold": r["n_gold"], "n_pred": r["n_pred"], "per_type": r["per_type"]})
    return {"per_exit": rows, "num_sentences": len(sentences),
            "lost_spans": sum(len(e.lost_spans) for e in encoded)}


def plot_per_exit(per_exit: Sequence[dict], path: str, title: str = "") -> None:
    """The paper's Figure 1: F1 and normalised entropy against the exit layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = [r["exit"] for r in per_exit]
    fig, ax1 = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    ax1.plot(m, [r["f1"] for r in per_exit], "o-", color="tab:blue", label="F1")
    ax1.set_xlabel("exit (layer)")
    ax1.set_ylabel("F1", color="tab:blue")
    ax1.set_xticks(m)
    ax2 = ax1.twinx()
    ax2.plot(m, [r["entropy"] for r in per_exit], "s--", color="tab:red", label="entropy")
    ax2.set_ylabel("normalised entropy (Eq. 6)", color="tab:red")
    ax1.set_title(title or "F1 and entropy per exit")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_table(per_exit: Sequence[dict]) -> str:
    lines = [f"{'exit':>4}  {'P':>7}  {'R':>7}  {'F1':>7}  {'entropy':>8}"]
    for r in per_exit:
        lines.append(f"{r['exit']:>4}  {r['precision']:7.4f}  {r['recall']:7.4f}  {r['f1']:7.4f}  {r['entropy']:8.4f}")
    return "\n".join(lines)
