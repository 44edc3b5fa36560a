"""Confidence and distance measures over probability tables (Sec. 4.1, Eq. 6-7, NOTES items 1-3, 5).

Every measure reads only the valid cells ``s <= e < length`` (n = length(length+1)/2 of them)
and is 0 for an empty sentence, so results do not depend on padding. Shapes: a table is
``[..., L, L, K]`` (L words, possibly padded; K classes, 0 = no entity) and ``lengths`` is
``[...]`` with the same leading shape; every function returns ``[...]``.

The paper states the consistency measures as similarities with sign slips (NOTES item 1).
Here they are all *distances*: 0 when the two tables agree, and layer i votes for layer m
when ``D(i, m) <= tau`` (``policies.py``).

    kl:        sum_valid KL(p_i || p_m) / (log K * n)          Eq. 7, sign fixed; both clipped
    euclidean: sqrt(sum_valid ||p_i - p_m||^2 / n)
    cosine:    1 - cos(flat valid p_i, flat valid p_m)
    edit:      Levenshtein(argmax labels of p_i, of p_m) / n   over the row-major upper triangle

``edit`` runs a dynamic programme over the n = O(L^2) labels, so its cost grows as L^4: it is
the only measure whose cost is not negligible next to a transformer layer on long sentences.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from .loss import valid_cells

EPS = 1e-12  # clip probabilities before logs so that KL and entropy stay finite (NOTES item 5)

Measure = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def valid_mask(lengths: jax.Array, L: int) -> jax.Array:
    """``[...]`` lengths -> ``[..., L, L]`` bool, True where s <= e < length (``loss.valid_cells``)."""
    return valid_cells(lengths, L)


def _n_valid(lengths: jax.Array) -> jax.Array:
    """``[...]`` -> n = length(length+1)/2 as float32."""
    lengths = jnp.asarray(lengths).astype(jnp.float32)
    return lengths * (lengths + 1) / 2


def _mean_over_valid(cell_values: jax.Array, lengths: jax.Array) -> jax.Array:
    """``[..., L, L]`` per-cell values -> their mean over valid cells ``[...]``; 0 when n = 0."""
    return _mean_over_valid_cells(cell_values[..., None], lengths)


def _mean_over_valid_cells(values: jax.Array, lengths: jax.Array) -> jax.Array:
    """``[..., L, L, K]`` per-class values -> sum over classes, mean over valid cells ``[...]``.

    One reduction over (L, L, K) with the mask multiplied in: on XLA:CPU a sum over K followed
    by a masked sum over the cells ran 10x slower (1.5 ms against 0.13 ms for 6 tables of 64
    words; bench/latency.py's vote costs). Values must be finite (they are: clipped logs).
    """
    mask = valid_mask(lengths, values.shape[-2]).astype(values.dtype)[..., None]
    n = _n_valid(lengths)
    total = (values * mask).sum((-1, -2, -3))
    return jnp.where(n > 0, total / jnp.maximum(n, 1.0), 0.0)


# --- confidence of one table (the baselines, Sec. 5.2) ---------------------------------------
def normalized_entropy(probs: jax.Array, lengths: jax.Array) -> jax.Array:
    """Eq. 6 with the sign fixed (NOTES item 2): g = sum_valid H(p(s,e)) / (log K * n) in [0, 1].

    probs: [..., L, L, K]; lengths: [...] (broadcast against the leading axes, so
    ``[M, B, L, L, K]`` with ``[B]`` works). Returns [...]; 0 where length is 0.
    """
    K = probs.shape[-1]
    p = jnp.clip(probs.astype(jnp.float32), EPS, 1.0)
    return _mean_over_valid_cells(-(p * jnp.log(p)), lengths) / jnp.log(K)  # H summed over K


def mean_max_prob(probs: jax.Array, lengths: jax.Array) -> jax.Array:
    """Shallow-Deep's confidence: the mean over valid cells of max_k p(s,e). [...]; 0 if empty."""
    return _mean_over_valid(probs.astype(jnp.float32).max(-1), lengths)


# --- distances between two tables (Sec. 4.1, NOTES item 1) ----------------------------------
def kl_self_term(p: jax.Array, lengths: jax.Array) -> jax.Array:
    """sum_valid sum_k a log a with a = clip(p, 1e-12): the part of KL(p || .) that is p's own.

    p: [..., L, L, K]; lengths [...]. Returns [...] (<= 0; 0 for an empty sentence). A table's
    self term is fixed once the table is written, so the engine computes it once per layer
    and every later vote against that table skips its logarithms (``kl_from_self_term``).
    """
    a = jnp.clip(p.astype(jnp.float32), EPS, 1.0)
    mask = valid_mask(lengths, p.shape[-2]).astype(jnp.float32)[..., None]
    return (a * jnp.log(a) * mask).sum((-1, -2, -3))


def kl_from_self_term(p_i: jax.Array, self_i: jax.Array, p_m: jax.Array, lengths: jax.Array) -> jax.Array:
    """``kl_distance(p_i, p_m)`` given p_i's ``kl_self_term``: (self_i - sum_valid a_i log b) / (log K n).

    p_i: [..., L, L, K] earlier tables with self_i [...]; p_m: [..., L, L, K] (broadcasts,
    e.g. [1, B, L, L, K] against [M, B, L, L, K]); lengths [...]. The logarithm is taken of
    p_m alone, and the mask is folded into it, so a vote over m earlier tables is one
    multiply-add pass over them: 5x faster than logs of every table (5 tables of 96 words at
    batch 32 on XLA:CPU; bench/latency.py).
    """
    K, L = p_i.shape[-1], p_i.shape[-2]
    mask = valid_mask(lengths, L).astype(jnp.float32)[..., None]
    log_b = jnp.log(jnp.clip(p_m.astype(jnp.float32), EPS, 1.0)) * mask  # 0 outside the valid cells
    cross = (jnp.clip(p_i.astype(jnp.float32), EPS, 1.0) * log_b).sum((-1, -2, -3))
    n = _n_valid(lengths)
    kl = jnp.maximum(self_i - cross, 0.0)  # >= 0 as KL is; a difference of sums can round below
    return jnp.where(n > 0, kl / jnp.maximum(n, 1.0), 0.0) / jnp.log(K)


def kl_distance(p_i: jax.Array, p_m: jax.Array, lengths: jax.Array) -> jax.Array:
    """Normalised KL, Eq. 7 with the sign fixed: sum_valid KL(p_i || p_m) / (log K * n).

    p_i (the earlier layer, NOTES item 5), p_m: [..., L, L, K] probabilities; lengths [...].
    Both are clipped at 1e-12 and not renormalised. Returns [...] >= 0;
    0 for an empty sentence. Computed as self term minus cross term (``kl_from_self_term``),
    so the offline tables and the engine, which caches self terms, compute the same numbers.
    """
    return kl_from_self_term(p_i, kl_self_term(p_i, lengths), p_m, lengths)


def euclidean_distance(p_i: jax.Array, p_m: jax.Array, lengths: jax.Array) -> jax.Array:
    """sqrt(sum_valid ||p_i(s,e) - p_m(s,e)||^2 / n) (NOTES item 1; not divided by K). [...]."""
    sq = jnp.square(p_i.astype(jnp.float32) - p_m.astype(jnp.float32))
    return jnp.sqrt(_mean_over_valid_cells(sq, lengths))


def cosine_distance(p_i: jax.Array, p_m: jax.Array, lengths: jax.Array) -> jax.Array:
    """1 - cosine similarity of the two tables' valid cells flattened into vectors. [...]."""
    mask = valid_mask(lengths, p_i.shape[-2])[..., None]
    a = jnp.where(mask, p_i.astype(jnp.float32), 0.0)
    b = jnp.where(mask, p_m.astype(jnp.float32), 0.0)
    dot = (a * b).sum((-1, -2, -3))
    norm = jnp.sqrt(jnp.square(a).sum((-1, -2, -3)) * jnp.square(b).sum((-1, -2, -3)))
    cos = dot / jnp.maximum(norm, 1e-30)
    return jnp.where(_n_valid(lengths) > 0, 1.0 - cos, 0.0)


def triangle_labels(probs: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The argmax labels of the valid cells as one list, row-major over the upper triangle.

    probs: [..., L, L, K]; lengths [...]. Returns ``(labels [..., N], n [...])`` with
    N = L(L+1)/2: ``labels[..., :n]`` is the list (cells (0,0), (0,1), ..., (0,len-1), (1,1),
    ...), the rest is -1. The order does not depend on the padded L.
    """
    L = probs.shape[-2]
    rows, cols = jnp.triu_indices(L)  # row-major upper triangle of the padded table
    labels = jnp.argmax(probs, axis=-1).astype(jnp.int32)[..., rows, cols]  # [..., N]
    keep = cols < jnp.asarray(lengths)[..., None]  # valid: e < length (s <= e already)
    keep = jnp.broadcast_to(keep, jnp.broadcast_shapes(keep.shape, labels.shape))
    labels = jnp.broadcast_to(labels, keep.shape)
    # Compact the valid cells to the front, keeping their order (a stable partition).
    pos = jnp.cumsum(keep, axis=-1) - 1
    N = rows.shape[0]
    target = jnp.where(keep, pos, N)  # out of range: dropped by the scatter
    out = jnp.full(labels.shape, -1, jnp.int32)

    def scatter(o, t, v):
        return o.at[t].set(v, mode="drop")

    flat = lambda x: x.reshape(-1, N)
    compact = jax.vmap(scatter)(flat(out), flat(target), flat(labels)).reshape(labels.shape)
    return compact, keep.sum(-1).astype(jnp.int32)


def levenshtein(a: jax.Array, b: jax.Array, n_a: jax.Array, n_b: jax.Array) -> jax.Array:
    """Edit distance between ``a[:n_a]`` and ``b[:n_b]`` (unit insert, delete, substitute).

    a, b: [N] ints (padding after n_a / n_b is ignored); returns an int32 scalar. The classic
    row-by-row dynamic programme: with t_j = min(D[i-1, j] + 1, D[i-1, j-1] + [a_i != b_j]),
    D[i, j] = min_{k <= j} (t_k + j - k) = j + cummin_k(t_k - k), so each row is one vectorised
    step and only the n_a rows are iterated (a ``fori_loop`` with a traced bound).
    """
    N = b.shape[0]
    j = jnp.arange(N + 1, dtype=jnp.int32)

    def row(i, prev):  # prev = D[i-1, 0..N]; a_i = a[i-1]
        sub = prev[:-1] + (a[i - 1] != b).astype(jnp.int32)  # diagonal, j = 1..N
        t = jnp.concatenate([jnp.full((1,), i, jnp.int32), jnp.minimum(prev[1:] + 1, sub)])
        return j + lax.cummin(t - j)

    last = lax.fori_loop(1, n_a + 1, row, j)  # D[0, j] = j
    return last[n_b]


def edit_distance(p_i: jax.Array, p_m: jax.Array, lengths: jax.Array) -> jax.Array:
    """Levenshtein distance between the argmax label lists of the valid cells, divided by n.

    p_i, p_m: [..., L, L, K]; lengths [...]. Returns [...] in [0, 1]; 0 for an empty sentence.
    Cost O(n^2) = O(L^4) per pair (the rows past n are skipped, the columns are padded to N).
    """
    lengths = jnp.asarray(lengths)
    lead = jnp.broadcast_shapes(p_i.shape[:-3], p_m.shape[:-3], lengths.shape)
    lengths = jnp.broadcast_to(lengths, lead)
    la, n = triangle_labels(jnp.broadcast_to(p_i, lead + p_i.shape[-3:]), lengths)
    lb, _ = triangle_labels(jnp.broadcast_to(p_m, lead + p_m.shape[-3:]), lengths)
    N = la.shape[-1]
    flat = jax.vmap(levenshtein)(la.reshape(-1, N), lb.reshape(-1, N), n.reshape(-1), n.reshape(-1))
    d = flat.reshape(n.shape).astype(jnp.float32)
    nf = n.astype(jnp.float32)
    return jnp.where(nf > 0, d / jnp.maximum(nf, 1.0), 0.0)


MEASURES: dict[str, Measure] = {
    "kl": kl_distance,
    "euclidean": euclidean_distance,
    "cosine": cosine_distance,
    "edit": edit_distance,
}
"""The consistency measures of Sec. 4.1 as distances, by the name used in configs and eval.py."""


def get_measure(name: str) -> Measure:
    """``MEASURES[name]`` with a readable error for an unknown name."""
    if name not in MEASURES:
        raise ValueError(f"unknown measure {name!r}; expected one of {sorted(MEASURES)}")
    return MEASURES[name]
