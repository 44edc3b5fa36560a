"""Overlapping windows for sentences past the subword limit (vee_jax/windows.py) and their wiring.

Sentences of 3 to 5 times the limit: every word covered, no gold entity lost through
encode -> windows -> merge, the first window alone decides what lies before the second, the
farthest-from-edge rule against a brute-force reference; a sentence within the limit is
encoded and predicted exactly as before windows existed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vee_jax.data.features import encode_sentences
from vee_jax.data.sentence import Sentence
from vee_jax.decode import decode_table
from vee_jax.weights import load_tokenizer, shipped_model_dir
from vee_jax.windows import (deciding_window, merge_tables, plan_windows, sentence_exit_layer, sentence_rows,
                             unreachable_spans, window_spans)

LABELS = ["DNA", "protein"]
LIMIT = 32  # max_subwords in these tests: windows of at most 30 subwords
VOCAB = ["il-2", "gene", "cell", "B", "the", "x", "alpha-beta", ".", "NF-kappa", "expression"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(shipped_model_dir())


def subwords(tok, words) -> list[int]:
    enc = tok(list(words), is_split_into_words=True, add_special_tokens=False)
    sizes = [0] * len(words)
    for w in enc.word_ids():
        sizes[w] += 1
    return sizes


def long_sentence(tok, rng, times: float) -> Sentence:
    """Random words of about ``times`` the limit's subwords; short entities (1-3 words), none nested twice."""
    words: list[str] = []
    while sum(subwords(tok, words)) < times * LIMIT:
        words.append(VOCAB[rng.integers(len(VOCAB))])
    spans, s = set(), int(rng.integers(0, 3))
    while s < len(words):
        e = min(s + int(rng.integers(0, 3)), len(words) - 1)
        spans.add((s, e, LABELS[int(rng.integers(2))]))
        if e > s and rng.random() < 0.3:
            spans.add((s, s, LABELS[0]))  # nested inside the longer one
        s = e + 1 + int(rng.integers(1, 4))
    return Sentence(tuple(words), tuple(spans))


def brute_force_owner(windows, i: int, j: int) -> int:
    """The window farthest from an edge holding cell (i, j), ties to the earlier; -1: none."""
    best, best_d = -1, -1
    for k, (a, b) in enumerate(windows):
        if a <= i <= j < b:
            d = min(i - a, b - 1 - j)
            if d > best_d:
                best, best_d = k, d
    return best


def one_hot_gold(e, K: int) -> np.ndarray:
    t = np.zeros((e.length, e.length, K), np.float32)
    t[..., 0] = 1.0
    for s, en, c in e.spans:
        t[s, en] = np.eye(K)[c]
    return t


# --- the pure functions -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_plan_windows_fit_cover_and_overlap_by_about_half(seed):
    rng = np.random.default_rng(seed)
    budget = int(rng.integers(10, 60))
    sizes = [int(x) for x in rng.integers(1, 5, size=int(rng.integers(3, 6) * budget // 2))]
    windows = plan_windows(sizes, budget)
    assert windows[0][0] == 0 and windows[-1][1] == len(sizes)
    for a, b in windows:
        assert b > a and sum(sizes[a:b]) <= budget
    for (a1, b1), (a2, b2) in zip(windows, windows[1:]):
        assert a1 < a2 < b1 < b2  # overlapping, both edges moving on: every word covered
        assert a2 - a1 <= (b1 - a1) // 2 + 1  # the next starts at about the middle


def test_a_sentence_that_fits_is_one_window():
    assert plan_windows([3, 1, 2], 6) == [(0, 3)]
    assert plan_windows([], 6) == [(0, 0)]


@pytest.mark.parametrize("seed", range(10))
def test_deciding_window_is_the_farthest_from_an_edge(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(x) for x in rng.integers(1, 4, size=int(rng.integers(30, 80)))]
    windows = plan_windows(sizes, int(rng.integers(8, 20)))
    n = len(sizes)
    owner = deciding_window(windows, n)
    ref = np.array([[brute_force_owner(windows, i, j) for j in range(n)] for i in range(n)])
    np.testing.assert_array_equal(owner, ref)


@pytest.mark.parametrize("seed", range(5))
def test_merge_copies_each_cell_from_its_deciding_window(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(x) for x in rng.integers(1, 4, size=60)]
    windows = plan_windows(sizes, 20)
    n, K, M = len(sizes), 4, 3
    tables = [rng.random((M, b - a, b - a, K)).astype(np.float32) for a, b in windows]
    merged = merge_tables(tables, windows, n)
    assert merged.shape == (M, n, n, K)
    for i in range(n):
        for j in range(i, n):
            k = brute_force_owner(windows, i, j)
            a = windows[k][0]
            want = tables[k][:, i - a, j - a] if k >= 0 else np.eye(K)[0][None].repeat(M, 0)
            np.testing.assert_array_equal(merged[:, i, j], want)
    # Spans ending before the second window starts: the first window's own entries, unchanged.
    s2 = windows[1][0]
    for i in range(s2):
        np.testing.assert_array_equal(merged[:, i, i:s2], tables[0][:, i, i:s2])


def test_exit_layer_is_the_max_and_rows_group_by_offset():
    assert sentence_exit_layer([2, 5, 3]) == 5
    assert sentence_rows([0, 0, 7, 14, 0, 0, 3]) == [[0], [1, 2, 3], [4], [5, 6]]
    spans = [(0, 1, 1), (4, 6, 2), (2, 9, 1)]
    assert window_spans(spans, (3, 8)) == ((1, 3, 2),)
    assert unreachable_spans(spans, [(0, 5), (3, 8)]) == ((2, 9, 1),)


# --- encoding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("times", [3, 4, 5])
def test_long_sentences_every_word_covered_no_entity_lost(tok, times):
    rng = np.random.default_rng(times)
    sents = [long_sentence(tok, rng, times) for _ in range(3)]
    rows, rep = encode_sentences(sents, tok, LABELS, max_subwords=LIMIT)
    groups = sentence_rows([e.offset for e in rows])
    assert len(groups) == 3 and rep.windowed_sentences == 3 and rep.windows == len(rows)
    assert rep.lost_spans == 0
    for sent, g in zip(sents, groups):
        mine = [rows[r] for r in g]
        assert len(mine) >= times  # about twice the rows of the limit's multiples, at least
        assert all(len(e.input_ids) <= LIMIT and e.num_words == len(sent.words) for e in mine)
        covered = set().union(*(range(*e.window) for e in mine))
        assert covered == set(range(len(sent.words)))
        # each row's words are the sentence's words, whole (a word is never split)
        whole = sum(subwords(tok, sent.words))
        assert all(sum(subwords(tok, sent.words[slice(*e.window)])) == len(e.input_ids) - 2 for e in mine)
        assert whole > LIMIT
        # gold entities survive encode -> windows -> merge of the windows' gold tables
        gold = merge_tables([one_hot_gold(e, 3) for e in mine], [e.window for e in mine], len(sent.words))
        got = {(s, e, LABELS[c - 1]) for s, e, c, _ in decode_table(gold, len(sent.words), nested=True)}
        assert got == sent.span_set()


def test_a_sentence_within_the_limit_encodes_as_before(tok):
    rng = np.random.default_rng(0)
    sents = [long_sentence(tok, rng, 0.5) for _ in range(5)]
    rows, rep = encode_sentences(sents, tok, LABELS, max_subwords=LIMIT)
    assert len(rows) == 5 and rep.windowed_sentences == 0
    for sent, e in zip(sents, rows):  # the one row of before: [CLS] + every word's subwords + [SEP]
        ids = tok(list(sent.words), is_split_into_words=True, add_special_tokens=False)["input_ids"]
        np.testing.assert_array_equal(e.input_ids, [tok.cls_token_id, *ids, tok.sep_token_id])
        sizes = subwords(tok, sent.words)
        np.testing.assert_array_equal(e.word_index, 1 + np.cumsum([0, *sizes[:-1]]))
        np.testing.assert_array_equal(e.word_end, 1 + np.cumsum(sizes))
        assert e.spans == tuple((s, en, LABELS.index(t) + 1) for s, en, t in sent.spans)
        assert (e.offset, e.num_words, e.lost_spans) == (0, len(sent.words), ())


# --- the Predictor and eval.py's paths on a tiny untrained model --------------------------------
POLICY = {"strategy": "vee", "measure": "kl", "tau": 0.05, "patience": 1}


@pytest.fixture(scope="module")
def trained(tiny_workdir):
    from vee_jax.predict import Predictor
    from vee_jax.trained import TrainedModel

    m = TrainedModel.load(tiny_workdir)
    info, spec, state, tokenizer = m.info, m.spec, m.state, m.tokenizer
    pred = Predictor(spec, state["params"], tokenizer, info["labels"], info["nested"], policy=POLICY,
                     max_subwords=LIMIT, batch_size=8)
    words = [r["sentence"] for r in json.loads((tiny_workdir / "data.json").read_text())]
    # 25-32 subwords each: the first four fit LIMIT; three or more glued together are 3-5 limits long
    sents = words[:4] + [words[0] + words[1] + words[2], words[3] + words[4] + words[5] + words[6] + words[7]]
    return pred, spec, state, info, sents


def test_predictor_within_the_limit_is_the_plain_engine(trained):
    pred, *_ = trained
    sents = trained[4][:4]
    rows = pred.encode(sents)
    fits = [i for i, e in enumerate(rows) if e.offset == 0 and e.length == e.num_words]
    assert len(rows) == 4 and len(fits) >= 2
    probs, exits = pred.infer_batch(rows, pred.policy)  # before windows: decode each row as it is
    got = pred.predict_words(sents)
    for r, (e, p) in enumerate(zip(rows, got)):
        want = [(s, t, pred.labels[c - 1]) for s, t, c, _ in decode_table(probs[r], e.length, pred.nested)]
        assert [(s, t, ty) for s, t, ty, _ in p.spans] == want
        assert p.exit_layer == exits[r] and p.windows == 1


def test_predictor_merges_windows_at_their_own_exits(trained):
    pred, *_ = trained
    long = trained[4][4:]
    rows = pred.encode(long)
    groups = sentence_rows([e.offset for e in rows])
    assert len(groups) == 2 and all(len(g) >= 3 for g in groups)
    out = [pred.infer_batch(rows[k:k + 8], pred.policy) for k in range(0, len(rows), 8)]
    probs = [p for ps, _ in out for p in ps[:8]]
    exits = [x for _, xs in out for x in xs[:8]]
    got = pred.predict_words(long)
    for sent, g, p in zip(long, groups, got):
        mine = [rows[r] for r in g]
        table = merge_tables([probs[r][:rows[r].length, :rows[r].length] for r in g], [e.window for e in mine],
                             len(sent))
        want = [(s, t, pred.labels[c - 1]) for s, t, c, _ in decode_table(table, len(sent), pred.nested)]
        assert [(s, t, ty) for s, t, ty, _ in p.spans] == want
        assert p.exit_layer == max(int(exits[r]) for r in g) and p.windows == len(g)
        assert all(0 <= s <= t < len(sent) for s, t, _, _ in p.spans)


def test_eval_paths_merge_windows_as_the_predictor_does(trained):
    from vee_jax.cache import build_tables
    from vee_jax.evaluation import evaluate_policy, predict_exits
    from vee_jax.policies import policy_from_input

    pred, spec, state, info, sents = trained
    labels, nested = info["labels"], info["nested"]
    sentences = [Sentence(tuple(w)) for w in sents]
    rows, _ = encode_sentences(sentences, pred.tokenizer, labels, LIMIT)
    ev = evaluate_policy(state, spec, sentences, rows, labels, nested, policy_from_input(POLICY), batch_size=8)
    got = pred.predict_words(sents)
    assert ev["num_sentences"] == len(sents)
    assert ev["exit_layers"] == [p.exit_layer for p in got]
    assert ev["predictions"] == [[[s, e, t] for s, e, t, _ in p.spans] for p in got]

    full = pred.predict_words(sents, "full")
    per_exit, entropy = predict_exits(state, spec, rows, labels, nested, batch_size=8)
    assert entropy.shape == (spec.num_exits, len(sents))
    assert per_exit[-1] == [{(s, e, t) for s, e, t, _ in p.spans} for p in full]
    tables = build_tables(state, spec, rows, batch_size=8)
    assert [t.shape[1] for t in tables] == [len(w) for w in sents]
    for t, p in zip(tables, per_exit[-1]):
        assert {(s, e, labels[c - 1]) for s, e, c, _ in decode_table(t[-1], t.shape[1], nested)} == p
