"""Exit policies: the vote of VEE-BERT (Sec. 4.2) and the baselines' exit tests (Sec. 5.2).

A policy is a small frozen (hashable) dataclass, so it can be a static argument of ``jax.jit``.
``vote_step`` is the decision at one layer, shared by the online engine (``engine.vee_infer``)
and, in numpy, by the offline replay (``offline.replay``), which must agree with it.

The vote (NOTES item 4): at layer m (1-based) the counter restarts at 0 and counts the earlier
layers i in 1..m-1 with ``D(i, m) <= tau`` (all of them, not only consecutive ones as in PABEE);
exit when ``count >= patience``. So with patience p the earliest exit is layer p+1 and
patience 0 exits at layer 1. Every policy exits at the last layer M. The prediction is layer
m's table, or with ``ensemble`` the mean of the tables of layers 1..m (Sec. 5.5.1; the vote
itself always compares the single layers' tables).
"""

from __future__ import annotations

import dataclasses
from typing import Union

import jax
import jax.numpy as jnp
from jax import lax

from .config import ConfigError
from .measures import MEASURES, get_measure, kl_from_self_term, mean_max_prob, normalized_entropy


@dataclasses.dataclass(frozen=True)
class VeePolicy:
    """VEE-BERT: exit at layer m when at least ``patience`` earlier layers i have D(i, m) <= tau."""

    measure: str = "kl"
    tau: float = 0.01
    patience: int = 2
    ensemble: bool = False
    name = "vee"

    def __post_init__(self):
        get_measure(self.measure)
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")


@dataclasses.dataclass(frozen=True)
class EntropyPolicy:
    """BranchyNet: exit at the first layer whose normalised entropy (Eq. 6, NOTES 2) is < tau."""

    tau: float = 0.1
    ensemble: bool = False
    name = "entropy"


@dataclasses.dataclass(frozen=True)
class MaxProbPolicy:
    """Shallow-Deep: exit at the first layer whose mean (over valid cells) max probability is > tau."""

    tau: float = 0.9
    ensemble: bool = False
    name = "maxprob"


@dataclasses.dataclass(frozen=True)
class BudgetPolicy:
    """Budgeted exiting (Sec. 2.3.2): every sentence exits at layer ``layer`` (1-based)."""

    layer: int = 1
    ensemble: bool = False
    name = "budget"

    def __post_init__(self):
        if self.layer < 1:
            raise ConfigError(f"budget layer is 1-based, got {self.layer}")


@dataclasses.dataclass(frozen=True)
class FullPolicy:
    """No early exit: the whole backbone and the last exit (the BERT-biaffine baseline)."""

    ensemble: bool = False
    name = "full"


Policy = Union[VeePolicy, EntropyPolicy, MaxProbPolicy, BudgetPolicy, FullPolicy]

POLICIES: dict[str, type] = {
    "vee": VeePolicy,
    "entropy": EntropyPolicy,
    "maxprob": MaxProbPolicy,
    "budget": BudgetPolicy,
    "full": FullPolicy,
}
"""Policy classes by the strategy name used by eval.py."""


def make_policy(strategy: str, **options) -> Policy:
    """A policy from a strategy name and its fields; options it does not have are ignored.

    ``make_policy("vee", measure="kl", tau=0.01, patience=2)``, ``make_policy("budget", layer=3)``.
    Options given as None are left at their defaults.
    """
    if strategy not in POLICIES:
        raise ConfigError(f"unknown strategy {strategy!r}; expected one of {sorted(POLICIES)}")
    cls = POLICIES[strategy]
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in fields and v is not None})


def check_policy(policy: Policy, num_layers: int) -> None:
    """Raise ValueError when ``policy`` cannot run on a model with ``num_layers`` exits."""
    if isinstance(policy, BudgetPolicy) and policy.layer > num_layers:
        raise ConfigError(f"budget layer {policy.layer} > the model's {num_layers} layers")
    if not isinstance(policy, (VeePolicy, EntropyPolicy, MaxProbPolicy, BudgetPolicy, FullPolicy)):
        raise TypeError(f"not a policy: {policy!r}")


KNOBS = ("tau", "patience", "layer")
"""A policy's numbers; the online engine passes them as traced arguments (see ``split_policy``)."""


def split_policy(policy: Policy) -> tuple[Policy, dict[str, float | int]]:
    """``(static part, knobs)``: the policy with its numbers zeroed, and the numbers.

    The engine compiles once per static part (kind, measure, ensemble) and takes tau, patience
    and the budget layer as traced values, so a new threshold never recompiles.
    """
    knobs = {k: getattr(policy, k) for k in KNOBS if hasattr(policy, k)}
    neutral = {"tau": 0.0, "patience": 0, "layer": 1}
    return dataclasses.replace(policy, **{k: neutral[k] for k in knobs}), knobs


def vote_count(
    measure: str, history: jax.Array, probs_m: jax.Array, m: jax.Array | int, lengths: jax.Array, tau: float,
    history_kl: jax.Array | None = None,
) -> jax.Array:
    """VEE's counter at layer m: #{i < m : D(T_i, T_m) <= tau} (Sec. 4.2, NOTES items 1, 4).

    history: [E, B, L, L, K], the tables of layers 0..E-1 (0-based); only entries i < m count
    (E = M in ``vee_infer``; ``batched_infer`` passes just the m earlier ones).
    probs_m: [B, L, L, K], layer m's table; m: 0-based index (may be traced); lengths: [B].
    history_kl: [E, B] the tables' ``measures.kl_self_term`` (KL only), which an engine
    computes once per table; None: computed here.
    Returns [B] int32. KL, Euclidean and cosine compare all E history entries in one fused
    computation and mask i >= m: at most M small tables, cheaper than a loop of dynamic slices
    (bench/latency.py). The edit distance (a dynamic programme, O(L^4)) loops over the m
    earlier tables only, so an early layer does not pay for later ones.
    """
    dist = get_measure(measure)
    if measure != "edit":
        if measure == "kl" and history_kl is not None:  # the self terms cached by the engine
            d = kl_from_self_term(history, history_kl, probs_m[None], lengths[None])  # [E, B]
        else:
            d = dist(history, probs_m[None], lengths[None])  # [E, B]; KL(p_i || p_m), i the earlier layer
        earlier = jnp.arange(history.shape[0])[:, None] < m
        return jnp.sum((d <= tau) & earlier, axis=0).astype(jnp.int32)

    def body(i, count):
        p_i = lax.dynamic_index_in_dim(history, i, 0, keepdims=False)
        return count + (dist(p_i, probs_m, lengths) <= tau).astype(jnp.int32)

    return lax.fori_loop(0, m, body, jnp.zeros(probs_m.shape[0], jnp.int32))


def vote_step(
    policy: Policy,
    history: jax.Array | None,
    probs_m: jax.Array,
    m: jax.Array | int,
    lengths: jax.Array,
    *,
    num_layers: int | None = None,
    knobs: dict[str, jax.Array] | None = None,
    history_kl: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The exit decision of every sentence at layer m (0-based index; layer m+1 in the paper).

    Args:
      policy: a static policy config.
      history: [M, B, L, L, K] earlier layers' tables (entries i < m are read; VEE only, may be
        None for the other policies).
      probs_m: [B, L, L, K] layer m's table (softmax of exit m).
      m: 0-based layer index, may be traced.
      lengths: [B] real sentence lengths (words).
      num_layers: M; defaults to ``history.shape[0]``.
      knobs: tau / patience / layer values (may be traced) that replace the policy's own
        (``split_policy``); None: the policy's fields.
      history_kl: [M, B] the history's ``measures.kl_self_term`` (VEE with KL; None: computed).
    Returns:
      ``(exit [B] bool, count [B] int32)``: exit is True when the sentence stops at this layer
      (always at the last layer); count is VEE's vote count (0 for other policies).
    """
    M = num_layers if num_layers is not None else history.shape[0]
    B = probs_m.shape[0]
    last = jnp.broadcast_to(jnp.asarray(m) >= M - 1, (B,))
    count = jnp.zeros(B, jnp.int32)
    knob = {k: getattr(policy, k) for k in KNOBS if hasattr(policy, k)} | (knobs or {})
    if isinstance(policy, VeePolicy):
        count = vote_count(policy.measure, history, probs_m, m, lengths, knob["tau"], history_kl)
        stop = count >= knob["patience"]  # NOTES item 4
    elif isinstance(policy, EntropyPolicy):
        stop = normalized_entropy(probs_m, lengths) < knob["tau"]  # Eq. 6, NOTES item 2
    elif isinstance(policy, MaxProbPolicy):
        stop = mean_max_prob(probs_m, lengths) > knob["tau"]
    elif isinstance(policy, BudgetPolicy):
        stop = jnp.broadcast_to(jnp.asarray(m) + 1 >= knob["layer"], (B,))
    elif isinstance(policy, FullPolicy):
        stop = jnp.zeros(B, bool)
    else:
        raise TypeError(f"not a policy: {policy!r}")
    return stop | last, count


__all__ = [
    "BudgetPolicy", "EntropyPolicy", "FullPolicy", "MaxProbPolicy", "MEASURES", "POLICIES", "Policy",
    "VeePolicy", "check_policy", "make_policy", "split_policy", "vote_count", "vote_step",
]
