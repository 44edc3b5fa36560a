"""Span-level precision, recall and F1 (NOTES item 9): exact (sentence, start, end, type)."""

from __future__ import annotations

from collections import Counter
from typing import Collection, Sequence

Span = tuple[int, int, str]


def _prf(tp: int, n_gold: int, n_pred: int) -> dict[str, float | int]:
    """P, R, F1 with 0/0 read as 0.0 (no prediction, or no gold, scores zero, not NaN)."""
    return {
        "precision": tp / n_pred if n_pred else 0.0,
        "recall": tp / n_gold if n_gold else 0.0,
        # 2tp / (gold + pred) equals 2PR / (P + R) and needs no extra 0/0 case.
        "f1": 2 * tp / (n_gold + n_pred) if n_gold + n_pred else 0.0,
        "tp": tp,
        "n_gold": n_gold,
        "n_pred": n_pred,
    }


def span_prf(gold: Sequence[Collection[Span]], pred: Sequence[Collection[Span]],
             labels: Sequence[str] | None = None) -> dict:
    """Micro P/R/F1 over exact span matches, plus the same per entity type.

    Args:
      gold: per sentence, the gold spans ``(start, end, type)`` (a set; duplicates count once).
      pred: per sentence, the predicted spans, aligned with ``gold``.
      labels: types that must appear in ``per_type`` even with no span (in this order);
        types seen in the data but not listed are added after them, sorted. The micro
        scores always count every span.

    Returns:
      ``{"precision", "recall", "f1", "tp", "n_gold", "n_pred",
      "per_type": {type: {"precision", "recall", "f1", "tp", "n_gold", "n_pred"}}}``.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    tp: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    for g, p in zip(gold, pred):
        g, p = set(g), set(p)
        tp.update(t for _, _, t in g & p)
        n_gold.update(t for _, _, t in g)
        n_pred.update(t for _, _, t in p)
    listed = list(dict.fromkeys(labels or ()))
    types = listed + sorted((set(n_gold) | set(n_pred)) - set(listed))
    out = _prf(sum(tp.values()), sum(n_gold.values()), sum(n_pred.values()))
    out["per_type"] = {t: _prf(tp[t], n_gold[t], n_pred[t]) for t in types}
    return out
