"""Documents through the Predictor: offsets into the document, one-sentence documents equal to
``Predictor.__call__``, sentences batched across documents, the predict.py documents input."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_predict import POLICY, _load_bench, assert_same_result
from vee_jax.documents import plan_documents

SEPARATORS = [" ", "  ", "\n", "\n\n", " \n ", "\t"]


@pytest.fixture(scope="module")
def predictor(tiny_workdir):
    from vee_jax.predict import Predictor

    return Predictor.from_workdir(tiny_workdir, policy=POLICY, batch_size=8)


@pytest.fixture(scope="module")
def texts(tiny_workdir):
    """The tiny workdir's 8 sentences as text (each one sentence under every rule but ``lines`` tests)."""
    detokenize = _load_bench().detokenize
    return [detokenize(r["sentence"]) for r in json.loads((tiny_workdir / "data.json").read_text())]


# --- the plan (no model) ------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("aZ9-.,;:()\"'!? \t\n中。é")), max_size=60), max_size=4),
       st.sampled_from(["pysbd", "lines", "lines+pysbd", "zh", "none"]), st.sampled_from(["ptb", "chars", "whitespace"]))
def test_plan_offsets_round_trip(docs, sentence_rule, word_rule):
    plan = plan_documents(docs, sentence_rule, word_rule)
    assert [sp.doc for sp in plan] == sorted(sp.doc for sp in plan)
    for sp in plan:
        text = docs[sp.doc]
        assert sp.words and text[sp.start:sp.end].strip() == text[sp.start:sp.end]
        for w, a, b in sp.words:
            assert text[a:b] == w and sp.start <= a < b <= sp.end
    for d, text in enumerate(docs):  # every non-space character is in one word of one sentence
        covered = sorted(i for sp in plan if sp.doc == d for _, a, b in sp.words for i in range(a, b))
        assert covered == [i for i, c in enumerate(text) if not c.isspace()]


def test_plan_refuses_unknown_rules_and_non_strings():
    with pytest.raises(ValueError, match="unknown sentence rule"):
        plan_documents(["a"], "spacy", "ptb")
    with pytest.raises(TypeError, match="document 1 is a int"):
        plan_documents(["a", 3], "none", "ptb")


# --- through the model --------------------------------------------------------------------------
def test_one_sentence_document_is_todays_result(predictor, texts):
    for text in texts[:4]:
        want = predictor([text])[0]
        for rule in ("none", "pysbd"):
            (doc,) = predictor.predict_documents([text], sentence_rule=rule)
            assert len(doc.sentences) == 1, (rule, text)
            assert doc.sentences[0].exit_layer == want.exit_layer
            # exactly: the same words, the same batch shape
            assert [(e.start, e.end, e.type, e.text, e.score, e.words) for e in doc.entities] == \
                   [(e.start, e.end, e.type, e.text, e.score, e.words) for e in want.entities]
            assert all(e.sentence == 0 for e in doc.entities)
    # An empty document has no sentence and no entity; a plain string is refused.
    assert predictor.predict_documents(["", "  \n"])[0].to_dict() == {"text": "", "entities": [], "sentences": []}
    with pytest.raises(TypeError, match="list of documents"):
        predictor.predict_documents("one string")
    with pytest.raises(ValueError, match="batch_size must be 1..8"):
        predictor.predict_documents(["a"], batch_size=9)


def _check_document(doc, sentence_texts, preds) -> None:
    """``doc``'s sentences are ``sentence_texts`` and their results those of ``preds`` (one per sentence),
    shifted to document offsets."""
    assert [doc.text[s.start:s.end] for s in doc.sentences] == sentence_texts
    for k, (s, want) in enumerate(zip(doc.sentences, preds)):
        got = [e for e in doc.entities if e.sentence == k]
        assert all(s.start <= e.start < e.end <= s.end and doc.text[e.start:e.end] == e.text for e in got)
        shifted = {"exit_layer": s.exit_layer,
                   "entities": [dict(e.to_dict(), start=e.start - s.start, end=e.end - s.start) for e in got]}
        assert_same_result(shifted, want.to_dict())


def test_documents_batch_sentences_across_documents(predictor, texts, monkeypatch):
    # 3 documents of 3, 4 and 1 sentences: 8 sentences, one engine call of 8 rows (whole batches)
    docs = [" ".join(texts[:3]), "\n".join(texts[3:7]) + "\n", "  " + texts[7]]
    calls, infer = [], predictor.infer_batch
    monkeypatch.setattr(predictor, "engine", "loop")
    monkeypatch.setattr(predictor, "infer_batch", lambda rows, policy: calls.append(len(rows)) or infer(rows, policy))
    got = predictor.predict_documents(docs, sentence_rule="lines+pysbd")
    assert calls == [8]
    want = predictor(texts)
    _check_document(got[0], texts[:3], want[:3])
    _check_document(got[1], texts[3:7], want[3:7])
    _check_document(got[2], texts[7:], want[7:])
    d = got[1].to_dict()
    assert set(d) == {"text", "entities", "sentences"} and len(d["sentences"]) == 4
    assert all(set(s) == {"start", "end", "exit_layer", "words"} for s in d["sentences"])
    assert all(set(e) == {"start", "end", "type", "text", "score", "sentence"} for e in d["entities"])
    # At batch 1 the same results (other batch shapes: floats within rounding).
    for a, b in zip(got, predictor.predict_documents(docs, sentence_rule="lines+pysbd", batch_size=1)):
        assert [s.exit_layer for s in a.sentences] == [s.exit_layer for s in b.sentences]
        assert [(e.start, e.end, e.type) for e in a.entities] == [(e.start, e.end, e.type) for e in b.entities]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_document_offsets_round_trip(predictor, texts, data):
    picks = data.draw(st.lists(st.sampled_from(range(len(texts))), min_size=1, max_size=5), label="sentences")
    seps = data.draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(picks) + 1, max_size=len(picks) + 1))
    doc = seps[0] + "".join(texts[i] + s for i, s in zip(picks, seps[1:]))
    rule = data.draw(st.sampled_from(["pysbd", "lines+pysbd", "none"]))
    (got,) = predictor.predict_documents([doc], sentence_rule=rule)
    assert [s.start for s in got.sentences] == sorted(s.start for s in got.sentences)
    for e in got.entities:
        s = got.sentences[e.sentence]
        assert doc[e.start:e.end] == e.text and s.start <= e.start < e.end <= s.end
    if rule != "none":  # every sentence of the fixture is one sentence, in any company
        _check_document(got, [texts[i] for i in picks], predictor([texts[i] for i in picks]))


def test_sentence_rule_follows_the_workdir(tiny_workdir, predictor):
    from vee_jax.predict import Predictor
    from vee_jax.trained import TrainedModel

    assert predictor.sentence_rule == "pysbd"  # data.format json
    model = TrainedModel.load(tiny_workdir)
    model.config.data.format = "conll"  # the rule follows the workdir's data format
    assert Predictor.from_trained(model).sentence_rule == "lines"
    with pytest.raises(ValueError, match="unknown sentence rule"):
        predictor.sentence_rule = "spacy"


# --- predict.py ----------------------------------------------------------------------------------
def test_predict_cli_documents(tiny_workdir, predictor, texts, tmp_path, monkeypatch, capsys):
    from vee_jax.commands.predict import main as predict_main

    monkeypatch.setenv("VEE_JAX_XLA_CACHE", "none")
    pol = ["--workdir", str(tiny_workdir), "--quiet", "--strategy", "vee", "--tau", str(POLICY["tau"]),
           "--patience", "1", "--batch-size", "8"]
    docs = [" ".join(texts[:3]), texts[3] + "\n\n" + texts[4]]
    want = [d.to_dict() for d in predictor.predict_documents(docs)]

    def same(rows, want):
        for r, w in zip(rows, want, strict=True):
            assert [s["exit_layer"] for s in r["sentences"]] == [s["exit_layer"] for s in w["sentences"]]
            assert [(e["start"], e["end"], e["type"], e["sentence"]) for e in r["entities"]] == \
                   [(e["start"], e["end"], e["type"], e["sentence"]) for e in w["entities"]]

    # JSONL in (other fields copied), JSONL out
    inp = tmp_path / "docs.jsonl"
    inp.write_text("".join(json.dumps({"id": f"d{i}", "text": d}) + "\n" for i, d in enumerate(docs)) + "\n")
    out = tmp_path / "out.jsonl"
    predict_main([*pol, "--input-format", "jsonl", "--input", str(inp), "--output", str(out)])
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["d0", "d1"] and [r["text"] for r in rows] == docs
    assert [len(r["sentences"]) for r in rows] == [3, 2]
    same(rows, want)
    # a file is one document: its name instead of its text
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    for f, d in zip(files, docs):
        f.write_text(d, encoding="utf-8")
    predict_main([*pol, "--input-format", "file", "--output", str(out), *map(str, files)])
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["file"] for r in rows] == list(map(str, files)) and "text" not in rows[0]
    same(rows, want)
    # one document a line with --sentences; arguments are documents too
    (tmp_path / "lines.txt").write_text(docs[0] + "\n")
    predict_main([*pol, "--sentences", "pysbd", "--input", str(tmp_path / "lines.txt"), "--output", str(out)])
    same([json.loads(l) for l in out.read_text().splitlines()], want[:1])
    capsys.readouterr()
    predict_main([*pol, "--sentences", "lines", docs[1]])
    same([json.loads(l) for l in capsys.readouterr().out.splitlines()], want[1:])
    # a bad JSONL line: one line of error, exit 2
    inp.write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(SystemExit) as e:
        predict_main([*pol, "--input-format", "jsonl", "--input", str(inp)])
    assert e.value.code == 2 and 'docs.jsonl:2: expected an object with a "text" string' in capsys.readouterr().err


# --- the service: POST /ner/documents --------------------------------------------------------------
@pytest.fixture(scope="module")
def client(predictor):
    from fastapi.testclient import TestClient

    from vee_jax.serving import Limits, create_app

    app = create_app(predictor, limits=Limits(max_texts=4, max_chars=400, max_document_chars=3000, max_sentences=12,
                                              max_words=400, max_body_bytes=1 << 16), max_wait_ms=2,
                     warmup_subwords=0)  # readiness is tested in test_serve.py
    with TestClient(app) as c:
        yield c


def test_service_answers_documents(client, predictor, texts):
    docs = [" ".join(texts[:3]), "", "\n".join(texts[3:5])]
    r = client.post("/ner/documents", json={"documents": docs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["policy"] == predictor.policy.to_dict() and body["level"] == 0
    want = predictor.predict_documents(docs)
    for got, w, doc in zip(body["results"], want, docs, strict=True):
        assert [(s["start"], s["end"], s["exit_layer"]) for s in got["sentences"]] == \
               [(s.start, s.end, s.exit_layer) for s in w.sentences]
        assert [(e["start"], e["end"], e["type"], e["sentence"]) for e in got["entities"]] == \
               [(e.start, e.end, e.type, e.sentence) for e in w.entities]
        assert all(doc[e["start"]:e["end"]] == e["text"] for e in got["entities"])
    assert [len(x["sentences"]) for x in body["results"]] == [3, 0, 2]
    # More sentences than a batch (8): two jobs, one policy; the request's own policy and rule.
    doc = " ".join(texts + texts[:2])
    r = client.post("/ner/documents", json={"documents": [doc], "policy": {"strategy": "budget", "layer": 2},
                                            "sentences": "pysbd"})
    assert r.status_code == 200, r.text
    assert r.json()["level"] is None and r.json()["policy"]["strategy"] == "budget"
    assert [s["exit_layer"] for s in r.json()["results"][0]["sentences"]] == [2] * 10
    r = client.post("/ner/documents", json={"documents": [doc]}).json()
    assert r["level"] == 0 and len(r["results"][0]["sentences"]) == 10
    # the old request form still works in the same app
    r = client.post("/ner", json={"texts": texts[:2]})
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    health = client.get("/health").json()
    assert health["sentence_rule"] == "pysbd" and health["limits"]["max_sentences"] == 12
    schema = client.get("/openapi.json").json()
    assert "/ner/documents" in schema["paths"] and "DocumentsRequest" in schema["components"]["schemas"]


def test_service_document_limits(client, texts):
    many = " ".join(texts + texts[:5])  # 13 sentences
    cases = [
        ({"documents": ["a" * 1600, "b" * 1401]}, 413, "3001 characters in all, at most 3000 per request "
                                                       "(max_document_chars)"),
        ({"documents": [many]}, 413, "13 sentences in all, at most 12 per request (max_sentences)"),
        ({"documents": [" ".join(["w"] * 401)]}, 413, "401 words in all, at most 400 per request (max_words)"),
        ({"documents": []}, 422, "documents: List should have at least 1 item"),
        ({"documents": ["a" * 3001]}, 413, "documents.0: 3001 characters, at most 3000"),  # the schema's maxLength
        ({"documents": ["a"], "sentences": "spacy"}, 422, "sentences: Input should be 'pysbd', 'lines', "),
        ({"documents": "a"}, 422, "documents: Input should be a valid list"),
        ({"documents": ["a"], "texts": ["a"]}, 422, "texts: Extra inputs are not permitted"),
        ({"documents": ["a"], "policy": {"strategy": "budget", "layer": 5}}, 422,
         "policy.budget.layer: Input should be less than or equal to 4"),
    ]
    for body, code, message in cases:
        r = client.post("/ner/documents", json=body)
        assert r.status_code == code and message in r.json()["detail"], (body, r.text)


def test_service_runs_windows(tiny_workdir, texts):
    """A sentence past the subword limit runs as windows through the micro-batcher: POST /ner and
    POST /ner/documents answer as the Predictor does, no word cut."""
    from fastapi.testclient import TestClient

    from vee_jax.predict import Predictor
    from vee_jax.serving import Limits, create_app

    small = Predictor.from_workdir(tiny_workdir, policy=POLICY, batch_size=8)
    small.max_subwords = 32  # the fixture's sentences are 25-32 subwords: three glued are ~3 limits
    long_text = " ".join(t.rstrip(" .") for t in texts[:3]) + " ."
    want = small([long_text])[0]
    assert want.to_dict().get("windows", 1) > 1
    app = create_app(small, limits=Limits(max_texts=4, max_chars=2000), max_wait_ms=2, warmup_subwords=0)
    with TestClient(app) as c:
        r = c.post("/ner", json={"texts": [long_text, texts[3]]})
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        assert got[0]["exit_layer"] == want.exit_layer and got[0]["windows"] == want.to_dict()["windows"]
        assert [(e["start"], e["end"], e["type"]) for e in got[0]["entities"]] == \
               [(e.start, e.end, e.type) for e in want.entities]
        doc = long_text + " " + texts[3]
        want_doc = small.predict_documents([doc], sentence_rule="pysbd")[0]
        r = c.post("/ner/documents", json={"documents": [doc], "sentences": "pysbd"})
        assert r.status_code == 200, r.text
        got_doc = r.json()["results"][0]
        assert [(s["start"], s["end"], s["exit_layer"], s.get("windows", 1)) for s in got_doc["sentences"]] == \
               [(s.start, s.end, s.exit_layer, s.windows) for s in want_doc.sentences]
        assert max(s.windows for s in want_doc.sentences) > 1
        r = c.post("/ner", json={"texts": [long_text] * 4})  # 4 texts of 3+ windows: past a batch of 8 rows
        assert r.status_code == 413 and "rows" in r.json()["detail"]


def test_a_row_alone_pads_to_the_finer_buckets(tiny_workdir):
    """A batch of one row pads its subwords to ``FINE_SUBWORD_BUCKETS`` (40 between 32 and 48), a
    batch of two to ``SUBWORD_BUCKETS``; ``shapes`` (what ``warm_up`` compiles) holds both, so a
    warmed-up Predictor (whole batches: ``warm_up`` compiles ``vee_infer``'s programs) compiles
    nothing on either, and the two paddings find the same entities."""
    from vee_jax.data.features import FINE_SUBWORD_BUCKETS, SUBWORD_BUCKETS
    from vee_jax.predict import Predictor

    assert set(FINE_SUBWORD_BUCKETS) > set(SUBWORD_BUCKETS) and 40 not in SUBWORD_BUCKETS
    p = Predictor.from_workdir(tiny_workdir, policy=POLICY, batch_size=2)
    p.engine = "loop"
    shapes = p.shapes(48)
    assert [(B, T) for B, T, _ in shapes] == [(1, 16), (1, 24), (1, 32), (1, 40), (1, 48),
                                              (2, 16), (2, 24), (2, 32), (2, 48)]
    assert (1, 40, 40) in shapes and (2, 48, 48) in shapes  # L = words_for(T): room for T - 2 words
    p.warm_up([p.policy], max_subwords=48)
    before = p.compilations
    text = " ".join(["cells"] * 36)  # 38 subwords: bucket 40 alone, 48 in a pair
    alone, pair = p([text]), p([text, text])
    assert p.compilations == before
    a, b = [e.to_dict() for e in alone[0].entities], [e.to_dict() for e in pair[1].entities]
    assert a and [{**e, "score": 0} for e in a] == [{**e, "score": 0} for e in b]
    assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) < 1e-5  # float rounding of other shapes
