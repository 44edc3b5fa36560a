"""Yu et al. (2020) decoding on hand-built tables, and its invariants on random ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vee_jax.decode import decode_table


def table(L: int, K: int, cells: dict[tuple[int, int], tuple[int, float]]) -> np.ndarray:
    """[L, L, K] with every cell "no entity" (p0 = 1) except ``cells``: (s, e) -> (class, p)."""
    probs = np.zeros((L, L, K))
    probs[..., 0] = 1.0
    for (s, e), (c, p) in cells.items():
        probs[s, e] = (1 - p) / (K - 1)
        probs[s, e, c] = p
    return probs


# length 5 padded to 7; K = 3
CELLS = {
    (0, 2): (1, 0.9),
    (1, 3): (2, 0.8),   # crosses (0, 2): dropped in both modes
    (0, 4): (1, 0.7),   # contains (0, 2): kept only when nested
    (3, 3): (2, 0.6),   # inside (0, 4), apart from (0, 2)
    (2, 3): (1, 0.5),   # crosses (0, 2) and overlaps it: dropped in both modes
    (3, 1): (1, 0.99),  # below the diagonal: not a span
    (2, 5): (2, 0.99),  # ends beyond the sentence
    (5, 6): (1, 0.99),  # padding
    (6, 6): (2, 0.99),  # padding
}


def test_nested_keeps_containment_and_drops_crossing():
    probs = table(7, 3, CELLS)
    probs[4, 4] = [0.5, 0.4, 0.1]  # argmax is "no entity": never a candidate
    got = decode_table(probs, 5, nested=True)
    assert [g[:3] for g in got] == [(0, 2, 1), (0, 4, 1), (3, 3, 2)]
    assert [g[3] for g in got] == pytest.approx([0.9, 0.7, 0.6])
    assert all(type(v) is int for g in got for v in g[:3]) and all(type(g[3]) is float for g in got)


def test_flat_drops_any_overlap():
    got = decode_table(table(7, 3, CELLS), 5, nested=False)
    # (0, 4) overlaps the accepted (0, 2); (3, 3) then overlaps nothing accepted
    assert [g[:3] for g in got] == [(0, 2, 1), (3, 3, 2)]


def test_nested_pair_sharing_a_boundary():
    cells = {(1, 1): (1, 0.9), (1, 3): (2, 0.8), (3, 3): (1, 0.7)}
    assert [g[:3] for g in decode_table(table(4, 3, cells), 4, nested=True)] == [
        (1, 1, 1), (1, 3, 2), (3, 3, 1)]
    assert [g[:3] for g in decode_table(table(4, 3, cells), 4, nested=False)] == [
        (1, 1, 1), (3, 3, 1)]


def test_ties_break_by_position():
    cells = {(1, 2): (1, 0.8), (0, 1): (2, 0.8)}  # cross, same score: (0, 1) comes first
    assert [g[:3] for g in decode_table(table(3, 3, cells), 3, nested=True)] == [(0, 1, 2)]


def test_empty_and_bad_shapes():
    assert decode_table(table(3, 2, {(0, 0): (1, 0.9)}), 0, nested=True) == []
    assert decode_table(np.zeros((0, 0, 3)), 0, nested=False) == []
    with pytest.raises(ValueError):
        decode_table(np.zeros((3, 4, 2)), 3, nested=True)
    with pytest.raises(ValueError):
        decode_table(np.zeros((3, 3, 2)), 4, nested=True)


# --------------------------------------------------------------------------------------------
# Random tables: no clash, greedy maximality, padding does not matter.

def crossing(a, b) -> bool:
    (s1, e1), (s2, e2) = a, b
    return s1 < s2 <= e1 < e2 or s2 < s1 <= e2 < e1


def overlapping(a, b) -> bool:
    (s1, e1), (s2, e2) = a, b
    return max(s1, s2) <= min(e1, e2)


@st.composite
def random_tables(draw):
    length = draw(st.integers(0, 7))
    pad = draw(st.integers(0, 4))
    K = draw(st.integers(2, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    logits = rng.normal(size=(length + pad, length + pad, K)) * 2
    if draw(st.booleans()):  # coarse values make ties between cells common
        logits = np.round(logits)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return probs, length, pad


@settings(max_examples=200, deadline=None)
@given(random_tables(), st.booleans())
def test_decode_invariants(tp, nested):
    probs, length, pad = tp
    clash = crossing if nested else overlapping
    got = decode_table(probs, length, nested)
    spans = [(s, e) for s, e, _, _ in got]
    assert len(set(spans)) == len(spans)
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            assert not clash(a, b)
    for s, e, c, p in got:
        assert 0 <= s <= e < length and 1 <= c < probs.shape[-1]
        assert c == int(probs[s, e].argmax()) and p == probs[s, e, c]
    # greedy: every candidate left out clashes with an accepted span of at least its score
    for s in range(length):
        for e in range(s, length):
            c = int(probs[s, e].argmax())
            if c == 0 or (s, e) in spans:
                continue
            assert any(clash((s, e), (a, b)) and q >= probs[s, e, c] for a, b, _, q in got)
    # the padded rows/columns are junk; the unpadded table gives the same answer
    assert decode_table(probs[:length, :length], length, nested) == got
    bigger = np.random.default_rng(0).dirichlet(np.ones(probs.shape[-1]),
                                                size=(length + pad + 3,) * 2)
    bigger[:length, :length] = probs[:length, :length]
    assert decode_table(bigger, length, nested) == got
