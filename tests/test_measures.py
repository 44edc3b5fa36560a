"""The measures of Sec. 4.1 and Eq. 6 against independent numpy / plain-Python references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vee_jax.measures import (MEASURES, edit_distance, kl_distance,
                              levenshtein, mean_max_prob, normalized_entropy, triangle_labels)


# --- references: one sentence, unpadded [n, n, K] tables, float64, cell by cell --------------
def cells(t):
    """The valid cells of an unpadded [n, n, K] table, row-major over s <= e."""
    n = t.shape[0]
    return [t[s, e] for s in range(n) for e in range(s, n)]


def ref_kl(a, b):
    if a.shape[0] == 0:
        return 0.0
    K = a.shape[-1]
    tot = 0.0
    for p, q in zip(cells(a), cells(b)):
        p, q = np.clip(p.astype(np.float64), 1e-12, None), np.clip(q.astype(np.float64), 1e-12, None)
        tot += float(np.sum(p * np.log(p / q)))
    return tot / (np.log(K) * len(cells(a)))


def ref_euclidean(a, b):
    if a.shape[0] == 0:
        return 0.0
    sq = [float(np.sum((p.astype(np.float64) - q) ** 2)) for p, q in zip(cells(a), cells(b))]
    return float(np.sqrt(np.mean(sq)))


def ref_cosine(a, b):
    if a.shape[0] == 0:
        return 0.0
    x = np.concatenate(cells(a)).astype(np.float64)
    y = np.concatenate(cells(b)).astype(np.float64)
    return 1.0 - float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def ref_levenshtein(a, b):
    """Wagner-Fischer, plain Python lists."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def ref_edit(a, b):
    if a.shape[0] == 0:
        return 0.0
    la = [int(np.argmax(c)) for c in cells(a)]
    lb = [int(np.argmax(c)) for c in cells(b)]
    return ref_levenshtein(la, lb) / len(la)


def ref_entropy(a):
    if a.shape[0] == 0:
        return 0.0
    K = a.shape[-1]
    h = [-float(np.sum(p * np.log(p))) for p in (np.clip(c.astype(np.float64), 1e-12, None) for c in cells(a))]
    return float(np.mean(h)) / np.log(K)


def ref_maxprob(a):
    return float(np.mean([c.max() for c in cells(a)])) if a.shape[0] else 0.0


REFS = {"kl": ref_kl, "euclidean": ref_euclidean, "cosine": ref_cosine, "edit": ref_edit}


def random_tables(rng, B, L, K, lengths, peaked=1.0):
    """Two batches of softmax tables [B, L, L, K]; the second partly a perturbation of the first."""
    z1 = rng.normal(size=(B, L, L, K)) * peaked
    z2 = np.where(rng.random((B, L, L, 1)) < 0.5, z1 + 0.3 * rng.normal(size=z1.shape), rng.normal(size=z1.shape))
    sm = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return sm(z1).astype(np.float32), sm(z2).astype(np.float32), np.asarray(lengths, np.int32)


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_measure_matches_numpy_and_ignores_padding(name):
    rng = np.random.default_rng(0)
    L, K = 7, 4
    lengths = [7, 5, 1, 0, 3]
    a, b, n = random_tables(rng, len(lengths), L, K, lengths, peaked=2.0)
    ours = np.asarray(MEASURES[name](jnp.asarray(a), jnp.asarray(b), jnp.asarray(n)))
    ref = [REFS[name](a[r, :k, :k], b[r, :k, :k]) for r, k in enumerate(lengths)]
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-6)
    assert ours[3] == 0.0  # empty sentence
    assert ours[0] > 0 and ours[1] > 0  # the pairs differ: not trivially zero

    # Padding invariance: new garbage in every invalid cell (and a wider table) changes nothing.
    a2, b2, _ = random_tables(rng, len(lengths), L + 3, K, lengths, peaked=3.0)
    valid = (np.arange(L)[:, None] <= np.arange(L)[None, :])[None] & (np.arange(L)[None, None] < n[:, None, None])
    a2[:, :L, :L] = np.where(valid[..., None], a, a2[:, :L, :L])
    b2[:, :L, :L] = np.where(valid[..., None], b, b2[:, :L, :L])
    again = np.asarray(MEASURES[name](jnp.asarray(a2), jnp.asarray(b2), jnp.asarray(n)))
    np.testing.assert_allclose(again, ours, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_measure_is_zero_for_identical_tables(name):
    rng = np.random.default_rng(1)
    a, _, n = random_tables(rng, 3, 5, 3, [5, 2, 0])
    d = np.asarray(MEASURES[name](jnp.asarray(a), jnp.asarray(a), jnp.asarray(n)))
    np.testing.assert_allclose(d, 0.0, atol=1e-6)


def test_confidences_match_numpy_with_leading_layer_axis():
    rng = np.random.default_rng(2)
    lengths = [6, 4, 0]
    probs = np.stack([random_tables(rng, 3, 6, 5, lengths, peaked=p)[0] for p in (0.5, 3.0)])  # [M=2, B, L, L, K]
    ent = np.asarray(normalized_entropy(jnp.asarray(probs), jnp.asarray(lengths)))
    mp = np.asarray(mean_max_prob(jnp.asarray(probs), jnp.asarray(lengths)))
    assert ent.shape == mp.shape == (2, 3)
    for m in range(2):
        for r, k in enumerate(lengths):
            np.testing.assert_allclose(ent[m, r], ref_entropy(probs[m, r, :k, :k]), rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(mp[m, r], ref_maxprob(probs[m, r, :k, :k]), rtol=1e-5, atol=1e-7)
    assert ent[0, 0] > ent[1, 0]  # flatter tables have higher entropy


def test_kl_is_finite_on_one_hot_tables_and_directional():
    p = np.zeros((1, 2, 2, 3), np.float32)
    q = np.zeros((1, 2, 2, 3), np.float32)
    p[..., 0] = 1.0
    q[..., 0] = 0.5
    q[..., 1] = 0.5
    n = jnp.asarray([2])
    pq = float(kl_distance(jnp.asarray(p), jnp.asarray(q), n)[0])
    qp = float(kl_distance(jnp.asarray(q), jnp.asarray(p), n)[0])
    assert np.isfinite(pq) and np.isfinite(qp)
    np.testing.assert_allclose(pq, np.log(2) / np.log(3), rtol=1e-5)  # KL(one-hot || half-half) = log 2
    np.testing.assert_allclose(qp, ref_kl(q[0], p[0]), rtol=1e-5)  # clipped at 1e-12, large
    assert qp > 5


def test_edit_distance_is_levenshtein_not_hamming():
    # Labels over the triangle of a length-2 sentence: cells (0,0), (0,1), (1,1).
    def table(labels):
        t = np.full((1, 2, 2, 3), 0.1, np.float32)
        for (s, e), c in zip([(0, 0), (0, 1), (1, 1)], labels):
            t[0, s, e, c] = 0.8
        return jnp.asarray(t)

    # [1, 2, 0] vs [2, 0, 0]: Hamming 2 (positions 0 and 1), Levenshtein 2; [1,2,0] vs [2,0,1]: Hamming 3,
    # Levenshtein 2 (delete the leading 1, append a 1).
    d = float(edit_distance(table([1, 2, 0]), table([2, 0, 1]), jnp.asarray([2]))[0])
    np.testing.assert_allclose(d, 2 / 3, rtol=1e-6)


def test_triangle_labels_row_major_and_padding_free():
    t = np.zeros((1, 4, 4, 10), np.float32)
    for s in range(4):
        for e in range(4):
            t[0, s, e, (4 * s + e) % 10] = 1.0
    lab, n = triangle_labels(jnp.asarray(t), jnp.asarray([3]))
    assert int(n[0]) == 6
    expected = [(4 * s + e) % 10 for s in range(3) for e in range(s, 3)]
    assert np.asarray(lab[0, :6]).tolist() == expected
    assert (np.asarray(lab[0, 6:]) == -1).all()


_lev = jax.jit(levenshtein)
_N = 14


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=_N), st.lists(st.integers(0, 3), max_size=_N))
def test_levenshtein_matches_plain_python(a, b):
    pad = lambda x: jnp.asarray(x + [-1] * (_N - len(x)), jnp.int32)
    assert int(_lev(pad(a), pad(b), len(a), len(b))) == ref_levenshtein(a, b)


_edit = jax.jit(edit_distance)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5), st.data())
def test_edit_distance_matches_plain_python_on_tables(length, data):
    L, K = 5, 3
    labels = data.draw(st.lists(st.integers(0, K - 1), min_size=2 * L * L, max_size=2 * L * L))
    t = np.full((2, 1, L, L, K), 0.1, np.float32)
    lab = np.asarray(labels).reshape(2, L, L)
    np.put_along_axis(t, lab[:, None, ..., None], 0.8, axis=-1)
    ours = float(_edit(jnp.asarray(t[0]), jnp.asarray(t[1]), jnp.asarray([length]))[0])
    np.testing.assert_allclose(ours, ref_edit(t[0, 0, :length, :length], t[1, 0, :length, :length]), rtol=1e-6)
