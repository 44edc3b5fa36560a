"""The spaCy component "vee_ner": spans, the flat projection, nlp.pipe against the Predictor,
serialisation, displaCy, and the entry point that registers the factory."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

spacy = pytest.importorskip("spacy", reason="pip install vee_jax[spacy]")

from test_predict import POLICY, _load_bench  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def texts(tiny_workdir):
    detokenize = _load_bench().detokenize
    return [detokenize(r["sentence"]) for r in json.loads((tiny_workdir / "data.json").read_text())]


@pytest.fixture(scope="module")
def nlp(tiny_workdir):
    import vee_jax.spacy_component  # noqa: F401  (registers the factory when the entry point is not installed)

    nlp = spacy.blank("en")
    nlp.add_pipe("vee_ner", config={"workdir": str(tiny_workdir), "policy": POLICY, "batch_size": 8})
    return nlp


def test_entry_point_names_the_factory():
    from vee_jax.spacy_component import make_vee_ner

    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["spacy_factories"]
    module, attr = eps["vee_ner"].split(":")
    import importlib

    assert getattr(importlib.import_module(module), attr) is make_vee_ner
    assert "vee_ner" in spacy.registry.factories.get_all()


def test_installed_entry_point_needs_no_import(tiny_workdir):
    """An installed vee_jax: spaCy finds "vee_ner" by its entry point, the script imports no vee_jax."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    if not any(e.name == "vee_ner" for e in entry_points(group="spacy_factories")):
        pytest.skip("the installed vee_jax metadata predates the entry point (pip install -e . registers it)")
    script = ("import sys, spacy\n"
              "nlp = spacy.blank('en')\n"
              "nlp.add_pipe('vee_ner', config={'workdir': sys.argv[1], 'batch_size': 4})\n"
              "doc = nlp('IL-2 gene expression requires NF-kappa B.')\n"
              "print('vee' in doc.spans, 'vee_jax' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", script, str(tiny_workdir)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["True", "True"]  # the entry point imported vee_jax, the script did not


def test_blank_english_pipeline(nlp, texts):
    doc = nlp(" ".join(texts[:3]))
    group = doc.spans["vee"]
    pred = nlp.get_pipe("vee_ner").predictor.predict_documents([doc.text])[0]
    assert len(group) == len(pred.entities) > 0 and group.attrs["unaligned"] == 0
    assert len(group.attrs["sentence_spans"]) == 3
    for span, e, score, layer, k in zip(group, pred.entities, group.attrs["scores"], group.attrs["exit_layers"],
                                        group.attrs["sentences"]):
        # expand: the span covers the entity's characters, growing to whole spaCy tokens
        assert span.start_char <= e.start and e.end <= span.end_char and span.label_ == e.type
        assert score == e.score and k == e.sentence and layer == pred.sentences[e.sentence].exit_layer
    ents = list(doc.ents)
    assert ents and all(a.end <= b.start for a, b in zip(ents, ents[1:]))  # flat
    assert {(s.start, s.end, s.label_) for s in ents} <= {(s.start, s.end, s.label_) for s in group}
    html = spacy.displacy.render(doc, style="span", options={"spans_key": "vee"})
    assert all(s.label_ in html for s in group)


def test_nested_entities_and_the_projection(nlp):
    from vee_jax.spacy_component import flat_projection

    doc = nlp.make_doc("IL-2 receptor alpha chain gene in human T cells")
    spans = [doc[0:5], doc[0:1], doc[0:2], doc[7:9], doc[6:9]]
    kept = flat_projection(spans, [0.6, 0.9, 0.7, 0.5, 0.5])
    # 0.9 "IL-2" beats the nested spans that hold it; of the tied pair the longer wins
    assert [(s.start, s.end) for s in kept] == [(0, 1), (6, 9)]
    # through the component: nested spans in doc.spans, doc.ents a flat subset of them
    texts = ["IL-2 receptor alpha chain gene expression in human T cells requires NF-kappa B binding sites.",
             "Activation of the CD28 surface receptor provides a major costimulatory signal for T cell activation."]
    docs = list(nlp.pipe(texts))
    nested = [d for d in docs if any(a is not b and a.start <= b.start and b.end <= a.end
                                     for a in d.spans["vee"] for b in d.spans["vee"])]
    assert nested, "the tiny model should predict nested spans on these texts"
    for d in docs:
        assert {(s.start, s.end) for s in d.ents} <= {(s.start, s.end) for s in d.spans["vee"]}
    off = spacy.blank("en")
    off.add_pipe("vee_ner", config={"workdir": nlp.get_pipe("vee_ner").cfg["workdir"], "policy": POLICY,
                                    "set_ents": False, "batch_size": 8})
    assert not off(texts[0]).ents


def test_pipe_equals_predict_documents(nlp, texts):
    docs_text = [" ".join(texts[:3]), texts[3], "\n".join(texts[4:8]), ""]
    got = list(nlp.pipe(docs_text, batch_size=2))
    want = nlp.get_pipe("vee_ner").predictor.predict_documents(docs_text)
    for doc, w in zip(got, want, strict=True):
        g = doc.spans["vee"]
        assert [s[2] for s in g.attrs["sentence_spans"]] == [s.exit_layer for s in w.sentences]
        assert [(a, b, s.label_) for s, (a, b) in zip(g, g.attrs["char_spans"])] == \
               [(e.start, e.end, e.type) for e in w.entities]
        assert g.attrs["scores"] == pytest.approx([e.score for e in w.entities], abs=1e-4)


def test_unaligned_entities_are_counted(nlp, texts, caplog):
    comp = nlp.get_pipe("vee_ner")
    strict = spacy.blank("en")
    strict.add_pipe("vee_ner", config={"workdir": comp.cfg["workdir"], "policy": POLICY, "batch_size": 8,
                                       "alignment_mode": "strict"})
    from spacy.tokens import Doc

    text = " ".join(texts[:3])
    want = comp.predictor.predict_documents([text])[0].entities
    # tokens of 7 characters, whitespace included: most entity ends fall inside a token
    doc = Doc(strict.vocab, words=[text[i:i + 7] for i in range(0, len(text), 7)], spaces=[False] * (-(-len(text) // 7)))
    assert doc.text == text
    with caplog.at_level("WARNING", logger="vee_jax"):
        doc = strict.get_pipe("vee_ner")(doc)
    g = doc.spans["vee"]
    assert len(g) + g.attrs["unaligned"] == len(want) and g.attrs["unaligned"] > 0
    assert strict.get_pipe("vee_ner").unaligned == g.attrs["unaligned"]
    assert re.search(r"vee_ner: \d+ entities do not align", caplog.text)
    with pytest.raises(ValueError, match="alignment_mode must be one of"):
        spacy.blank("en").add_pipe("vee_ner", config={"workdir": "x", "alignment_mode": "fuzzy"})


def test_to_disk_keeps_the_workdir_and_policy(nlp, texts, tmp_path):
    nlp.to_disk(tmp_path / "pipeline")
    cfg = json.loads((tmp_path / "pipeline" / "vee_ner" / "cfg.json").read_text())
    assert cfg["policy"] == POLICY and Path(cfg["workdir"]).is_absolute()
    loaded = spacy.load(tmp_path / "pipeline")
    a, b = nlp(texts[0]), loaded(texts[0])
    assert [(s.start, s.end, s.label_) for s in a.spans["vee"]] == [(s.start, s.end, s.label_) for s in b.spans["vee"]]
    assert loaded.get_pipe("vee_ner").predictor.policy == nlp.get_pipe("vee_ner").predictor.policy
