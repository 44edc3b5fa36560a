"""The biaffine exit after every layer (Eq. 1 and 3, footnote 5) and all_exit_logits.

    f^(m)(s, e) = h_s^T U^(m) h_e + W^(m) [h_s ; h_e] + b^(m)        (Eq. 3)

computed as ``(H U) H^T`` contractions over the word table, never per cell. Exit parameters
are stacked on a leading exit axis like the layers::

    {"U": [M, h, K, h], "W_start": [M, h, K], "W_end": [M, h, K], "b": [M, K],
     "ffnn": {"start" | "end": {"kernel": [M, d, h], "bias": [M, h]}}}   # optional (Yu et al.)

``compress_exits`` adds ``"P"``, ``"Q"``: [M, h, r] and shrinks ``U`` to [M, r, K, r] (inference).
``W`` of the paper is ``[W_start; W_end]`` (a 2h x K matrix split in halves). Without the
optional projections (the paper's default, footnote 5) h = d.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .bert import BertConfig, Params, encode_layers, word_vectors


def init_exits(
    key: jax.Array,
    config: BertConfig,
    num_labels: int,
    *,
    ffnn_size: int | None = None,
    num_exits: int | None = None,
) -> Params:
    """Initialise M stacked biaffine exits with K = ``num_labels`` classes (0 = no entity).

    ``ffnn_size``: hidden size of Yu et al.'s start/end feed-forward projections (None: none,
    the paper's default). Scales keep initial logits O(1) for LayerNorm-ed inputs.
    """
    M = num_exits or config.num_layers
    d = config.hidden_size
    h = ffnn_size or d
    ku, ks, ke, kf1, kf2 = jax.random.split(key, 5)
    p: Params = {
        "U": jax.random.normal(ku, (M, h, num_labels, h)) / h,
        "W_start": jax.random.normal(ks, (M, h, num_labels)) / jnp.sqrt(2.0 * h),
        "W_end": jax.random.normal(ke, (M, h, num_labels)) / jnp.sqrt(2.0 * h),
        "b": jnp.zeros((M, num_labels)),
    }
    if ffnn_size:
        p["ffnn"] = {
            "start": {"kernel": jax.random.normal(kf1, (M, d, h)) / jnp.sqrt(d), "bias": jnp.zeros((M, h))},
            "end": {"kernel": jax.random.normal(kf2, (M, d, h)) / jnp.sqrt(d), "bias": jnp.zeros((M, h))},
        }
    return jax.tree.map(lambda x: x.astype(config.jnp_dtype), p)


def biaffine(p: Params, words: jax.Array) -> jax.Array:
    """One exit's span table. p: a single (unstacked) exit; words [B, L, d] -> [B, L, L, K]."""
    if "ffnn" in p:  # Yu et al. (2020): separate start/end projections with ReLU
        hs = jax.nn.relu(words @ p["ffnn"]["start"]["kernel"] + p["ffnn"]["start"]["bias"])
        he = jax.nn.relu(words @ p["ffnn"]["end"]["kernel"] + p["ffnn"]["end"]["bias"])
    else:
        hs = he = words
    lin = (hs @ p["W_start"])[:, :, None, :] + (he @ p["W_end"])[:, None, :, :]
    if "P" in p:  # a low-rank exit (compress_exits): U ~ C x P x Q, so project to r first
        hs, he = hs @ p["P"], he @ p["Q"]
    hu = jnp.einsum("bsi,ikj->bskj", hs, p["U"])  # H_s U: [B, L, K, h]
    bil = jnp.einsum("bskj,bej->bsek", hu, he)  # (H_s U) H_e^T: [B, L, L, K]
    return bil + lin + p["b"]


def compress_exits(exit_params: Params, rank: int) -> Params:
    """Low-rank exits for fast inference: each U [h, K, h] -> core [r, K, r] and P, Q [h, r].

    The bilinear term costs L h^2 K per table, about half a MiniLM layer at L = 40; most of an
    early-exit engine's overhead (it runs an exit at every layer it passes). A truncated
    higher-order SVD (Tucker) keeps the r leading directions of U's start and end modes:
    ``U_k ~ P C_k Q^T``, so ``h_s^T U_k h_e ~ (P^T h_s)^T C_k (Q^T h_e)`` costs 2 L h r + L r^2 K
    + L^2 r K. W and b stay exact. No retraining; the F1 cost is measured (bench/latency.py).
    ``rank`` >= h returns the exits unchanged. Works on stacked ([M, ...]) exit pytrees.
    """
    U = np.asarray(exit_params["U"], np.float32)  # [M, h, K, h]
    M, h, K, _ = U.shape
    if rank <= 0 or rank >= h:
        return exit_params
    Ps, Qs, Cs = [], [], []
    for u in U:
        P = np.linalg.svd(u.reshape(h, K * h), full_matrices=False)[0][:, :rank]  # start mode
        Q = np.linalg.svd(u.transpose(2, 0, 1).reshape(h, h * K), full_matrices=False)[0][:, :rank]  # end mode
        Ps.append(P)
        Qs.append(Q)
        Cs.append(np.einsum("ikj,ia,jb->akb", u, P, Q))
    dtype = exit_params["U"].dtype
    out = dict(exit_params)
    out.update(U=jnp.asarray(np.stack(Cs), dtype), P=jnp.asarray(np.stack(Ps), dtype),
               Q=jnp.asarray(np.stack(Qs), dtype))
    return out


def select_exit(exit_params: Params, m: jax.Array | int) -> Params:
    """Exit m's parameters (m 0-based, may be traced)."""
    return jax.tree.map(lambda w: lax.dynamic_index_in_dim(w, m, 0, keepdims=False), exit_params)


def exit_logits(exit_params: Params, m: jax.Array | int, words: jax.Array) -> jax.Array:
    """Biaffine exit m (0-based, may be traced): words [B, L, d] -> logits [B, L, L, K]."""
    return biaffine(select_exit(exit_params, m), words)


def all_exit_logits(
    config: BertConfig,
    params: Params,
    exit_params: Params,
    batch: dict[str, Any],
    *,
    pooling: str = "first",
    rng: jax.Array | None = None,
) -> jax.Array:
    """Every exit's logits from one encoder pass: [M, B, L, L, K].

    ``batch``: ``input_ids``, ``attention_mask`` [B, T]; ``word_index``, ``word_mask`` [B, L];
    optional ``token_type_ids`` [B, T] and ``word_end`` [B, L] (for mean pooling).
    """
    hidden = encode_layers(
        config, params, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), rng=rng
    )[1:]  # drop the embedding output: exit m reads layer m
    words = jax.vmap(
        lambda h: word_vectors(h, batch["word_index"], batch["word_mask"], pooling, batch.get("word_end"))
    )(hidden)
    return jax.vmap(biaffine)(exit_params, words)
