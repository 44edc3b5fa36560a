"""A new exit rule is one class in one file: a toy policy, defined only here, runs through the
online engine (``vee_infer``), the batched engine (``batched_infer``), the offline replay and the
sweeps, and all four agree. Nothing in vee_jax names it."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vee_jax import BertConfig, batched_infer, init_exits, vee_infer
from vee_jax.batched import whole_batches
from vee_jax.engine import prepare
from vee_jax.offline import exit_probs, replay
from vee_jax.policies import POLICIES, Policy, policy_from_input, register
from vee_jax.sweeps import SweepGrid, config_exits, near_ties, summarize, sweep_split

from helpers import random_params
from test_batched import ENCODED

CFG = BertConfig(vocab_size=50, hidden_size=16, num_layers=4, num_heads=2, intermediate_size=32, max_position=64)
K = 4
PARAMS = random_params(CFG)
EXITS = init_exits(jax.random.PRNGKey(1), CFG, K)
MODEL = prepare(CFG, PARAMS, EXITS)
SENTENCES = [e for e in ENCODED if e.length > 0]


@dataclasses.dataclass(frozen=True)
class EvenAtPolicy(Policy):
    """Even-length sentences exit at layer ``layer`` (1-based), the others at the last layer."""

    layer: int = 2
    ensemble: bool = False
    name: ClassVar[str] = "even_at"
    KNOBS: ClassVar[dict[str, str]] = {"layer": "int32"}  # traced: a new layer does not recompile

    def earliest_stop(self) -> int:
        return self.layer - 1

    def stop(self, probs_m, history, m, lengths, knobs, history_kl=None):
        stop = (lengths % 2 == 0) & (jnp.asarray(m) + 1 >= knobs["layer"])
        return stop, jnp.zeros(probs_m.shape[0], jnp.int32)

    def exit_layers(self, evidence):
        M = evidence.num_layers
        exit_layer = np.where(np.asarray(evidence.lengths) % 2 == 0, min(self.layer, M), M).astype(np.int64)
        zeros = np.zeros_like(exit_layer)
        return {"exit_layer": exit_layer, "votes": zeros, "near_ties": zeros}

    @classmethod
    def sweep(cls, evidence, grid, subsets, ensemble):
        name, cols = subsets[0]
        layers = list(range(1, evidence.num_layers + 1))
        exits = np.stack([cls(layer=m).exit_layers(evidence)["exit_layer"][cols] for m in layers])
        yield name, cols, exits, {"layer": layers}


@pytest.fixture(autouse=True, scope="module")
def registered():
    """Known by name (``policy_from_input``, sweep rows) while this file runs, then forgotten."""
    register(EvenAtPolicy)
    yield
    POLICIES.pop(EvenAtPolicy.name)


def expected(policy, lengths):
    return np.where(np.asarray(lengths) % 2 == 0, policy.layer, CFG.num_layers)


@pytest.mark.parametrize("layer, ensemble", [(2, False), (3, True)])
def test_toy_policy_agrees_everywhere(layer, ensemble):
    policy = policy_from_input({"strategy": "even_at", "layer": layer, "ensemble": ensemble})
    assert policy == EvenAtPolicy(layer, ensemble)
    lengths = np.asarray([e.length for e in SENTENCES])
    assert len(set(expected(policy, lengths).tolist())) == 2  # both kinds of sentence

    online = np.zeros(len(SENTENCES), np.int64)
    replayed = np.zeros(len(SENTENCES), np.int64)
    tables, online_probs = [None] * len(SENTENCES), [None] * len(SENTENCES)
    for idx, batch in whole_batches(SENTENCES, 8):
        out = jax.device_get(vee_infer(CFG, MODEL["encoder"], MODEL["exits"], batch, policy))
        probs = np.asarray(exit_probs(CFG, PARAMS, EXITS, batch))
        off = replay(policy, probs, batch["lengths"])
        for r, i in enumerate(idx):
            n = SENTENCES[i].length
            online[i], replayed[i] = out["exit_layer"][r], off["exit_layer"][r]
            online_probs[i] = out["probs"][r, :n, :n]
            np.testing.assert_allclose(off["probs"][r, :n, :n], online_probs[i], atol=1e-5)
            tables[i] = probs[:, r, :n, :n]
    results, stats = batched_infer(CFG, MODEL, SENTENCES, policy, batch_size=4)
    batched = np.asarray([r["exit_layer"] for r in results])

    np.testing.assert_array_equal(online, expected(policy, lengths))
    np.testing.assert_array_equal(replayed, online)
    np.testing.assert_array_equal(batched, online)
    assert stats.sentence_layers == online.sum()  # no sentence ran a layer past its exit
    for r, p in zip(results, online_probs):
        np.testing.assert_allclose(r["probs"], p, atol=1e-5)

    # The sweeps: its rows, and the exits of one configuration, from the cached tables alone.
    summary = summarize(tables, [set() for _ in SENTENCES], ["a", "b", "c"][:K - 1], True, measures=("kl",))
    np.testing.assert_array_equal(config_exits(summary, policy), online)
    assert near_ties(summary, policy) == 0
    rows = sweep_split(summary, "test", SweepGrid(ensembles=(ensemble,)), kinds=[EvenAtPolicy])
    row = next(r for r in rows if r["layer"] == layer)
    assert row["strategy"] == "even_at" and row["ensemble"] == ensemble
    assert row["avg_exit_layer"] == pytest.approx(online.mean())
    assert policy_from_input(row, strict=False) == policy
    np.testing.assert_array_equal(config_exits(summary, row), online)


def test_toy_policy_from_flags():
    from absl import flags

    from vee_jax.commands.common import define_policy_flags, parse

    fv = flags.FlagValues()
    define_policy_flags(fv, "exit policy")  # the registry's names: the toy policy is a choice
    parse(fv, "eval.py", "", ["--strategy", "even_at", "--layer", "3"])
    assert policy_from_input(fv, num_layers=CFG.num_layers) == EvenAtPolicy(3)
    assert EvenAtPolicy in POLICIES.values()
