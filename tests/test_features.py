"""Words -> subwords -> gold tables and length buckets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vee_jax.data.features import (SUBWORD_BUCKETS, batch_plan, bucket_shapes, collate, encode_sentences,
                                   iterate_batches, num_shapes)
from vee_jax.data.sentence import Sentence
from vee_jax.decode import decode_table
from vee_jax.weights import load_tokenizer, shipped_model_dir

LABELS = ["DNA", "protein"]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(shipped_model_dir())


def test_alignment_first_subword_and_end(tok):
    s = Sentence(("IL-2", "gene", "expression"), ((0, 1, "DNA"),))
    (e,), rep = encode_sentences([s], tok, LABELS)
    pieces = [tok.convert_ids_to_tokens(e.input_ids[a:b].tolist()) for a, b in zip(e.word_index, e.word_end)]
    assert pieces == [["il", "-", "2"], ["gene"], ["expression"]]
    assert e.input_ids[0] == tok.cls_token_id and e.input_ids[-1] == tok.sep_token_id
    assert e.spans == ((0, 1, 1),) and rep.windowed_sentences == 0


def test_word_without_subwords_keeps_its_position(tok):
    # U+0301 alone (a combining mark) and a control character give no subword: kept as [UNK].
    s = Sentence(("NF-kappa", "\u0301", "\x07", "B"), ((3, 3, "protein"),))
    (e,), rep = encode_sentences([s], tok, LABELS)
    assert e.length == 4 and rep.empty_words == 2
    assert e.input_ids[e.word_index[1]] == tok.unk_token_id
    assert e.spans == ((3, 3, 2),)


def test_too_long_sentence_is_windowed_and_counted(tok):
    words = tuple(f"word{i}" for i in range(40))
    s = Sentence(words, ((0, 0, "DNA"), (5, 30, "protein"), (35, 36, "DNA")))
    rows, rep = encode_sentences([s], tok, LABELS, max_subwords=32)
    assert all(len(e.input_ids) <= 32 for e in rows) and len(rows) > 1
    assert rep.windowed_sentences == 1 and rep.windows == len(rows)
    assert rows[0].offset == 0 and rows[-1].window[1] == 40 and all(e.num_words == 40 for e in rows)
    assert rows[0].spans == ((0, 0, 1),)
    a = next(e for e in rows if e.offset <= 35 and 36 < e.window[1])  # the short entity is in a window
    assert (35 - a.offset, 36 - a.offset, 1) in a.spans
    # the 26-word entity lies in no window of 15 words: counted, never silent
    assert set(rows[0].lost_spans) == {(5, 30, "protein")} and rep.lost_spans == 1
    assert sum(len(e.lost_spans) for e in rows) == 1
    assert "cannot be predicted" in rep.summary("test")


@st.composite
def sentences_with_spans(draw):
    n = draw(st.integers(0, 12))
    words = tuple(draw(st.lists(st.sampled_from(["il-2", "gene", "cell", "B", "the", "x", "alpha-beta", "."]),
                                min_size=n, max_size=n)))
    spans = set()
    for _ in range(draw(st.integers(0, 5)) if n else 0):
        s = draw(st.integers(0, n - 1))
        e = draw(st.integers(s, n - 1))
        # keep the set non-crossing so that nested decoding must return all of it
        if all(not (a < s <= b < e or s < a <= e < b) for a, b, _ in spans) and (s, e) not in {(a, b) for a, b, _ in spans}:
            spans.add((s, e, draw(st.sampled_from(LABELS))))
    return Sentence(words, tuple(spans))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sents=st.lists(sentences_with_spans(), min_size=1, max_size=4))
def test_words_to_table_to_spans_round_trip(tok, sents):
    encoded, _ = encode_sentences(sents, tok, LABELS)
    for idx, batch in iterate_batches(encoded, batch_size=3):
        K = len(LABELS) + 1
        onehot = np.eye(K, dtype=np.float32)[batch["gold"]]  # [B, L, L, K] a perfect table
        for r, i in enumerate(idx):
            got = {(s, e, LABELS[c - 1]) for s, e, c, _ in decode_table(onehot[r], int(batch["lengths"][r]), nested=True)}
            assert got == sents[i].span_set()
            assert batch["word_mask"][r].sum() == len(sents[i].words)


def test_batches_have_fixed_shapes_and_padding_rows_are_empty(tok):
    sents = [Sentence(tuple(["gene"] * n)) for n in (1, 3, 20, 21, 60, 2)]
    encoded, _ = encode_sentences(sents, tok, LABELS)
    shapes = bucket_shapes(encoded)
    assert {T for T, _ in shapes} <= set(SUBWORD_BUCKETS)
    plan = batch_plan(encoded, 4, shuffle=False)
    assert sorted(i for _, idx in plan for i in idx) == list(range(len(sents)))
    for (T, L), idx in plan:
        b = collate([encoded[i] for i in idx], (T, L), 4)
        assert b["input_ids"].shape == (4, T) and b["gold"].shape == (4, L, L)
        assert (b["lengths"][len(idx):] == 0).all() and (b["attention_mask"][len(idx):] == 0).all()


def test_epoch_order_is_deterministic_and_changes_with_epoch(tok):
    sents = [Sentence(tuple(["gene"] * (1 + i % 30))) for i in range(100)]
    encoded, _ = encode_sentences(sents, tok, LABELS)
    a = batch_plan(encoded, 8, shuffle=True, seed=1, epoch=0)
    assert a == batch_plan(encoded, 8, shuffle=True, seed=1, epoch=0)
    assert a != batch_plan(encoded, 8, shuffle=True, seed=1, epoch=1)
    skipped = [idx for idx, _ in iterate_batches(encoded, 8, shuffle=True, seed=1, epoch=0, skip=3)]
    assert skipped == [idx for _, idx in a[3:]]


def test_compilations_over_an_epoch_equal_the_number_of_buckets(tiny_minilm_vocab_dir):
    import jax

    from vee_jax import load_backbone
    from vee_jax.training import ModelSpec, init_state, make_optimizer, train_step

    config, params, tok = load_backbone(tiny_minilm_vocab_dir)
    rng = np.random.default_rng(0)
    sents = [Sentence(tuple(["protein"] * int(n)), ((0, 0, "DNA"),)) for n in rng.integers(1, 70, size=60)]
    encoded, _ = encode_sentences(sents, tok, LABELS)
    spec = ModelSpec(config, num_labels=3)
    opt = make_optimizer(100)
    state = init_state(spec, params, opt)
    before = train_step._cache_size()
    for epoch in range(2):
        for _, batch in iterate_batches(encoded, 8, shuffle=True, epoch=epoch):
            state, m = train_step(state, batch, spec=spec, optimizer=opt)
    jax.block_until_ready(m["loss"])
    assert num_shapes(encoded) >= 3
    assert train_step._cache_size() - before == num_shapes(encoded)


def test_a_span_with_two_types_is_reported(tok):
    s = Sentence(("IL-2", "gene"), ((0, 1, "DNA"), (0, 1, "protein"), (0, 0, "protein")))
    (e,), rep = encode_sentences([s], tok, LABELS)
    assert rep.multi_type_cells == 1 and "two or more types" in rep.summary()
