"""Document context (``data.context_subwords``): neighbours of a sentence's document in its row, the
table over its own words; the readers' document ids; a tiny training run with context."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vee_jax.data.features import collate, document_bounds, encode_sentences
from vee_jax.data.readers import read_conll, read_json
from vee_jax.data.sentence import DataError, Sentence
from vee_jax.weights import load_tokenizer, shipped_model_dir

LABELS = ["DNA", "protein"]
DOC = (  # a three-sentence document; "IL-2" and "NF-kappa" are several subwords each
    Sentence(("IL-2", "gene", "expression", "requires", "NF-kappa", "B", "."), ((0, 1, "DNA"),), doc_id="d1"),
    Sentence(("CD28", "activates", "IL-2", "."), ((0, 0, "protein"), (2, 2, "protein")), doc_id="d1"),
    Sentence(("T", "cells", "respond", "to", "NF-kappa", "B", "."), ((4, 5, "protein"),), doc_id="d1"),
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(shipped_model_dir())


def pieces(tok, words) -> list[list[int]]:
    """Each word's subword ids, tokenised alone (independent of ``encode_sentences``)."""
    return [tok(w, add_special_tokens=False)["input_ids"] for w in words]


def flat(ps) -> list[int]:
    return [t for p in ps for t in p]


def expected_row(tok, left_words, sentence, right_words) -> list[int]:
    return [tok.cls_token_id, *flat(pieces(tok, left_words)), *flat(pieces(tok, sentence.words)),
            *flat(pieces(tok, right_words)), tok.sep_token_id]


def assert_words_in_place(tok, e, sentence):
    """``word_index``/``word_end`` pick the sentence's own words' subwords out of the longer row."""
    got = [e.input_ids[a:b].tolist() for a, b in zip(e.word_index, e.word_end)]
    assert got == pieces(tok, sentence.words)


def test_context_off_gives_the_rows_of_sentences_alone(tok):
    alone, _ = encode_sentences([Sentence(s.words, s.spans) for s in DOC], tok, LABELS)
    for rows in (encode_sentences(DOC, tok, LABELS)[0], encode_sentences(DOC, tok, LABELS, 512, 0)[0]):
        for a, b, s in zip(rows, alone, DOC, strict=True):
            assert a.input_ids.tolist() == b.input_ids.tolist() == expected_row(tok, (), s, ())
            assert a.word_index.tolist() == b.word_index.tolist() and a.word_end.tolist() == b.word_end.tolist()
            assert (a.spans, a.offset, a.context) == (b.spans, b.offset, (0, 0))


def test_row_is_cls_left_sentence_right_sep(tok):
    rows, rep = encode_sentences(DOC, tok, LABELS, 512, 64)
    w = [s.words for s in DOC]
    assert rows[0].input_ids.tolist() == expected_row(tok, (), DOC[0], w[1] + w[2])
    assert rows[1].input_ids.tolist() == expected_row(tok, w[0], DOC[1], w[2])
    assert rows[2].input_ids.tolist() == expected_row(tok, w[0] + w[1], DOC[2], ())
    for e, s in zip(rows, DOC):
        assert_words_in_place(tok, e, s)
    alone, _ = encode_sentences([Sentence(s.words, s.spans) for s in DOC], tok, LABELS)
    assert [e.spans for e in rows] == [e.spans for e in alone]  # gold unchanged
    assert rows[1].context == (len(flat(pieces(tok, w[0]))), len(flat(pieces(tok, w[2]))))
    assert rep.context_rows == 3 and "with document context" in rep.summary()


def test_context_is_cut_at_whole_words_far_side_first(tok):
    per_side = 4
    rows, _ = encode_sentences(DOC, tok, LABELS, 512, per_side)

    def nearest(words, reverse):  # whole words nearest the sentence within per_side subwords
        out, used = [], 0
        for word in (reversed(words) if reverse else words):
            n = len(pieces(tok, [word])[0])
            if used + n > per_side:
                break
            out.append(word)
            used += n
        return tuple(reversed(out)) if reverse else tuple(out)

    left, right = nearest(DOC[0].words, True), nearest(DOC[2].words, False)
    assert left == ("NF-kappa", "B", ".")[-len(left):] and right  # "NF-kappa" alone is 4+ subwords
    assert rows[1].input_ids.tolist() == expected_row(tok, left, DOC[1], right)
    assert sum(rows[1].context) <= 2 * per_side
    assert_words_in_place(tok, rows[1], DOC[1])


def test_no_context_across_documents_or_without_an_id(tok):
    a, b = Sentence(("IL-2", "gene"), doc_id="A"), Sentence(("CD28", "."), doc_id="B")
    lone = Sentence(("T", "cells"))
    sents = [a, b, Sentence(("again",), doc_id="A"), lone, Sentence(("x",))]
    assert document_bounds(sents) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]  # "A" again: another document
    rows, rep = encode_sentences(sents, tok, LABELS, 512, 64)
    assert all(e.context == (0, 0) for e in rows) and rep.context_rows == 0
    for e, s in zip(rows, sents):
        assert e.input_ids.tolist() == expected_row(tok, (), s, ())
    two = [Sentence(("IL-2",), doc_id=7), Sentence(("gene",), doc_id="7"), Sentence(("x",), doc_id="8")]
    assert document_bounds(two) == [(0, 2), (0, 2), (2, 3)]


def test_limit_respected_and_sentence_never_cut_for_context(tok):
    n = len(flat(pieces(tok, DOC[1].words)))  # the middle sentence's subwords
    for limit in (n + 2, n + 3, n + 7, n + 12):
        rows, _ = encode_sentences(DOC, tok, LABELS, limit, 64)  # its neighbours may need windows
        (e,) = [r for r in rows if r.num_words == len(DOC[1])]
        assert len(e.input_ids) <= limit and e.offset == 0 and e.length == len(DOC[1])
        assert_words_in_place(tok, e, DOC[1])
        assert sum(e.context) <= limit - 2 - n
        if limit == n + 2:
            assert e.context == (0, 0)
        if limit == n + 12:  # both sides fit in a share of the room
            assert e.context[0] > 0 and e.context[1] > 0
    # a sentence that needs windows gets no context: its rows are the rows without context
    long = Sentence(tuple(f"word{i}" for i in range(40)), doc_id="d")
    sents = [Sentence(("IL-2",), doc_id="d"), long, Sentence(("gene",), doc_id="d")]
    with_ctx, rep = encode_sentences(sents, tok, LABELS, 32, 64)
    without, _ = encode_sentences(sents, tok, LABELS, 32, 0)
    windows = [e for e in with_ctx if e.num_words == 40]
    assert len(windows) > 1 and all(e.context == (0, 0) for e in windows)
    assert [e.input_ids.tolist() for e in windows] == [e.input_ids.tolist() for e in without if e.num_words == 40]
    assert all(len(e.input_ids) <= 32 for e in with_ctx) and with_ctx[0].context[1] > 0


def test_word_vectors_change_with_context_gold_table_does_not(tiny_bert_dir):
    import jax.numpy as jnp

    from vee_jax.bert import encode_layers, word_vectors
    from vee_jax.weights import load_backbone

    cfg, params, tiny = load_backbone(tiny_bert_dir, jnp.float32)
    doc = [Sentence(("w1", "w2", "w3"), doc_id="d"), Sentence(("w4", "w5", "w6", "w7"), ((1, 2, "DNA"),), doc_id="d"),
           Sentence(("w8", "w9"), doc_id="d")]
    (_, alone, _), _ = encode_sentences(doc, tiny, ["DNA"], 64, 0)
    (_, ctx, _), _ = encode_sentences(doc, tiny, ["DNA"], 64, 8)
    assert ctx.context == (3, 2)
    vec = {}
    for name, e in (("alone", alone), ("ctx", ctx)):
        b = collate([e], (16, 8), 1)
        hidden = encode_layers(cfg, params, jnp.asarray(b["input_ids"]), jnp.asarray(b["attention_mask"]))
        vec[name] = np.asarray(word_vectors(hidden[-1], jnp.asarray(b["word_index"]), jnp.asarray(b["word_mask"])))
        vec[name + "_gold"] = b["gold"]
    assert not np.allclose(vec["alone"][0, :4], vec["ctx"][0, :4], atol=1e-3)
    np.testing.assert_array_equal(vec["alone_gold"], vec["ctx_gold"])


# --- the readers' documents ----------------------------------------------------------------------
def test_conll_docstart_gives_document_ids(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("A O\n\n-DOCSTART- -X- O O\n\nB I-X\n\nC O\n-DOCSTART- -X- O O\nD O\n")
    assert [s.doc_id for s in read_conll(p)] == [None, "doc0", "doc0", "doc1"]


def test_json_doc_ids_from_records_or_the_file_beside(tmp_path):
    recs = [{"sentence": ["a"], "ner": []}, {"sentence": ["b"], "ner": [], "doc_id": 5}, {"sentence": ["c"], "ner": []}]
    p = tmp_path / "train.json"
    p.write_text(json.dumps(recs))
    assert [s.doc_id for s in read_json(p)] == [None, "5", None]
    (tmp_path / "train.doc_ids.txt").write_text("MEDLINE:1\nMEDLINE:1\nMEDLINE:2\n")
    assert [s.doc_id for s in read_json(p)] == ["MEDLINE:1", "5", "MEDLINE:2"]  # a record's own id wins
    (tmp_path / "train.doc_ids.txt").write_text("MEDLINE:1\n")
    with pytest.raises(DataError, match="1 document ids, but train.json has 3 records"):
        read_json(p)
    p.write_text(json.dumps([{"sentence": ["a"], "ner": [], "doc_id": [1]}]))
    with pytest.raises(DataError, match="'doc_id' must be a string or an integer"):
        read_json(p)


# --- end to end ----------------------------------------------------------------------------------
def test_tiny_training_with_context_end_to_end(tmp_path, tiny_bert_dir):
    """train -> the workdir keeps the setting -> eval rows and document prediction use it."""
    from vee_jax import trainer
    from vee_jax.commands.eval import encode
    from vee_jax.config import base_config
    from vee_jax.predict import Predictor
    from vee_jax.trained import TrainedModel

    rng = np.random.default_rng(0)
    recs = []
    for d in range(4):
        for _ in range(3):
            words = [f"w{k}" for k in rng.integers(5, 900, size=5)]
            recs.append({"sentence": words, "ner": [{"index": [1, 2], "type": "DNA"}], "doc_id": f"doc{d}"})
    (tmp_path / "train.json").write_text(json.dumps(recs))
    c = base_config()
    c.data.train = c.data.dev = str(tmp_path / "train.json")
    c.data.context_subwords = 4  # every row within the 16-subword bucket: one shape to compile
    c.model.backbone = str(tiny_bert_dir)
    c.train.batch_size = 4
    c.train.eval_batch_size = 4
    c.train.epochs = 1
    c.train.max_steps = 2
    c.train.checkpoint_every_steps = 0
    wd = tmp_path / "wd"
    trainer.train_and_evaluate(c, wd)

    model = TrainedModel.load(wd, "latest")
    assert model.context_subwords == 4
    rows = encode(model, read_json(tmp_path / "train.json"), "train")
    assert rows[1].context == (4, 4) and rows[0].context == (0, 4) and rows[3].context == (0, 4)
    p = Predictor.from_trained(model)
    assert p.context_subwords == 4
    assert p.encode([["w5", "w6"], ["w7"]])[0].context == (0, 0)  # lone sentences: no context
    assert p.encode([["w5", "w6"], ["w7"]], [0, 0])[0].context == (0, 1)

    class Encoded(Exception):  # stop before the engine (its compilation is tested elsewhere)
        pass

    def spy(sentences, doc_ids=None):
        raise Encoded([e.context for e in Predictor.encode(p, sentences, doc_ids)])

    p.encode = spy
    with pytest.raises(Encoded) as got:
        p.predict_documents(["w5 w6 w7 .\nw8 w9 .", "w10 w11"], sentence_rule="lines")
    assert got.value.args[0] == [(0, 3), (4, 0), (0, 0)]  # neighbours within each document only


def test_context_rows_get_the_word_bucket_of_their_own_words(tok):
    """A context row's table is sized by its words, not by its longer subword row (the table
    costs L^2); without context, and for serving (fit_words=False), one L per T as before."""
    from vee_jax.data.features import WORD_BUCKETS, batch_plan, bucket, row_shape, words_for

    ctx, _ = encode_sentences(DOC, tok, LABELS, 512, 64)
    alone, _ = encode_sentences([Sentence(s.words, s.spans) for s in DOC], tok, LABELS)
    for e, a in zip(ctx, alone):
        T, L = row_shape(e)
        assert L == bucket(e.length, WORD_BUCKETS) < words_for(T)
        assert row_shape(e, fit_words=False) == (T, words_for(T))
        assert row_shape(a) == row_shape(a, fit_words=False) == (row_shape(a)[0], words_for(row_shape(a)[0]))
    for (T, L), idx in batch_plan(ctx, 2, shuffle=False):
        b = collate([ctx[i] for i in idx], (T, L), 2)
        assert b["gold"].shape == (2, L, L) and b["word_mask"].sum() == sum(ctx[i].length for i in idx)
    assert {s for s, _ in batch_plan(ctx, 2, shuffle=False, fit_words=False)} == {
        row_shape(e, fit_words=False) for e in ctx}
