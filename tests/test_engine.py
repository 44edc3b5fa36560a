"""The online engine (vee_infer) against the offline replay, batch 1, padding, and skipped layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vee_jax import BertConfig, init_exits, vee_infer
from vee_jax.offline import exit_probs, layer_distances, layer_signals, replay
from vee_jax.policies import BudgetPolicy, EntropyPolicy, FullPolicy, MaxProbPolicy, VeePolicy

from helpers import random_params
from test_vote import ref_vote

CFG = BertConfig(vocab_size=50, hidden_size=16, num_layers=4, num_heads=2, intermediate_size=32, max_position=64)
K = 4
LENGTHS = [3, 5, 8, 1, 0, 10]  # one empty sentence ([CLS] [SEP] only)
T, L = 24, 12
PARAMS = random_params(CFG)
EXITS = init_exits(jax.random.PRNGKey(3), CFG, K)  # a key whose exits spread over layers


def sentences(seed=0):
    """Per sentence ``(subword ids incl. [CLS]/[SEP], word_index, word_end)``; some words have 2 subwords."""
    rng = np.random.default_rng(seed)
    out = []
    for n in LENGTHS:
        sizes = rng.integers(1, 3, n) if n else np.zeros(0, int)
        starts = 1 + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int) if n else np.zeros(0, int)
        ids = [2] + rng.integers(5, CFG.vocab_size, int(sizes.sum())).tolist() + [3]
        out.append((ids, starts, starts + sizes))
    return out


SENTS = sentences()


def make_batch(sents, T=T, L=L, pad_rows=0):
    """Collate by hand (independent of vee_jax.data): rows past ``sents`` are batch padding."""
    B = len(sents) + pad_rows
    b = {k: np.zeros((B, T), np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    b.update({k: np.zeros((B, L), np.int32) for k in ("word_index", "word_end", "word_mask")})
    b["lengths"] = np.zeros(B, np.int32)
    for r, (ids, start, end) in enumerate(sents):
        n = len(start)
        b["input_ids"][r, :len(ids)] = ids
        b["attention_mask"][r, :len(ids)] = 1
        b["word_index"][r, :n], b["word_end"][r, :n], b["word_mask"][r, :n] = start, end, 1
        b["lengths"][r] = n
    return b


BATCH = make_batch(SENTS, pad_rows=1)
N = len(SENTS)


@pytest.fixture(scope="module")
def offline():
    probs = np.asarray(exit_probs(CFG, PARAMS, EXITS, BATCH))
    return probs, {m: layer_distances(m, probs, BATCH["lengths"]) for m in ("kl", "euclidean", "cosine", "edit")}


def safe_tau(values, q):
    """A threshold near quantile q that lies halfway between two observed values at least 1e-3 apart."""
    v = np.unique(np.asarray(values)[np.isfinite(values)])
    gaps = np.flatnonzero(np.diff(v) > 1e-3)
    j = gaps[np.argmin(np.abs(gaps - q * (len(v) - 1)))]
    return float((v[j] + v[j + 1]) / 2)


def policies(offline):
    probs, D = offline
    sig = layer_signals(probs[:, :N], BATCH["lengths"][:N])
    real = lambda x: x[..., :N]
    return {
        "vee-kl-p1": VeePolicy("kl", safe_tau(real(D["kl"]), 0.4), 1),
        "vee-kl-p2-ensemble": VeePolicy("kl", safe_tau(real(D["kl"]), 0.6), 2, ensemble=True),
        "vee-euclidean": VeePolicy("euclidean", safe_tau(real(D["euclidean"]), 0.5), 1),
        "vee-cosine": VeePolicy("cosine", safe_tau(real(D["cosine"]), 0.5), 2),
        "vee-edit": VeePolicy("edit", safe_tau(real(D["edit"]), 0.5), 1),
        "entropy": EntropyPolicy(safe_tau(sig["entropy"], 0.5)),
        "maxprob": MaxProbPolicy(safe_tau(sig["maxprob"], 0.5)),
        "budget": BudgetPolicy(2),
        "budget-ensemble": BudgetPolicy(3, ensemble=True),
        "full": FullPolicy(),
    }


def as_numpy(out):
    return {k: np.asarray(v) for k, v in out.items()}


def assert_same(a, b, rows, lengths, what):
    """Same exit layers, same tables on the valid cells (float noise only), same argmax labels."""
    np.testing.assert_array_equal(a["exit_layer"][rows], b["exit_layer"][rows], err_msg=what)
    for ra, rb, n in zip(rows, rows, lengths):
        ta, tb = a["probs"][ra, :n, :n], b["probs"][rb, :n, :n]
        np.testing.assert_allclose(ta, tb, atol=2e-6, err_msg=what)
        upper = np.triu(np.ones((n, n), bool))
        np.testing.assert_array_equal(ta.argmax(-1)[upper], tb.argmax(-1)[upper], err_msg=what)


@pytest.mark.parametrize("name", ["vee-kl-p1", "vee-kl-p2-ensemble", "vee-euclidean", "vee-cosine", "vee-edit",
                                  "entropy", "maxprob", "budget", "budget-ensemble", "full"])
def test_online_equals_offline(offline, name):
    probs, D = offline
    policy = policies(offline)[name]
    on = as_numpy(vee_infer(CFG, PARAMS, EXITS, BATCH, policy))
    distances = D[policy.measure] if isinstance(policy, VeePolicy) else None
    off = replay(policy, probs[:, :N], BATCH["lengths"][:N],
                 distances=None if distances is None else distances[..., :N])
    assert (off["near_ties"] == 0).all()
    rows = list(range(N))
    assert_same(on, off, rows, LENGTHS, name)
    np.testing.assert_array_equal(on["votes"][:N], off["votes"])
    assert on["exit_layer"][N] == 0  # the batch padding row never runs
    assert int(on["layers_run"]) == on["exit_layer"].max()
    if name == "vee-kl-p1":
        assert len(set(on["exit_layer"][:N].tolist())) >= 2  # not a degenerate all-same decision


@pytest.mark.parametrize("name", ["vee-kl-p1", "vee-kl-p2-ensemble", "maxprob"])
def test_batch_equals_one_sentence_at_a_time(offline, name):
    policy = policies(offline)[name]
    batched = as_numpy(vee_infer(CFG, PARAMS, EXITS, BATCH, policy))
    for r, s in enumerate(SENTS):
        alone = as_numpy(vee_infer(CFG, PARAMS, EXITS, make_batch([s]), policy))
        assert_same(alone, {k: v[r:r + 1] for k, v in batched.items() if k != "layers_run"}, [0], [LENGTHS[r]],
                    f"{name}, sentence {r}")
        # batch size 1: the loop stops at the exit, no later layer runs
        assert int(alone["layers_run"]) == alone["exit_layer"][0]


@pytest.mark.parametrize("name", ["vee-kl-p2-ensemble", "entropy"])
def test_unchanged_by_extra_padding(offline, name):
    policy = policies(offline)[name]
    base = as_numpy(vee_infer(CFG, PARAMS, EXITS, BATCH, policy))
    wide = as_numpy(vee_infer(CFG, PARAMS, EXITS, make_batch(SENTS, T=40, L=20, pad_rows=3), policy))
    assert_same(base, wide, list(range(N)), LENGTHS, name)
    assert (wide["exit_layer"][N:] == 0).all()


def test_layers_after_the_exit_are_never_computed():
    """NaN weights in every layer after the exit cannot reach the result: they are not run."""
    poisoned = jax.tree.map(lambda x: x, PARAMS)
    poisoned["layers"] = jax.tree.map(lambda w: w.at[2:].set(jnp.nan), PARAMS["layers"])
    out = as_numpy(vee_infer(CFG, poisoned, EXITS, BATCH, BudgetPolicy(2)))
    assert int(out["layers_run"]) == 2
    assert np.isfinite(out["probs"]).all()
    ref = as_numpy(vee_infer(CFG, PARAMS, EXITS, BATCH, BudgetPolicy(2)))
    np.testing.assert_array_equal(out["probs"], ref["probs"])


def test_mean_pooling_online_equals_offline():
    probs = np.asarray(exit_probs(CFG, PARAMS, EXITS, BATCH, pooling="mean"))
    D = layer_distances("kl", probs[:, :N], BATCH["lengths"][:N])
    policy = VeePolicy("kl", safe_tau(D, 0.5), 1)
    on = as_numpy(vee_infer(CFG, PARAMS, EXITS, BATCH, policy, pooling="mean"))
    off = replay(policy, probs[:, :N], BATCH["lengths"][:N], distances=D)
    assert (off["near_ties"] == 0).all()
    assert_same(on, off, list(range(N)), LENGTHS, "mean pooling")
    first = np.asarray(exit_probs(CFG, PARAMS, EXITS, BATCH))
    assert not np.allclose(first[:, 2], probs[:, 2])  # pooling really differs for multi-subword words


def test_evaluate_policy_end_to_end(tmp_path, offline):
    """evaluation.evaluate_policy: online exits, decoding, timing fields, and a tables.npz from which the
    decisions can be recomputed independently (here: replay on each sentence's own unpadded tables)."""
    from vee_jax.data.features import Encoded
    from vee_jax.data.sentence import Sentence
    from vee_jax.decode import decode_table
    from vee_jax.evaluation import evaluate_policy
    from vee_jax.training import ModelSpec

    labels = ["A", "B", "C"]
    rng = np.random.default_rng(3)
    sentences, encoded = [], []
    short = [s for s in SENTS if len(s[0]) <= 16]  # one bucket shape: one compilation of each step
    for ids, start, end in short * 3:
        n = len(start)
        spans = [(s, s + int(rng.integers(0, n - s)), labels[int(rng.integers(0, 3))]) for s in range(0, n, 3)]
        sentences.append(Sentence(tuple(f"w{j}" for j in range(n)), tuple(spans)))
        encoded.append(Encoded(np.asarray(ids, np.int32), np.asarray(start, np.int32), np.asarray(end, np.int32),
                               tuple((s, e, labels.index(t) + 1) for s, e, t in sentences[-1].spans), n))
    policy = policies(offline)["vee-kl-p1"]
    state = {"params": {"encoder": PARAMS, "exits": EXITS}}
    dump = tmp_path / "tables.npz"
    res = evaluate_policy(state, ModelSpec(CFG, K), sentences, encoded, labels, True, policy, batch_size=4,
                          dump_tables=str(dump))
    assert res["labels"] == ["O", *labels]
    assert len(res["exit_layers"]) == len(res["predictions"]) == len(sentences)
    assert res["offline_disagreements"] == 0
    assert res["ms_per_sentence"] > 0 and res["full_ms_per_sentence"] > 0
    tables = np.load(dump)
    ref_layers = []
    for i, (sent, layer) in enumerate(zip(sentences, res["exit_layers"])):
        t = tables[f"probs_{i}"]
        n = len(sent.words)
        assert t.shape == (CFG.num_layers, n, n, K)
        # The decision again from the dumped tables by the plain-Python vote of test_vote (not
        # the replay that evaluate_policy itself runs for offline_disagreements).
        ref = int(ref_vote(t[:, None], np.array([n]), policy.tau, policy.patience)[0])
        assert layer == ref, i
        ref_layers.append(ref)
        spans = [[s, e, labels[c - 1]] for s, e, c, _ in decode_table(t[ref - 1], n, True)]
        assert res["predictions"][i] == spans
    assert res["avg_exit_layer"] == pytest.approx(np.mean(ref_layers))
    assert res["layer_speedup"] == pytest.approx(CFG.num_layers / np.mean(ref_layers))
    assert len(set(res["exit_layers"])) >= 2


# --- the inference layout (engine.prepare) and traced policy numbers -------------------------
@pytest.mark.parametrize("name", ["vee-kl-p1", "vee-kl-p2-ensemble", "entropy", "budget", "full"])
def test_prepared_layout_equals_stacked(offline, name):
    """Per-layer weights picked by lax.switch give what the stacked weights give."""
    from vee_jax.engine import prepare

    policy = policies(offline)[name]
    model = prepare(CFG, PARAMS, EXITS)
    fast = as_numpy(vee_infer(CFG, model["encoder"], model["exits"], BATCH, policy))
    ref = as_numpy(vee_infer(CFG, PARAMS, EXITS, BATCH, policy))
    assert_same(fast, ref, list(range(N)), LENGTHS, name)
    np.testing.assert_array_equal(fast["votes"], ref["votes"])
    assert int(fast["layers_run"]) == int(ref["layers_run"])


def test_prepared_layout_skips_layers_after_the_exit():
    from vee_jax.engine import prepare

    poisoned = dict(PARAMS)
    poisoned["layers"] = jax.tree.map(lambda w: w.at[2:].set(jnp.nan), PARAMS["layers"])
    model = prepare(CFG, poisoned, EXITS)
    for policy in (BudgetPolicy(2), VeePolicy("kl", tau=1e9, patience=1)):  # both exit at layer 2
        out = as_numpy(vee_infer(CFG, model["encoder"], model["exits"], make_batch(SENTS[:1]), policy))
        assert int(out["layers_run"]) == 2 and np.isfinite(out["probs"]).all(), policy


def test_new_thresholds_do_not_recompile(offline):
    """tau, patience and the budget layer are traced: one compilation per policy kind and shape."""
    from vee_jax.engine import compilations

    batch = make_batch(SENTS, T=32, L=16)  # a shape no other test uses
    vee_infer(CFG, PARAMS, EXITS, batch, VeePolicy("kl", 0.01, 1))
    vee_infer(CFG, PARAMS, EXITS, batch, BudgetPolicy(1))
    before = compilations()
    outs = [as_numpy(vee_infer(CFG, PARAMS, EXITS, batch, p))
            for p in (VeePolicy("kl", 0.5, 2), VeePolicy("kl", 1e-6, 3), BudgetPolicy(3), BudgetPolicy(4))]
    assert compilations() == before
    assert (outs[2]["exit_layer"][:N] == 3).all() and (outs[3]["exit_layer"][:N] == 4).all()
    assert (outs[1]["exit_layer"][:N] >= 4).all()  # patience 3: exit at layer 4 at the earliest


def test_prepared_low_rank_exits_equal_stacked_compressed_exits(offline):
    """prepare(exit_rank=r) (per-exit low-rank pytrees under lax.switch) == the stacked low-rank exits."""
    from vee_jax.engine import prepare
    from vee_jax.exits import compress_exits

    model = prepare(CFG, PARAMS, EXITS, exit_rank=8)
    assert model["exits"][0]["U"].shape == (8, K, 8)
    fast = as_numpy(vee_infer(CFG, model["encoder"], model["exits"], BATCH, FullPolicy()))
    ref = as_numpy(vee_infer(CFG, PARAMS, compress_exits(EXITS, 8), BATCH, FullPolicy()))
    assert_same(fast, ref, list(range(N)), LENGTHS, "low rank, full")
    assert not np.allclose(fast["probs"][:N], as_numpy(vee_infer(CFG, PARAMS, EXITS, BATCH, FullPolicy()))["probs"][:N])


@pytest.mark.parametrize("name", ["vee-kl-p1", "vee-euclidean", "entropy"])
def test_layer_vote_step_loop_equals_vee_infer(offline, name):
    """``layer_vote_step`` driven from the host, layer by layer, makes ``vee_infer``'s decisions."""
    from vee_jax.engine import embed_step, empty_history, infer_inputs, layer_vote_step, prepare, traced_policy

    policy = policies(offline)[name]
    model = prepare(CFG, PARAMS, EXITS)
    static, knobs = traced_policy(policy)
    inputs = infer_inputs(BATCH)
    B = BATCH["input_ids"].shape[0]
    h = embed_step(CFG, model["encoder"], inputs)
    history = empty_history(static, CFG.num_layers, B, L, K)
    exit_layer, votes = np.zeros(B, int), np.zeros(B, int)
    for m in range(CFG.num_layers):
        h, _, history, stop, count = layer_vote_step(CFG, model["encoder"], model["exits"], jnp.int32(m), h, history,
                                                     inputs, knobs, static)
        new = np.asarray(stop) & (exit_layer == 0)
        exit_layer[new], votes[new] = m + 1, np.asarray(count)[new]
    on = as_numpy(vee_infer(CFG, model["encoder"], model["exits"], BATCH, policy))
    np.testing.assert_array_equal(exit_layer[:N], on["exit_layer"][:N])
    np.testing.assert_array_equal(votes[:N], on["votes"][:N])
