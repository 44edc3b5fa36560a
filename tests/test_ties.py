"""Exact ties: tau equal to an observed distance or signal, through every path that decides an exit.

Agreement is ``D <= tau`` (NOTES item 1), entropy exits when ``g < tau`` and max-prob when
``mean max p > tau`` (NOTES item 2). The other tests pick tau halfway between observed values,
so they cannot see the boundary; here tau *is* an observed value, and ``vote_step`` (driven
layer by layer), ``vee_infer``, ``batched_infer`` and the offline ``replay`` must all decide
as the inequality says. Mutants these tests catch (each checked by hand): ``<=`` turned into
``<`` in ``policies.vote_count`` (the fused measures, and the edit distance's loop), or in
``offline.vee_exit_layers``; entropy's ``<`` turned into ``<=`` and max-prob's ``>`` into
``>=``, online or offline.

The tables come from a model whose exits ignore their input (U = W = 0, a bias per exit):
every cell of layer m holds softmax(b_m), so which layers agree is known by construction,
and identical biases give bit-identical tables (every distance exactly 0). With K = 2 and
one-word sentences, each measure sums two numbers and zeros, so every path computes the
same float32 value and a tie is exact. The edit distance is a count over n, exact at any
length; it is also tied on a random model's tables at observed values k / n.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vee_jax import BertConfig, batched_infer, init_exits, vee_infer
from vee_jax.data.features import Encoded, collate
from vee_jax.engine import prepare
from vee_jax.offline import exit_probs, layer_distances, layer_signals, replay, vee_exit_layers
from vee_jax.policies import EntropyPolicy, MaxProbPolicy, VeePolicy

from helpers import random_params
from test_vote import run_vote_step

CFG = BertConfig(vocab_size=50, hidden_size=16, num_layers=4, num_heads=2, intermediate_size=32, max_position=64)
PARAMS = random_params(CFG)
SHAPE = (16, 8)  # subwords, words
MEASURES = ["kl", "euclidean", "cosine", "edit"]


def sentences(lengths) -> list[Encoded]:
    rng = np.random.default_rng(0)
    out = []
    for n in lengths:
        ids = np.asarray([2, *rng.integers(5, CFG.vocab_size, n), 3], np.int32)
        starts = np.arange(1, n + 1, dtype=np.int32)
        out.append(Encoded(ids, starts, starts + 1, (), n))
    return out


def constant_exits(biases) -> dict:
    """Exits whose every cell is softmax(biases[m]) whatever the words: [M, K] biases."""
    b = jnp.asarray(biases, jnp.float32)
    ex = init_exits(jax.random.PRNGKey(0), CFG, b.shape[1])
    ex = jax.tree.map(jnp.zeros_like, ex)
    ex["b"] = b
    return ex


def every_path(exits, encoded, policy) -> dict[str, np.ndarray]:
    """Exit layers [B] from vote_step, vee_infer, batched_infer and replay on the same tables."""
    batch = collate(encoded, SHAPE, len(encoded))
    lengths = np.asarray(batch["lengths"])
    probs = np.asarray(exit_probs(CFG, PARAMS, exits, batch))
    model = prepare(CFG, PARAMS, exits)
    online = jax.device_get(vee_infer(CFG, model["encoder"], model["exits"], batch, policy))
    results, _ = batched_infer(CFG, model, encoded, policy, batch_size=2)
    return {
        "vote_step": run_vote_step(policy, probs, lengths)[0],
        "vee_infer": np.asarray(online["exit_layer"]),
        "batched_infer": np.array([r["exit_layer"] for r in results]),
        "replay": replay(policy, probs, lengths)["exit_layer"],
    }


def assert_all(paths: dict[str, np.ndarray], expected, what: str) -> None:
    for name, got in paths.items():
        np.testing.assert_array_equal(got, expected, err_msg=f"{what}: {name}")


SAME = [[1.0, 0.0]] * 4  # every layer the same table


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("patience", [1, 2])
def test_tau_zero_counts_identical_tables(measure, patience):
    """Identical tables have distance exactly 0, and tau = 0 still counts them as agreeing."""
    encoded = sentences([1, 3, 7, 0])
    paths = every_path(constant_exits(SAME), encoded, VeePolicy(measure, tau=0.0, patience=patience))
    assert_all(paths, [patience + 1] * 3 + [patience + 1], f"{measure}, tau 0, patience {patience}")


# Layers A, B, A, B: layer 2 differs from layer 1 by D(A, B); layer 3 equals layer 1 exactly.
ABAB = [[2.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("measure", MEASURES)
def test_tau_equal_to_an_observed_distance_agrees(measure):
    """tau = D(layer 1, layer 2) exactly: layer 1 votes for layer 2, so patience 1 exits at 2 (at 3 if
    the tie were read as disagreement)."""
    exits = constant_exits(ABAB)
    encoded = sentences([1, 1])  # one word: n = 1, every path sums the same two numbers
    batch = collate(encoded, SHAPE, len(encoded))
    probs = np.asarray(exit_probs(CFG, PARAMS, exits, batch))
    D = layer_distances(measure, probs, batch["lengths"])
    tau = float(D[0, 1, 0])
    assert tau > 0 and D[0, 1, 1] == tau and D[0, 2, 0] == 0.0
    if measure == "edit":
        assert tau == 1.0  # different argmax in the one cell
    assert_all(every_path(exits, encoded, VeePolicy(measure, tau=tau, patience=1)), [2, 2], f"{measure} at tau = D")
    below = float(np.nextafter(np.float32(tau), np.float32(0)))
    assert_all(every_path(exits, encoded, VeePolicy(measure, tau=below, patience=1)), [3, 3],
               f"{measure} just below D")


def test_edit_ties_at_observed_values_on_a_random_model():
    """Edit distances are k / n; with tau set to observed values every path agrees with replay,
    and the choice of values makes at least one exit hinge on the tie."""
    exits = jax.tree.map(lambda x: 4.0 * x, init_exits(jax.random.PRNGKey(5), CFG, 3))
    encoded = sentences([2, 3, 4, 5, 6, 7, 3, 4])
    batch = collate(encoded, SHAPE, len(encoded))
    probs = np.asarray(exit_probs(CFG, PARAMS, exits, batch))
    D = layer_distances("edit", probs, batch["lengths"])
    values = np.unique(D[np.isfinite(D) & (D > 0)])
    hinged = 0
    for tau in values[:: max(1, len(values) // 6)]:
        policy = VeePolicy("edit", tau=float(tau), patience=1)
        paths = every_path(exits, encoded, policy)
        assert_all(paths, paths["replay"], f"edit, tau {tau}")
        strict = vee_exit_layers(D, [float(np.nextafter(tau, np.float32(0)))], [1])[0][0, 0]
        hinged += int((strict != paths["replay"]).any())
    assert hinged >= 1


def test_entropy_and_maxprob_thresholds_at_equality():
    """tau = layer 1's signal exactly: entropy (g < tau) and max-prob (> tau) do not exit there;
    layer 2, more confident, exits."""
    exits = constant_exits([[0.5, 0.0], [3.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    encoded = sentences([1, 1])
    batch = collate(encoded, SHAPE, len(encoded))
    sig = layer_signals(np.asarray(exit_probs(CFG, PARAMS, exits, batch)), batch["lengths"])
    g, mp = float(sig["entropy"][0, 0]), float(sig["maxprob"][0, 0])
    assert sig["entropy"][1, 0] < g and sig["maxprob"][1, 0] > mp
    assert_all(every_path(exits, encoded, EntropyPolicy(tau=g)), [2, 2], "entropy at tau = g_1")
    assert_all(every_path(exits, encoded, MaxProbPolicy(tau=mp)), [2, 2], "max-prob at tau = mp_1")
    # Just past the signal, layer 1 exits: the boundary really sits at equality.
    assert_all(every_path(exits, encoded, EntropyPolicy(tau=float(np.nextafter(np.float32(g), np.float32(1))))),
               [1, 1], "entropy just above g_1")
    assert_all(every_path(exits, encoded, MaxProbPolicy(tau=float(np.nextafter(np.float32(mp), np.float32(0))))),
               [1, 1], "max-prob just below mp_1")
