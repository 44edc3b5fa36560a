"""The offline path: every exit's table once, then any policy replayed without running BERT again.

``exit_probs`` runs ``all_exit_logits`` and a softmax once per batch. From those tables
``layer_distances`` computes, once per measure, the matrix ``D[i, m]`` of every earlier layer
i against every layer m for each sentence, and ``layer_signals`` the entropy and mean max
probability of every layer. After that every (tau, patience) is a few numpy comparisons:
``vee_exit_layers`` and ``threshold_exit_layers`` evaluate whole grids at once, and ``replay``
gives the same exit layers, votes and tables as the online engine (``engine.vee_infer``) for
one policy.

Online and offline compute the tables with differently shaped programs (a ``while_loop`` of
single layers against a ``scan``), so the floats can differ in the last bits and a decision
whose distance (or signal) lies within ``NEAR_TIE`` of tau may go the other way: ``replay``
counts such near-ties per sentence so that they can be reported.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .bert import BertConfig, Params
from .exits import all_exit_logits
from .measures import get_measure, mean_max_prob, normalized_entropy
from .policies import (BudgetPolicy, EntropyPolicy, FullPolicy, MaxProbPolicy, Policy, VeePolicy,
                       check_policy)

NEAR_TIE = 1e-5  # |D - tau| (or |signal - tau|) below this may flip between online and offline


@functools.partial(jax.jit, static_argnames=("config", "pooling"))
def _exit_probs(config, params, exit_params, batch, pooling):
    logits = all_exit_logits(config, params, exit_params, batch, pooling=pooling)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def exit_probs(config: BertConfig, params: Params, exit_params: Params, batch: dict[str, Any], *,
               pooling: str = "first") -> jax.Array:
    """Every exit's probability table from one encoder pass: [M, B, L, L, K] float32."""
    keys = ("input_ids", "attention_mask", "token_type_ids", "word_index", "word_mask")
    inputs = {k: jnp.asarray(batch[k]) for k in keys if batch.get(k) is not None}
    if pooling == "mean":
        inputs["word_end"] = jnp.asarray(batch["word_end"])
    return _exit_probs(config, params, exit_params, inputs, pooling)


@functools.partial(jax.jit, static_argnames=("measure",))
def _pair_distances(probs, lengths, pairs, measure):
    dist = get_measure(measure)
    return jax.lax.map(lambda ij: dist(probs[ij[0]], probs[ij[1]], lengths), pairs)  # [P, B]


def layer_distances(measure: str, probs: jax.Array | np.ndarray, lengths: jax.Array | np.ndarray) -> np.ndarray:
    """``D[i, m, b]`` = measure(table i, table m) of sentence b for every pair i < m (0-based).

    probs: [M, B, L, L, K]; lengths: [B]. Returns float32 numpy [M, M, B] with NaN where
    i >= m (never compared). Only the M(M-1)/2 needed pairs are computed.
    """
    M, B = probs.shape[:2]
    D = np.full((M, M, B), np.nan, np.float32)
    i, m = np.triu_indices(M, 1)
    if len(i):
        pairs = jnp.asarray(np.stack([i, m], 1), jnp.int32)
        D[i, m] = np.asarray(_pair_distances(jnp.asarray(probs), jnp.asarray(lengths), pairs, measure))
    return D


@jax.jit
def _signals(probs, lengths):
    return normalized_entropy(probs, lengths), mean_max_prob(probs, lengths)


def layer_signals(probs: jax.Array | np.ndarray, lengths: jax.Array | np.ndarray) -> dict[str, np.ndarray]:
    """The baselines' signals of every layer: ``{"entropy": [M, B], "maxprob": [M, B]}`` numpy."""
    ent, mp = _signals(jnp.asarray(probs), jnp.asarray(lengths))
    return {"entropy": np.asarray(ent), "maxprob": np.asarray(mp)}


def _first_true(stop: np.ndarray, axis: int) -> np.ndarray:
    """Index of the first True along ``axis`` (the caller guarantees the last is True)."""
    return np.argmax(stop, axis=axis)


def vee_exit_layers(D: np.ndarray, taus: Sequence[float] | float, patiences: Sequence[int] | int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """VEE's exit layers for a whole (tau, patience) grid from the distance matrices.

    D: [M, M, N] from ``layer_distances`` (D[i, m] used for i < m only). Returns
    ``(exit_layer [T, P, N] 1-based, votes [T, P, N] the count at the exit)``; scalars for
    ``taus`` / ``patiences`` give T = 1 / P = 1. The vote of NOTES item 4: count at layer m
    = #{i < m : D[i, m] <= tau}, exit when count >= patience, the last layer always exits.
    """
    taus = np.atleast_1d(np.asarray(taus, np.float32))
    pats = np.atleast_1d(np.asarray(patiences))
    M = D.shape[0]
    earlier = np.triu(np.ones((M, M), bool), 1)[..., None]  # i < m
    agree = (D[None] <= taus[:, None, None, None]) & earlier  # [T, M(i), M(m), N]; NaN compares False
    count = agree.sum(1)  # [T, M, N]
    stop = count[:, None] >= pats[None, :, None, None]  # [T, P, M, N]
    stop[:, :, M - 1] = True
    m = _first_true(stop, axis=2)  # [T, P, N]
    votes = np.take_along_axis(np.broadcast_to(count[:, None], stop.shape), m[:, :, None], 2)[:, :, 0]
    return m + 1, votes


def threshold_exit_layers(signal: np.ndarray, taus: Sequence[float] | float, *, below: bool) -> np.ndarray:
    """First layer whose signal is < tau (``below``: entropy) or > tau (max prob), else the last.

    signal: [M, N]. Returns exit layers [T, N], 1-based.
    """
    taus = np.atleast_1d(np.asarray(taus, np.float32))
    s = signal[None]
    stop = s < taus[:, None, None] if below else s > taus[:, None, None]  # [T, M, N]
    stop[:, -1] = True
    return _first_true(stop, axis=1) + 1


def exit_tables(probs: np.ndarray, exit_layer: np.ndarray, ensemble: bool = False) -> np.ndarray:
    """The prediction at the exit: table ``exit_layer - 1`` of each sentence, or with ``ensemble``
    the mean of tables 1..exit_layer (Sec. 5.5.1; summed in order in float32 as the engine does).

    probs: [M, B, L, L, K]; exit_layer: [B] 1-based (0: a zero table). Returns [B, L, L, K].
    """
    probs = np.asarray(probs, np.float32)
    M, B = probs.shape[:2]
    out = np.zeros(probs.shape[1:], np.float32)
    acc = np.zeros(probs.shape[1:], np.float32)
    for m in range(M):
        acc = acc + probs[m] if ensemble else probs[m]
        here = exit_layer == m + 1
        if ensemble:
            out[here] = (acc / np.float32(m + 1))[here]
        else:
            out[here] = probs[m][here]
    return out


def _near(x: np.ndarray, tau: float) -> np.ndarray:
    return np.abs(x - np.float32(tau)) < NEAR_TIE


def replay(
    policy: Policy,
    probs: jax.Array | np.ndarray,
    lengths: jax.Array | np.ndarray,
    *,
    distances: np.ndarray | None = None,
    signals: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Replay ``policy`` on precomputed tables: what ``vee_infer`` would decide, without BERT.

    Args:
      probs: [M, B, L, L, K] every exit's table (``exit_probs``); lengths: [B].
      distances: optional [M, M, B] ``layer_distances`` of the policy's measure (VEE), to reuse.
      signals: optional ``layer_signals`` output (entropy / max-prob policies), to reuse.
    Returns numpy ``exit_layer`` [B] 1-based, ``probs`` [B, L, L, K] the table at the exit,
    ``votes`` [B] (VEE's count at the exit, else 0) and ``near_ties`` [B], the number of
    decisions up to the exit whose distance or signal lies within ``NEAR_TIE`` of tau.
    """
    probs = np.asarray(probs, np.float32)
    lengths = np.asarray(lengths)
    M, B = probs.shape[:2]
    check_policy(policy, M)
    votes = np.zeros(B, np.int64)
    ties = np.zeros(B, np.int64)
    # Decisions that mattered: layers m (0-based) before the exit, the forced last layer excluded.
    layers = np.arange(M)[:, None]
    if isinstance(policy, VeePolicy):
        D = layer_distances(policy.measure, probs, lengths) if distances is None else distances
        if D.shape != (M, M, B):
            raise ValueError(f"distances have shape {D.shape}, expected {(M, M, B)} for these tables")
        exit_layer, votes = (x[0, 0] for x in vee_exit_layers(D, policy.tau, policy.patience))
        decided = np.triu(np.ones((M, M), bool), 1)[..., None] & (layers[None] < np.minimum(exit_layer, M - 1))
        ties = (_near(np.nan_to_num(D, nan=np.inf), policy.tau) & decided).sum((0, 1))
    elif isinstance(policy, (EntropyPolicy, MaxProbPolicy)):
        sig = (layer_signals(probs, lengths) if signals is None else signals)[policy.name]
        exit_layer = threshold_exit_layers(sig, policy.tau, below=isinstance(policy, EntropyPolicy))[0]
        ties = (_near(sig, policy.tau) & (layers < np.minimum(exit_layer, M - 1))).sum(0)
    elif isinstance(policy, BudgetPolicy):
        exit_layer = np.full(B, policy.layer)
    elif isinstance(policy, FullPolicy):
        exit_layer = np.full(B, M)
    else:
        raise TypeError(f"not a policy: {policy!r}")
    exit_layer = np.asarray(exit_layer, np.int64)
    return {"exit_layer": exit_layer, "probs": exit_tables(probs, exit_layer, policy.ensemble),
            "votes": np.asarray(votes, np.int64), "near_ties": np.asarray(ties, np.int64)}
