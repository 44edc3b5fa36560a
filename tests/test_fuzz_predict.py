"""Fuzzing the whole predict path: random Unicode words and random nested spans.

words -> ``encode_sentences`` (MiniLM's real tokenizer) -> ``collate`` -> the jitted ``eval_step``
(a tiny random encoder) -> ``decode_table`` per exit -> ``span_prf``. For every example: no
crash, every gold entity is counted (in the table or reported as lost past the model limit,
and in the metrics' ``n_gold``), the metrics equal an independent count of the span lists
(``count_matches``; also against gold that holds some predictions, since a random model
rarely hits gold), predictions lie inside the words the model saw, and the same sentences
collated with extra padding (more rows, subwords and words) give the same result.

Batches always have one of two shapes, so the whole test compiles ``eval_step`` twice.
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

LABELS = ["DNA", "protein"]
B, SHAPE = 4, (64, 64)  # every batch: 4 rows, 64 subwords, 64 words ...
WIDE_B, WIDE = 6, (96, 96)  # ... and the same sentences with extra padding
LIMITS = (16, 40, 64)  # data.max_subwords: small limits cut sentences, their entities must be counted

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


def predict(spec, state, encoded, shape, batch_size) -> tuple[np.ndarray, list[list[set]]]:
    """Every exit's tables ``[M, B, L, L, K]`` and decoded spans ``pred[m][i]`` (type names)."""
    batch = collate(encoded, shape, batch_size)
    probs = np.asarray(eval_step(state, batch, spec=spec))
    pred = [[{(s, e, LABELS[c - 1]) for s, e, c, _ in decode_table(probs[m, i], enc.length, nested=True)}
             for i, enc in enumerate(encoded)] for m in range(spec.num_exits)]
    return probs, pred


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

    # Nothing lost silently: each gold span is in the table or reported as lost, once.
    for sent, enc in zip(sents, encoded):
        assert enc.num_words == len(sent.words) and enc.length <= len(sent.words)
        in_table = {(s, e, LABELS[c - 1]) for s, e, c in enc.spans}
        assert in_table | set(enc.lost_spans) == sent.span_set()
        assert not in_table & set(enc.lost_spans)
        assert all(e < enc.length for _, e, _ in in_table) and all(e >= enc.length for _, e, _ in enc.lost_spans)
        assert len(enc.input_ids) <= limit
    assert report.lost_spans == sum(len(e.lost_spans) for e in encoded)

    probs, pred = predict(spec, state, encoded, SHAPE, B)
    wide_probs, wide_pred = predict(spec, state, encoded, WIDE, WIDE_B)
    for m in range(spec.num_exits):
        assert_metrics([s.spans for s in sents], pred[m])  # every gold entity counted, lost ones as missed
        # A random model rarely hits gold: score it also against gold that holds some predictions.
        assert_metrics([tuple(s.spans) + tuple(sorted(p)[::2]) for s, p in zip(sents, pred[m])], pred[m])
        for enc, p in zip(encoded, pred[m]):
            assert all(0 <= s <= e < enc.length for s, e, _ in p)  # only words the model saw
        # Extra padding changes nothing: same tables on the real cells, same predictions.
        assert wide_pred[m] == pred[m]
        for i, enc in enumerate(encoded):
            n = enc.length
            np.testing.assert_allclose(wide_probs[m, i, :n, :n], probs[m, i, :n, :n], atol=1e-5)
