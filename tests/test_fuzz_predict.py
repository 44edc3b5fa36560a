"""Fuzzing the whole predict path: random Unicode words and random nested spans.

words -> ``encode_sentences`` (MiniLM's real tokenizer) -> ``collate`` -> the jitted ``eval_step``
(a tiny random encoder) -> ``decode_table`` per exit -> ``span_prf``. For every example: no
crash, every gold entity is counted (in a window's table or reported as lost: in no window,
and in the metrics' ``n_gold``), the metrics equal an independent count of the span lists
(``count_matches``; also against gold that holds some predictions, since a random model
rarely hits gold), predictions lie inside the sentence's words, and the same sentences
collated with extra padding (more rows, subwords and words) give the same result.

Batches (of rows: sentences or windows) always have one of two shapes, so the whole test compiles ``eval_step`` twice.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vee_jax import init_exits, load_backbone
from vee_jax.data.features import collate, encode_sentences
from vee_jax.data.sentence import Sentence
from vee_jax.decode import decode_table
from vee_jax.metrics import span_prf
from vee_jax.training import ModelSpec, eval_step
from vee_jax.windows import merge_tables, sentence_rows

LABELS = ["DNA", "protein"]
B, SHAPE = 4, (64, 64)  # every batch: 4 rows, 64 subwords, 64 words ...
WIDE_B, WIDE = 6, (96, 96)  # ... and the same sentences with extra padding
LIMITS = (16, 40, 64)  # data.max_subwords: small limits window sentences, their entities must be counted

# Words the tokenizer treats oddly: control characters, a lone combining mark, zero-width and
# byte-order marks, whitespace (no subword at all), emoji sequences, CJK, accents, the empty word.
ODD_WORDS = ["\x00", "\x07", "\u0301", "a\u0301", "\u200b", "\ufeff", " ", "\t", "", "🧬", "👩\u200d🔬",
             "中文", "日本語", "Ελληνικά", "NF-κB", "IL-2", "[UNK]", "[SEP]", "##ing", "ﬁ", "Å"]
WORD = st.one_of(st.sampled_from(ODD_WORDS),
                 st.text(st.characters(exclude_categories=("Cs",)), min_size=0, max_size=8))


@st.composite
def sentence(draw) -> Sentence:
    """Up to 40 words (often past the small limits) and spans that never cross (nesting allowed)."""
    n = draw(st.integers(0, 40))
    words = tuple(draw(st.lists(WORD, min_size=n, max_size=n)))
    spans: list[tuple[int, int, str]] = []
    for _ in range(draw(st.integers(0, 8)) if n else 0):
        s = draw(st.integers(0, n - 1))
        e = draw(st.integers(s, min(n - 1, s + draw(st.integers(0, 6)))))
        if all(not (a < s <= b < e or s < a <= e < b) for a, b, _ in spans):
            spans.append((s, e, draw(st.sampled_from(LABELS))))
    return Sentence(words, tuple(spans))


@pytest.fixture(scope="module")
def model(tiny_minilm_vocab_dir):
    """MiniLM's real tokenizer (30522 ids) over a random 2-layer encoder of hidden size 32."""
    cfg, params, tok = load_backbone(tiny_minilm_vocab_dir)
    spec = ModelSpec(cfg, num_labels=len(LABELS) + 1)
    state = {"params": {"encoder": params, "exits": init_exits(jax.random.PRNGKey(3), cfg, spec.num_labels)}}
    return tok, spec, state


def predict(spec, state, encoded, shape, batch_size) -> tuple[list[np.ndarray], list[list[set]]]:
    """Every exit's table of each sentence ``[M, n, n, K]`` (windows merged) and decoded spans ``pred[m][i]``."""
    rows = []
    for k in range(0, len(encoded), batch_size):
        chunk = encoded[k:k + batch_size]
        probs = np.asarray(eval_step(state, collate(chunk, shape, batch_size), spec=spec))
        rows += [probs[:, r, :e.length, :e.length] for r, e in enumerate(chunk)]
    tables = []
    for g in sentence_rows([e.offset for e in encoded]):
        mine = [encoded[r] for r in g]
        n = mine[0].num_words if len(g) > 1 else mine[0].length
        tables.append(merge_tables([rows[r] for r in g], [e.window for e in mine], n))
    pred = [[{(s, e, LABELS[c - 1]) for s, e, c, _ in decode_table(t[m], t.shape[1], nested=True)} for t in tables]
            for m in range(spec.num_exits)]
    return tables, pred


def count_matches(gold, pred) -> dict:
    """tp / n_gold / n_pred in total (key None) and per type, by walking span lists: a predicted
    span is a true positive when the same (start, end, type) is among the sentence's gold spans."""
    out = {k: {"tp": 0, "n_gold": 0, "n_pred": 0} for k in [None, *LABELS]}
    for g, p in zip(gold, pred):
        g = list(dict.fromkeys(g))
        for s, e, t in g:
            for k in (None, t):
                out[k]["n_gold"] += 1
        for s, e, t in p:
            hit = any(x == (s, e, t) for x in g)
            for k in (None, t):
                out[k]["n_pred"] += 1
                out[k]["tp"] += hit
    return out


def assert_metrics(gold, pred) -> None:
    """``span_prf`` against ``count_matches`` and the P/R/F1 formulas."""
    r = span_prf(gold, pred, LABELS)
    ref = count_matches(gold, pred)
    for key in ("tp", "n_gold", "n_pred"):
        assert r[key] == ref[None][key], key
        for t in LABELS:
            assert r["per_type"][t][key] == ref[t][key], (t, key)
    tp, ng, npred = ref[None]["tp"], ref[None]["n_gold"], ref[None]["n_pred"]
    assert r["f1"] == pytest.approx(2 * tp / (ng + npred) if ng + npred else 0.0)
    assert r["precision"] == pytest.approx(tp / npred if npred else 0.0)
    assert r["recall"] == pytest.approx(tp / ng if ng else 0.0)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(sents=st.lists(sentence(), min_size=1, max_size=B), limit=st.sampled_from(LIMITS))
def test_predict_path_counts_every_entity_and_ignores_padding(model, sents, limit):
    tok, spec, state = model
    encoded, report = encode_sentences(sents, tok, LABELS, max_subwords=limit)

    # Nothing lost silently: each gold span is in a window's table or reported as lost, once.
    groups = sentence_rows([e.offset for e in encoded])
    assert len(groups) == len(sents)
    for sent, g in zip(sents, groups):
        rows = [encoded[r] for r in g]
        assert all(e.num_words == len(sent.words) for e in rows)
        assert set().union(*(range(*e.window) for e in rows)) == set(range(len(sent.words)))
        in_table = {(s + e.offset, t + e.offset, LABELS[c - 1]) for e in rows for s, t, c in e.spans}
        lost = {sp for e in rows for sp in e.lost_spans}
        assert in_table | lost == sent.span_set()
        assert not in_table & lost
        assert all(len(e.input_ids) <= limit for e in rows)
    assert report.lost_spans == sum(len(e.lost_spans) for e in encoded)

    probs, pred = predict(spec, state, encoded, SHAPE, B)
    wide_probs, wide_pred = predict(spec, state, encoded, WIDE, WIDE_B)
    for m in range(spec.num_exits):
        assert_metrics([s.spans for s in sents], pred[m])  # every gold entity counted, lost ones as missed
        # A random model rarely hits gold: score it also against gold that holds some predictions.
        assert_metrics([tuple(s.spans) + tuple(sorted(p)[::2]) for s, p in zip(sents, pred[m])], pred[m])
        for sent, p in zip(sents, pred[m]):
            assert all(0 <= s <= e < len(sent.words) for s, e, _ in p)  # only the sentence's words
        # Extra padding changes nothing: same tables on the real cells, same predictions.
        assert wide_pred[m] == pred[m]
        for wide, table in zip(wide_probs, probs):
            np.testing.assert_allclose(wide[m], table[m], atol=1e-5)
