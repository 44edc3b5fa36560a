"""Span P/R/F1 on a case computed by hand."""

from __future__ import annotations

import pytest

from vee_jax.metrics import span_prf

GOLD = [
    {(0, 1, "PER"), (3, 3, "LOC"), (5, 6, "ORG")},
    set(),
    {(0, 0, "LOC"), (0, 2, "LOC")},
]
PRED = [
    {(0, 1, "PER"), (3, 3, "ORG"), (5, 6, "ORG")},   # (3, 3) right span, wrong type
    {(1, 1, "PER")},                                  # nothing to find
    [(0, 0, "LOC"), (0, 1, "LOC"), (0, 0, "LOC")],    # a list: the duplicate counts once
]


def test_hand_computed_micro_and_per_type():
    r = span_prf(GOLD, PRED)
    # gold 5, pred 6 (PER 2, ORG 2, LOC 2), tp 3 ((0,1,PER), (5,6,ORG), (0,0,LOC))
    assert (r["tp"], r["n_gold"], r["n_pred"]) == (3, 5, 6)
    assert r["precision"] == pytest.approx(3 / 6)
    assert r["recall"] == pytest.approx(3 / 5)
    assert r["f1"] == pytest.approx(2 * 0.5 * 0.6 / 1.1)
    assert list(r["per_type"]) == ["LOC", "ORG", "PER"]
    per = r["per_type"]
    # LOC: gold 3, pred 2, tp 1
    assert per["LOC"] == pytest.approx({"precision": 0.5, "recall": 1 / 3, "f1": 0.4,
                                        "tp": 1, "n_gold": 3, "n_pred": 2})
    # ORG: gold 1, pred 2, tp 1
    assert per["ORG"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3,
                                        "tp": 1, "n_gold": 1, "n_pred": 2})
    # PER: gold 1, pred 2, tp 1
    assert per["PER"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3,
                                        "tp": 1, "n_gold": 1, "n_pred": 2})


def test_zero_over_zero_is_zero_and_labels_fix_the_keys():
    r = span_prf([set(), {(0, 0, "X")}], [set(), set()], labels=["Y", "X"])
    assert (r["precision"], r["recall"], r["f1"]) == (0.0, 0.0, 0.0)
    assert list(r["per_type"]) == ["Y", "X"]
    assert r["per_type"]["Y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                  "tp": 0, "n_gold": 0, "n_pred": 0}
    assert r["per_type"]["X"]["recall"] == 0.0 and r["per_type"]["X"]["n_gold"] == 1
    assert span_prf([], [])["f1"] == 0.0


def test_perfect_and_misaligned():
    assert span_prf(GOLD, GOLD)["f1"] == 1.0
    with pytest.raises(ValueError):
        span_prf(GOLD, PRED[:2])
