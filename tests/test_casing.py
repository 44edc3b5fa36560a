"""model.casing: word shape ids, the exits' shape embeddings, and every path that runs an exit.

Off: rows, batches, parameters and losses are those of a model without the feature. On: the
engine equals the offline replay, continuous batching equals the engine per sentence, the exit
logits follow a word's case alone, and train.py / eval.py run it end to end. Cased backbones are
refused.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from vee_jax import BertConfig, batched_infer, init_exits, vee_infer
from vee_jax.batched import _groups
from vee_jax.data.features import (NUM_SHAPES, SHAPE_CAPS, SHAPE_DIGIT, SHAPE_LOWER, SHAPE_MIXED, SHAPE_NO_CASE,
                                   SHAPE_SINGLE_UPPER, SHAPE_TITLE, Encoded, case_kept_by, check_casing, collate,
                                   encode_sentences, word_shape)
from vee_jax.data.sentence import Sentence
from vee_jax.engine import prepare
from vee_jax.errors import ConfigError
from vee_jax.exits import all_exit_logits
from vee_jax.offline import exit_probs, layer_distances, layer_signals, replay
from vee_jax.policies import BudgetPolicy, EntropyPolicy, FullPolicy, VeePolicy
from vee_jax.training import ModelSpec, forward_logits, init_state, make_optimizer, train_step

from helpers import logged_losses, random_params, run_script, safe_tau, train_args


# --- the shape ids --------------------------------------------------------------------------------
@pytest.mark.parametrize("word, shape", [
    ("the", SHAPE_LOWER), ("don't", SHAPE_LOWER), ("e-mail", SHAPE_LOWER), ("über", SHAPE_LOWER),
    ("Paris", SHAPE_TITLE), ("Jean-luc", SHAPE_TITLE), ("'Tis", SHAPE_TITLE), ("Über", SHAPE_TITLE),
    ("EU", SHAPE_CAPS), ("NASA", SHAPE_CAPS), ("U.S.", SHAPE_CAPS),
    ("A", SHAPE_SINGLE_UPPER), ("I", SHAPE_SINGLE_UPPER), ("J.", SHAPE_SINGLE_UPPER),
    ("McDonald", SHAPE_MIXED), ("iPhone", SHAPE_MIXED), ("eBay", SHAPE_MIXED), ("Jean-Luc", SHAPE_MIXED),
    ("a", SHAPE_LOWER),
    ("1996", SHAPE_DIGIT), ("3-2", SHAPE_DIGIT), ("A4", SHAPE_DIGIT), ("2nd", SHAPE_DIGIT), ("١٩", SHAPE_DIGIT),
    (",", SHAPE_NO_CASE), ("--", SHAPE_NO_CASE), ("(", SHAPE_NO_CASE), ("北京", SHAPE_NO_CASE), ("", SHAPE_NO_CASE),
])
def test_word_shape_table(word, shape):
    assert word_shape(word) == shape


def test_shape_ids_cover_the_table():
    from vee_jax import exits

    assert exits.NUM_SHAPES == NUM_SHAPES  # the model's table has a row for every id (and padding, 0)
    ids = {SHAPE_LOWER, SHAPE_TITLE, SHAPE_CAPS, SHAPE_SINGLE_UPPER, SHAPE_MIXED, SHAPE_DIGIT, SHAPE_NO_CASE}
    assert ids == set(range(1, NUM_SHAPES))


# --- rows and batches -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from vee_jax.weights import shipped_model_dir

    return AutoTokenizer.from_pretrained(str(shipped_model_dir()))  # MiniLM's: uncased


SENTS = [Sentence(("EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."), ((0, 0, "ORG"),)),
         Sentence(("Peter", "Blackburn", "in", "1996", "--", "McDonald", "'s"), ((0, 1, "PER"),)),
         Sentence(("A", "b",), ())]
LABELS = ["ORG", "PER"]


def test_casing_off_rows_and_batches_unchanged(tokenizer):
    off, rep_off = encode_sentences(SENTS, tokenizer, LABELS)
    on, rep_on = encode_sentences(SENTS, tokenizer, LABELS, casing=True)
    assert rep_off == rep_on
    for sent, a, b in zip(SENTS, off, on):
        assert a.shapes is None
        np.testing.assert_array_equal(b.shapes, [word_shape(w) for w in sent.words])
        for f in ("spans", "num_words", "lost_spans", "empty_words", "offset"):
            assert getattr(a, f) == getattr(b, f)
        for f in ("input_ids", "word_index", "word_end"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))  # the uncased tokenizer: same subwords
    shape = (24, 16)
    b_off, b_on = collate(off, shape, 4), collate(on, shape, 4)
    assert "word_shape" not in b_off
    assert set(b_on) == set(b_off) | {"word_shape"}
    for k in b_off:
        np.testing.assert_array_equal(b_off[k], b_on[k])
    ws = b_on["word_shape"]
    assert ws.dtype == np.int32 and ws.shape == (4, 16)
    np.testing.assert_array_equal(ws[0, :9], [3, 1, 2, 1, 1, 1, 2, 1, 7])
    assert (ws[b_on["word_mask"] == 0] == 0).all() and (ws[b_on["word_mask"] == 1] > 0).all()
    # A padding-only batch of a casing model (warm-up) still has the key; rows without shapes are refused.
    assert "word_shape" in collate([], shape, 2, casing=True)
    with pytest.raises(ValueError, match="casing"):
        collate(off, shape, 4, casing=True)


def test_windows_carry_their_slice(tokenizer):
    words = tuple(w for i in range(30) for w in (f"Word{i}" if i % 3 == 0 else "NATO" if i % 3 == 1 else "and",))
    sent = Sentence(words, ())
    rows, rep = encode_sentences([sent], tokenizer, LABELS, max_subwords=24, casing=True)
    assert rep.windowed_sentences == 1 and len(rows) > 1
    expected = np.asarray([word_shape(w) for w in words])
    for e in rows:
        a, b = e.window
        np.testing.assert_array_equal(e.shapes, expected[a:b])


# --- the model: parameters, losses, logits ------------------------------------------------------
CFG = BertConfig(vocab_size=50, hidden_size=16, num_layers=4, num_heads=2, intermediate_size=32, max_position=64)
K = 4
PARAMS = random_params(CFG)


def cased_exits(seed=3, scale=1.0):
    """Exits with casing whose shape tables are random (a trained table is not zero)."""
    ex = init_exits(jax.random.PRNGKey(seed), CFG, K, casing=True)
    table = ex["shape_emb"]["embedding"]
    ex["shape_emb"] = {"embedding": scale * jax.random.normal(jax.random.PRNGKey(seed + 100), table.shape)}
    return ex


def test_casing_off_params_and_losses_unchanged():
    off = init_exits(jax.random.PRNGKey(0), CFG, K)
    on = init_exits(jax.random.PRNGKey(0), CFG, K, casing=True)
    assert "shape_emb" not in off and set(on) == set(off) | {"shape_emb"}
    assert on["shape_emb"]["embedding"].shape == (CFG.num_layers, NUM_SHAPES, CFG.hidden_size)
    for k in off:  # the same draws: the table takes no key from the exits' stream
        np.testing.assert_array_equal(off[k], on[k])
    assert not np.asarray(on["shape_emb"]["embedding"]).any()  # zero-initialised

    batch = _batch(np.random.default_rng(0))
    opt = make_optimizer(10)
    losses = {}
    for casing in (False, True):
        spec = ModelSpec(CFG, K, casing=casing)
        state = init_state(spec, PARAMS, opt, seed=1)
        assert ("shape_emb" in state["params"]["exits"]) == casing
        losses[casing] = []
        for _ in range(2):
            state, metrics = train_step(state, batch, spec=spec, optimizer=opt)
            losses[casing].append(float(metrics["loss"]))
        if casing:  # the table trains (at the exits' rate: it is under params["exits"])
            assert np.asarray(state["params"]["exits"]["shape_emb"]["embedding"]).any()
    # Step 1: a zero table is the model without casing; then it learns, so step 2 may differ.
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-6)
    # Without casing, a batch's word_shape is ignored: the same logits as without the key.
    spec = ModelSpec(CFG, K)
    params = {"encoder": PARAMS, "exits": init_exits(jax.random.PRNGKey(0), CFG, K)}
    no_key = {k: v for k, v in batch.items() if k != "word_shape"}
    np.testing.assert_array_equal(forward_logits(spec, params, batch), forward_logits(spec, params, no_key))


def test_a_casing_model_needs_the_shapes():
    batch = {k: v for k, v in _batch(np.random.default_rng(0)).items() if k != "word_shape"}
    with pytest.raises(ValueError, match="word_shape"):
        all_exit_logits(CFG, PARAMS, cased_exits(), batch)


def test_logits_follow_the_case_of_a_word(tiny_minilm_vocab_dir):
    from vee_jax import load_backbone

    cfg, params, tok = load_backbone(tiny_minilm_vocab_dir)
    lower = [Sentence(("the", "paris", "office", "opened"), ())]
    upper = [Sentence(("the", "Paris", "office", "opened"), ())]
    a, = encode_sentences(lower, tok, LABELS, casing=True)[0]
    b, = encode_sentences(upper, tok, LABELS, casing=True)[0]
    np.testing.assert_array_equal(a.input_ids, b.input_ids)  # an uncased tokenizer cannot tell them apart
    ba, bb = collate([a], (16, 8), 1), collate([b], (16, 8), 1)
    ex = init_exits(jax.random.PRNGKey(0), cfg, 3, casing=True)
    ex["shape_emb"] = {"embedding": jax.random.normal(jax.random.PRNGKey(1), ex["shape_emb"]["embedding"].shape)}
    la, lb = np.asarray(all_exit_logits(cfg, params, ex, ba)), np.asarray(all_exit_logits(cfg, params, ex, bb))
    n = 4
    diff = np.abs(la - lb)[:, 0, :n, :n].max(-1)  # [M, n, n]
    assert (diff[:, 1, :] > 1e-3).all() and (diff[:, :, 1] > 1e-3).all()  # every cell of word 1 moves ...
    np.testing.assert_array_equal(diff[:, [0, 2, 3]][:, :, [0, 2, 3]], 0)  # ... and no other cell
    off = {k: v for k, v in ex.items() if k != "shape_emb"}
    np.testing.assert_array_equal(all_exit_logits(cfg, params, off, ba), all_exit_logits(cfg, params, off, bb))


# --- the engine, the replay and continuous batching with casing --------------------------------------
LENGTHS = [3, 5, 8, 1, 0, 10, 6, 2]
T, L = 24, 16


def _encoded(rng):
    out = []
    for n in LENGTHS:
        sizes = rng.integers(1, 3, n) if n else np.zeros(0, int)
        starts = 1 + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int) if n else np.zeros(0, int)
        ids = [2] + rng.integers(5, CFG.vocab_size, int(sizes.sum())).tolist() + [3]
        out.append(Encoded(np.asarray(ids, np.int32), np.asarray(starts, np.int32),
                           np.asarray(starts + sizes, np.int32), (), n,
                           shapes=rng.integers(1, NUM_SHAPES, n).astype(np.int32)))
    return out


def _batch(rng, pad_rows=1):
    enc = _encoded(rng)
    b = collate(enc, (T, L), len(enc) + pad_rows)
    b["gold"][:, :3, :3] = rng.integers(0, K, (len(enc) + pad_rows, 3, 3))
    return b


ENCODED = _encoded(np.random.default_rng(1))
BATCH = collate(ENCODED, (T, L), len(ENCODED) + 1)
N = len(ENCODED)
EXITS = cased_exits(scale=2.0)



@pytest.fixture(scope="module")
def offline():
    probs = np.asarray(exit_probs(CFG, PARAMS, EXITS, BATCH))
    lengths = BATCH["lengths"][:N]
    D = layer_distances("kl", probs[:, :N], lengths)
    sig = layer_signals(probs[:, :N], lengths)
    policies = {"vee-kl-p1": VeePolicy("kl", safe_tau(D, 0.4), 1),
                "vee-kl-p2-ensemble": VeePolicy("kl", safe_tau(D, 0.6), 2, ensemble=True),
                "entropy": EntropyPolicy(safe_tau(sig["entropy"], 0.5)),
                "budget": BudgetPolicy(2), "full": FullPolicy()}
    return probs, D, policies


def test_the_shapes_reach_every_exit(offline):
    probs = offline[0]
    plain = np.asarray(exit_probs(CFG, PARAMS, EXITS, {**BATCH, "word_shape": np.ones_like(BATCH["word_shape"])}))
    for m in range(CFG.num_layers):
        assert np.abs(probs[m, :N] - plain[m, :N]).max() > 1e-3, f"exit {m + 1} ignores the shapes"


@pytest.mark.parametrize("name, layout", [("vee-kl-p1", "prepared"), ("vee-kl-p1", "stacked"),
                                          ("vee-kl-p2-ensemble", "prepared"), ("entropy", "prepared"),
                                          ("budget", "stacked"), ("full", "prepared")])
def test_engine_equals_the_offline_replay(offline, name, layout):
    probs, D, policies = offline
    policy = policies[name]
    if layout == "prepared":
        model = prepare(CFG, PARAMS, EXITS)
        enc, ex = model["encoder"], model["exits"]
    else:
        enc, ex = PARAMS, EXITS
    on = jax.device_get(vee_infer(CFG, enc, ex, BATCH, policy))
    off = replay(policy, probs[:, :N], BATCH["lengths"][:N], distances=D if isinstance(policy, VeePolicy) else None)
    assert (off["near_ties"] == 0).all()
    np.testing.assert_array_equal(on["exit_layer"][:N], off["exit_layer"])
    np.testing.assert_array_equal(on["votes"][:N], off["votes"])
    for r, n in enumerate(LENGTHS):
        np.testing.assert_allclose(on["probs"][r, :n, :n], off["probs"][r, :n, :n], atol=2e-6)
    assert on["exit_layer"][N] == 0
    if name == "vee-kl-p1":
        assert len(set(on["exit_layer"][:N].tolist())) >= 2  # not a degenerate all-same decision


@pytest.mark.parametrize("name", ["vee-kl-p1", "vee-kl-p2-ensemble", "full"])
def test_continuous_batching_equals_the_engine_per_sentence(offline, name):
    policy = offline[2][name]
    model = prepare(CFG, PARAMS, EXITS)
    results, stats = batched_infer(CFG, model, ENCODED, policy, batch_size=2)
    shape = {i: s for s, members in _groups(ENCODED).items() for i in members}  # batched_infer's groups
    for i, (e, got) in enumerate(zip(ENCODED, results)):
        alone = jax.device_get(vee_infer(CFG, model["encoder"], model["exits"], collate([e], shape[i], 1), policy))
        assert got["exit_layer"] == alone["exit_layer"][0]
        assert got["votes"] == alone["votes"][0]
        n = e.length
        np.testing.assert_allclose(got["probs"], alone["probs"][0, :n, :n], atol=2e-6)


# --- the cased-backbone refusal ---------------------------------------------------------------------
def test_cased_tokenizers_are_refused(tokenizer):
    from transformers import BertTokenizerFast

    from vee_jax.weights import shipped_model_dir

    assert case_kept_by(tokenizer) is None
    check_casing(True, tokenizer, "minilm")  # uncased: accepted
    cased = BertTokenizerFast(vocab=_vocab(shipped_model_dir() / "vocab.txt"), do_lower_case=False)
    assert case_kept_by(cased) == "A"
    check_casing(False, cased, "bert-base-cased")  # off: nothing to check
    with pytest.raises(ConfigError, match=r"casing=True is for uncased backbones.*'bert-base-cased'.*cased tokenizer"):
        check_casing(True, cased, "bert-base-cased")


def _vocab(path):
    return {w: i for i, w in enumerate(path.read_text(encoding="utf-8").splitlines())}


def test_train_refuses_casing_on_a_cased_backbone(tmp_path, tiny_data, tiny_minilm_vocab_dir):
    import shutil

    from transformers import BertTokenizerFast

    backbone = tmp_path / "cased"
    shutil.copytree(tiny_minilm_vocab_dir, backbone)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (backbone / name).unlink(missing_ok=True)
    BertTokenizerFast(vocab=_vocab(tiny_minilm_vocab_dir / "vocab.txt"), do_lower_case=False).save_pretrained(backbone)

    from vee_jax.config import base_config
    from vee_jax.trainer import train_and_evaluate

    config = base_config()
    config.data.format, config.data.nested = "json", True
    config.data.train, config.data.dev = str(tiny_data / "train.json"), str(tiny_data / "dev.json")
    config.model.backbone, config.model.casing = str(backbone), True
    with pytest.raises(ConfigError, match="cased tokenizer"):
        train_and_evaluate(config, tmp_path / "wd")
    assert not (tmp_path / "wd").exists()  # refused before anything is written


# --- train.py and eval.py -----------------------------------------------------------------------------
def test_train_and_eval_with_casing(tmp_path, tiny_data, tiny_minilm_vocab_dir):
    wd = tmp_path / "wd"
    r = run_script(train_args(wd, tiny_data, tiny_minilm_vocab_dir, "--config.model.casing=True",
                              "--config.train.epochs=1"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done: best dev score" in r.stdout
    assert all(np.isfinite(v) for v in logged_losses(wd).values())
    assert json.loads((wd / "config.json").read_text())["model"]["casing"] is True

    from vee_jax.trained import TrainedModel

    model = TrainedModel.load(wd)
    assert model.spec.casing
    table = np.asarray(model.params["exits"]["shape_emb"]["embedding"])
    assert table.shape == (2, NUM_SHAPES, 32) and table.any()  # trained away from zero
    out = tmp_path / "eval.json"
    r = run_script(["eval.py", "--workdir", str(wd), "--split", "test", "--output", str(out), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert [row["exit"] for row in json.loads(out.read_text())["per_exit"]] == [1, 2]


def test_old_configs_resume_without_the_field():
    import ml_collections

    from vee_jax.config import base_config
    from vee_jax.trained import run_config_changes

    old = base_config().to_dict()
    del old["model"]["casing"]  # a run saved before model.casing existed
    assert run_config_changes(ml_collections.ConfigDict(old), base_config()) == []
    new = base_config()
    new.model.casing = True
    changes = run_config_changes(ml_collections.ConfigDict(old), new)
    assert len(changes) == 1 and "'casing': False" in changes[0] and "'casing': True" in changes[0]
