"""Confidence and distance measures over probability tables (Sec. 4.1, Eq. 6-7, NOTES items 1-3, 5).

Every measure reads only the valid cells ``s <= e < length`` (n = L(L+1)/2 of them) and is 0
for an empty sentence, so results do not depend on padding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .loss import valid_cells

EPS = 1e-12  # clip probabilities before logs so that KL and entropy stay finite (NOTES item 5)


def _n_valid(lengths: jax.Array) -> jax.Array:
    n = lengths * (lengths + 1) / 2
    return n.astype(jnp.float32)


def normalized_entropy(probs: jax.Array, lengths: jax.Array) -> jax.Array:
    """Eq. 6 with the sign fixed (NOTES item 2): g = sum_valid H(p(s,e)) / (log K * n) in [0, 1].

    probs: [..., B, L, L, K]; lengths: [B]. Returns [..., B]; 0 where length is 0.
    """
    L, K = probs.shape[-2], probs.shape[-1]
    p = jnp.clip(probs.astype(jnp.float32), EPS, 1.0)
    h = -(p * jnp.log(p)).sum(-1)  # [..., B, L, L]
    mask = valid_cells(lengths, L)
    n = _n_valid(lengths)
    total = jnp.where(mask, h, 0.0).sum((-1, -2))
    return jnp.where(n > 0, total / (jnp.log(K) * jnp.maximum(n, 1.0)), 0.0)


def mean_max_prob(probs: jax.Array, lengths: jax.Array) -> jax.Array:
    """Shallow-Deep's confidence: the mean over valid cells of max_k p(s,e). [..., B]; 0 if empty."""
    L = probs.shape[-2]
    mask = valid_cells(lengths, L)
    n = _n_valid(lengths)
    total = jnp.where(mask, probs.max(-1), 0.0).sum((-1, -2))
    return jnp.where(n > 0, total / jnp.maximum(n, 1.0), 0.0)
