"""The offline path: every exit's table once, then any policy replayed without running BERT again.

``exit_probs`` runs ``all_exit_logits`` and a softmax once per batch. From those tables
``layer_distances`` computes, once per measure, the matrix ``D[i, m]`` of every earlier layer
i against every layer m for each sentence, and ``layer_signals`` the entropy and mean max
probability of every layer. After that every (tau, patience) is a few numpy comparisons
(each policy's ``exit_layers``; ``policies.vee_exit_layers`` and ``threshold_exit_layers``
evaluate whole grids at once), and ``replay`` gives the same exit layers, votes and tables as
the online engine (``engine.vee_infer``) for one policy.

Online and offline compute the tables with differently shaped programs (a ``while_loop`` of
single layers against a ``scan``), so the floats can differ in the last bits and a decision
whose distance (or signal) lies within ``NEAR_TIE`` of tau may go the other way: ``replay``
counts such near-ties per sentence so that they can be reported.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .bert import BertConfig, Params
from .exits import all_exit_logits
from .measures import get_measure, mean_max_prob, normalized_entropy
from .policies import NEAR_TIE, Policy, check_policy, threshold_exit_layers, vee_exit_layers  # noqa: F401


@functools.partial(jax.jit, static_argnames=("config", "pooling"))
def _exit_probs(config, params, exit_params, batch, pooling):
    logits = all_exit_logits(config, params, exit_params, batch, pooling=pooling)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def exit_probs(config: BertConfig, params: Params, exit_params: Params, batch: dict[str, Any], *,
               pooling: str = "first") -> jax.Array:
    """Every exit's probability table from one encoder pass: [M, B, L, L, K] float32.

    ``batch`` as for ``vee_infer`` (``word_shape`` [B, L] when the exits have casing)."""
    keys = ("input_ids", "attention_mask", "token_type_ids", "word_index", "word_mask", "word_shape")
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


class Tables:
    """The ``policies.Evidence`` of every exit's tables: distances and signals computed when asked.

    probs: [M, B, L, L, K]; lengths: [B]; distances: optional [M, M, B] ``layer_distances`` to
    reuse (for whichever measure is asked); signals: optional ``layer_signals`` output to reuse.
    """

    def __init__(self, probs: np.ndarray, lengths: np.ndarray, distances: np.ndarray | None = None,
                 signals: dict[str, np.ndarray] | None = None):
        self.probs, self.lengths = probs, lengths
        self._given, self._distances, self._signals = distances, {}, signals

    @property
    def num_layers(self) -> int:
        return self.probs.shape[0]

    def distance(self, measure: str) -> np.ndarray:
        if self._given is not None:
            M, B = self.probs.shape[:2]
            if self._given.shape != (M, M, B):
                raise ValueError(f"distances have shape {self._given.shape}, expected {(M, M, B)} for these tables")
            return self._given
        if measure not in self._distances:
            self._distances[measure] = layer_distances(measure, self.probs, self.lengths)
        return self._distances[measure]

    def signal(self, name: str) -> np.ndarray:
        if self._signals is None:
            self._signals = layer_signals(self.probs, self.lengths)
        return self._signals[name]

    def computed(self, measure: str) -> np.ndarray:
        return np.ones(len(self.lengths), bool)


def replay(
    policy: Policy,
    probs: jax.Array | np.ndarray,
    lengths: jax.Array | np.ndarray,
    *,
    distances: np.ndarray | None = None,
    signals: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Replay ``policy`` on precomputed tables: what ``vee_infer`` would decide, without BERT.

    The decisions are the policy's own ``exit_layers`` over ``Tables(probs, lengths)``.

    Args:
      probs: [M, B, L, L, K] every exit's table (``exit_probs``); lengths: [B].
      distances: optional [M, M, B] ``layer_distances`` of the policy's measure (VEE), to reuse.
      signals: optional ``layer_signals`` output (entropy / max-prob policies), to reuse.
    Returns numpy ``exit_layer`` [B] 1-based, ``probs`` [B, L, L, K] the table at the exit,
    ``votes`` [B] (VEE's count at the exit, else 0) and ``near_ties`` [B], the number of
    decisions up to the exit whose distance or signal lies within ``NEAR_TIE`` of tau.
    """
    probs = np.asarray(probs, np.float32)
    check_policy(policy, probs.shape[0])
    out = policy.exit_layers(Tables(probs, np.asarray(lengths), distances, signals))
    return {"exit_layer": out["exit_layer"], "probs": exit_tables(probs, out["exit_layer"], policy.ensemble),
            "votes": out["votes"], "near_ties": out["near_ties"]}
