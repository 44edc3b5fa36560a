"""batched_infer (continuous batching across layers) against vee_infer on each sentence alone."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from vee_jax import BertConfig, batched_infer, init_exits, vee_infer
from vee_jax.batched import batch_sizes, pool_layer_step, pool_vote_step
from vee_jax.data.features import SUBWORD_BUCKETS, WORD_BUCKETS, Encoded, bucket, bucket_shapes, collate
from vee_jax.engine import prepare
from vee_jax.offline import exit_probs, layer_distances, layer_signals
from vee_jax.policies import EntropyPolicy, FullPolicy, MaxProbPolicy, VeePolicy

from helpers import random_params, safe_tau

CFG = BertConfig(vocab_size=50, hidden_size=16, num_layers=4, num_heads=2, intermediate_size=32, max_position=64)
K = 4
B = 4
PARAMS = random_params(CFG)
EXITS = init_exits(jax.random.PRNGKey(1), CFG, K)
MODEL = prepare(CFG, PARAMS, EXITS)
# (words, subwords): the first kind fits 16 subwords with [CLS]/[SEP], the second needs 24: two shapes.
SHORT = [(3, 4), (5, 7), (7, 12), (1, 2), (0, 0), (6, 9), (4, 4), (2, 3)]
LONG = [(9, 16), (10, 18), (8, 15), (11, 20), (10, 16), (12, 22)]


def make_encoded():
    rng = np.random.default_rng(0)
    out = []
    for n, subwords in SHORT * 3 + LONG:
        sizes = np.ones(n, int)
        sizes[rng.choice(n, subwords - n, replace=False)] = 2  # some words have two subwords
        starts = 1 + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int) if n else np.zeros(0, int)
        ids = [2] + rng.integers(5, CFG.vocab_size, subwords).tolist() + [3]
        out.append(Encoded(np.asarray(ids, np.int32), np.asarray(starts, np.int32),
                           np.asarray(starts + sizes, np.int32), (), n))
    return [out[i] for i in rng.permutation(len(out))]  # the two shapes interleave in input order


ENCODED = make_encoded()
# T -> L, batched_infer's groups: the subword bucket, and the word bucket of its longest sentence.
SHAPES = {}
for _e in ENCODED:
    _T = bucket(len(_e.input_ids), SUBWORD_BUCKETS)
    SHAPES[_T] = max(SHAPES.get(_T, 1), bucket(max(_e.length, 1), WORD_BUCKETS))
assert SHAPES == {16: 8, 24: 16}, SHAPES  # tighter than bucket_shapes' room for T - 2 words: {16: 16, 24: 24}
assert bucket_shapes(ENCODED) == {(16, 16), (24, 24)}
N = len(ENCODED)
assert len(SHAPES) == 2


def shape_of(e):
    T = bucket(len(e.input_ids), SUBWORD_BUCKETS)
    return T, SHAPES[T]



@pytest.fixture(scope="module")
def policies():
    dist = {m: [] for m in ("kl", "euclidean", "cosine", "edit")}
    ent, mp = [], []
    for T, L in sorted(SHAPES.items()):
        group = [e for e in ENCODED if shape_of(e) == (T, L)]
        batch = collate(group, (T, L), len(group))
        probs = np.asarray(exit_probs(CFG, PARAMS, EXITS, batch))
        for m in dist:
            dist[m].append(layer_distances(m, probs, batch["lengths"]).ravel())
        sig = layer_signals(probs, batch["lengths"])
        ent.append(sig["entropy"].ravel())
        mp.append(sig["maxprob"].ravel())
    dist = {m: np.concatenate(v) for m, v in dist.items()}
    kl, ent, mp = dist["kl"], np.concatenate(ent), np.concatenate(mp)
    tau1, tau2 = safe_tau(kl, 0.4), safe_tau(kl, 0.6)
    return {
        # measures without KL self terms, and the vote skip's edges (patience 0: exits at layer
        # 1; patience >= M: no vote can pass, every sentence runs to the last layer)
        "vee-euclidean-p2": VeePolicy("euclidean", safe_tau(dist["euclidean"], 0.5), 2),
        "vee-cosine-p1": VeePolicy("cosine", safe_tau(dist["cosine"], 0.5), 1),
        "vee-edit-p1": VeePolicy("edit", safe_tau(dist["edit"], 0.5), 1),
        "vee-kl-p0": VeePolicy("kl", tau1, 0),
        "vee-kl-p9": VeePolicy("kl", tau1, 9),
        "vee-kl-p1": VeePolicy("kl", tau1, 1),
        "vee-kl-p2": VeePolicy("kl", tau2, 2),
        "vee-kl-p1-ensemble": VeePolicy("kl", tau1, 1, ensemble=True),
        "vee-kl-p2-ensemble": VeePolicy("kl", tau2, 2, ensemble=True),
        "entropy": EntropyPolicy(safe_tau(ent, 0.5)),
        "maxprob": MaxProbPolicy(safe_tau(mp, 0.5)),
        "full": FullPolicy(),  # vee_infer on whole batches, as budget without ensemble
    }


def alone(e, policy):
    """vee_infer on one sentence (batch 1, its group's shape)."""
    out = jax.device_get(vee_infer(CFG, MODEL["encoder"], MODEL["exits"], collate([e], shape_of(e), 1), policy))
    return {k: v[0] for k, v in out.items() if k != "layers_run"}


@pytest.mark.parametrize("name", ["vee-kl-p1", "vee-kl-p2", "vee-kl-p1-ensemble", "vee-kl-p2-ensemble",
                                  "vee-euclidean-p2", "vee-cosine-p1", "vee-edit-p1", "vee-kl-p0", "vee-kl-p9",
                                  "entropy", "maxprob", "full"])
def test_batched_equals_one_sentence_at_a_time(policies, name):
    policy = policies[name]
    results, stats = batched_infer(CFG, MODEL, ENCODED, policy, batch_size=B)
    assert len(results) == N
    layers = []
    for i, (e, res) in enumerate(zip(ENCODED, results)):
        ref = alone(e, policy)
        n = e.length
        assert res["probs"].shape == (n, n, K) and res["probs"].dtype == np.float32
        assert res["exit_layer"] == ref["exit_layer"], (name, i)
        assert res["votes"] == ref["votes"], (name, i)
        np.testing.assert_allclose(res["probs"], ref["probs"][:n, :n], atol=2e-6, err_msg=f"{name}, sentence {i}")
        layers.append(res["exit_layer"])
    if name in ("vee-kl-p1", "vee-kl-p2", "entropy", "maxprob"):
        assert len(set(layers)) >= 2, layers  # exits vary: the scheduler really mixes layers
    if name == "vee-kl-p0":
        assert set(layers) == {1}
    if name == "vee-kl-p9":
        assert set(layers) == {CFG.num_layers}
    # No sentence runs a layer past its exit; padding is counted apart.
    assert stats.sentence_layers == sum(layers)
    assert stats.layer_calls == sum(stats.batch_sizes.values())
    assert stats.sentence_layers + stats.padded_sentence_layers == sum(s * c for s, c in stats.batch_sizes.items())
    assert sorted(stats.shapes) == sorted(SHAPES.items())
    assert set(stats.batch_sizes) <= set(batch_sizes(B))


def many_short(count: int, seed: int) -> list[Encoded]:
    """``count`` random sentences of 1-7 words, one subword each: all in the 16-subword group."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(1, 8))
        ids = np.asarray([2] + rng.integers(5, CFG.vocab_size, n).tolist() + [3], np.int32)
        starts = np.arange(1, n + 1, dtype=np.int32)
        out.append(Encoded(ids, starts, starts + 1, (), n))
    return out


# Counts chosen so that the schedule ends in padded calls (checked below) with these exits.
@pytest.mark.parametrize("batch_size, count", [(6, 91), (7, 90)])
def test_any_batch_size_gives_the_same_decisions(policies, batch_size, count, monkeypatch):
    """Many sentences in one group: slots are reused and padded calls follow fuller ones at the
    same padded size; the device pools must keep every sentence's own state, so a padding row
    (all-zero attention mask) must never carry a sentence's slot (it would overwrite it)."""
    import vee_jax.batched as batched

    seen = []

    def spy(config, encoder, layer, exit, pool, slots, inputs, **kw):
        mask, ids = np.asarray(inputs["attention_mask"]), np.asarray(slots)
        seen.append((ids[mask.sum(-1) == 0], pool.shape[0]))
        return original(config, encoder, layer, exit, pool, slots, inputs, **kw)

    original = batched.pool_layer_step
    monkeypatch.setattr(batched, "pool_layer_step", spy)
    # Host arrays handed to the device are never reused: the device may still read them after
    # the call returns (pool_write is not waited for), so a reused buffer races with it.
    handed, device_put = [], jax.device_put

    def put(x, *a, **kw):
        handed.extend(v for v in jax.tree.leaves(x) if isinstance(v, np.ndarray))
        return device_put(x, *a, **kw)

    monkeypatch.setattr(jax, "device_put", put)
    policy = policies["vee-kl-p2"]
    encoded = many_short(count, batch_size)
    results, stats = batched_infer(CFG, MODEL, encoded, policy, batch_size=batch_size)
    assert stats.padded_sentence_layers > 0 and stats.peak_in_flight < len(encoded)
    assert all((padding == cap).all() for padding, cap in seen)
    assert len({id(v) for v in handed}) == len(handed) > 0  # all kept alive here, so ids are unique
    assert sum(len(padding) for padding, _ in seen) == stats.padded_sentence_layers
    for i, (e, res) in enumerate(zip(encoded, results)):
        out = jax.device_get(vee_infer(CFG, MODEL["encoder"], MODEL["exits"], collate([e], (16, 8), 1), policy))
        assert (res["exit_layer"], res["votes"]) == (out["exit_layer"][0], out["votes"][0]), (batch_size, i)
        np.testing.assert_allclose(res["probs"], out["probs"][0, :e.length, :e.length], atol=2e-6)


def test_schedule_runs_full_batches_and_bounds_the_state(policies):
    """Rule 1 (deepest full queue first) keeps <= (M-1)(B-1)+B sentences in flight; only a group's
    tail and its last admission run short batches (at most M per group)."""
    _, stats = batched_infer(CFG, MODEL, ENCODED, policies["vee-kl-p1"], batch_size=B)
    M = CFG.num_layers
    assert stats.peak_in_flight <= (M - 1) * (B - 1) + B < 24  # the short group holds 24 sentences
    short_calls = sum(c for s, c in stats.batch_sizes.items() if s < B)
    assert short_calls <= M * len(SHAPES)
    assert stats.batch_sizes[B] > short_calls


def test_compilations_bounded_by_shapes_times_batch_sizes(policies):
    """One layer program per (shape, padded size, first layer or not) for all M layers; votes per m.

    The layer's weights are arguments, so every layer shares a compilation; the vote reads the
    m earlier tables (m static, 0..M-1), a small program each. Tau is traced: new values or
    the ensemble compile nothing. (Patience is traced too, but it decides which layers vote,
    so a smaller one may compile the vote programs of earlier layers once.)
    """
    size = 3  # padded sizes (1, 2, 3): 3 is new to this module, so something compiles here
    bound = len(SHAPES) * len(batch_sizes(size))
    before, votes = pool_layer_step._cache_size(), pool_vote_step._cache_size()
    batched_infer(CFG, MODEL, ENCODED, policies["vee-kl-p1"], batch_size=size)
    after, votes_after = pool_layer_step._cache_size(), pool_vote_step._cache_size()
    assert 1 <= after - before <= 2 * bound
    assert 1 <= votes_after - votes <= bound * CFG.num_layers
    # Other numbers with the same decisions (safe_tau keeps 1e-3 from every distance), and the
    # ensemble: the same schedule, so the same shapes, and nothing new compiles.
    p1 = policies["vee-kl-p1"]
    for policy in (dataclasses.replace(p1, tau=p1.tau + 1e-4), policies["vee-kl-p1-ensemble"]):
        batched_infer(CFG, MODEL, ENCODED, policy, batch_size=size)
    assert pool_layer_step._cache_size() == after
    assert pool_vote_step._cache_size() == votes_after


def test_one_layer_model():
    """M = 1: the only layer is the last, so every sentence exits there, votes or not."""
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_position=64)
    model = prepare(cfg, random_params(cfg), init_exits(jax.random.PRNGKey(2), cfg, K))
    encoded = ENCODED[:9]
    results, _ = batched_infer(cfg, model, encoded, VeePolicy("kl", 0.5, 1), batch_size=4)
    for e, res in zip(encoded, results):
        out = jax.device_get(vee_infer(cfg, model["encoder"], model["exits"], collate([e], shape_of(e), 1),
                                       VeePolicy("kl", 0.5, 1)))
        assert res["exit_layer"] == 1 == out["exit_layer"][0]
        np.testing.assert_allclose(res["probs"], out["probs"][0, :e.length, :e.length], atol=2e-6)


def test_empty_input():
    results, stats = batched_infer(CFG, MODEL, [], VeePolicy(), batch_size=B)
    assert results == [] and stats.layer_calls == 0
