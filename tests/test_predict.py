"""Predictor: words with offsets, equality with eval.py on the same words, the predict.py command line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vee_jax.words import split_words

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "vee_jax" / "data" / "demo"
POLICY = {"strategy": "vee", "measure": "kl", "tau": 4.0, "patience": 1}  # tiny_workdir: exits at layers 3 and 4


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def assert_same_result(a: dict, b: dict) -> None:
    """Equal results up to float rounding (another batch shape): same entities, scores within 1e-4."""
    key = lambda d: [(e["start"], e["end"], e["type"], e["text"]) for e in d["entities"]]
    assert key(a) == key(b) and a["exit_layer"] == b["exit_layer"]
    assert [e["score"] for e in a["entities"]] == pytest.approx([e["score"] for e in b["entities"]], abs=1e-4)


# --- words and offsets --------------------------------------------------------------------------
@pytest.mark.parametrize("text, words", [
    ("IL-2 gene expression requires NF-kappa B.", ["IL-2", "gene", "expression", "requires", "NF-kappa", "B", "."]),
    ("(IL-2) and (IL)-1, Ca(2+) in T-cells; 1,458 nt of PU.1 in the U.S.",
     ["(", "IL-2", ")", "and", "(IL)-1", ",", "Ca(2+)", "in", "T-cells", ";", "1,458", "nt", "of", "PU.1", "in", "the",
      "U.S."]),
    ("5' end, Burkitt's \"octamer\" (ABSTRACT TRUNCATED AT 250 WORDS)",
     ["5'", "end", ",", "Burkitt's", '"octamer"', "(", "ABSTRACT", "TRUNCATED", "AT", "250", "WORDS", ")"]),
    ("... +/- ),", [".", ".", ".", "+/-", ")", ","]),
    ("", []),
])
def test_ptb_rule_examples(text, words):
    assert [w for w, _, _ in split_words(text, "ptb")] == words


def test_chars_and_whitespace_rules():
    assert split_words("中共 中央", "chars") == [("中", 0, 1), ("共", 1, 2), ("中", 3, 4), ("央", 4, 5)]
    assert [w for w, _, _ in split_words("a-b, c.", "whitespace")] == ["a-b,", "c."]
    with pytest.raises(ValueError, match="unknown word rule"):
        split_words("x", "bert")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aZ9-.,;:()[]{}\"'/+ \t\n中é")), max_size=40),
       st.sampled_from(["ptb", "chars", "whitespace"]))
def test_offsets_round_trip(text, rule):
    words = split_words(text, rule)
    assert all(text[s:e] == w and w and not any(c.isspace() for c in w) for w, s, e in words)
    assert all(words[i][2] <= words[i + 1][1] for i in range(len(words) - 1))  # in order, disjoint
    assert "".join(w for w, _, _ in words) == "".join(text.split())  # every visible character, once


def test_ptb_rule_recovers_genia_words():
    """On the shipped GENIA sample written back as text, the rule finds >= 96% of the words and every
    entity boundary; the BERT pre-tokenizer (splits at every punctuation mark) finds far fewer words."""
    from tokenizers.pre_tokenizers import BertPreTokenizer

    detokenize = _load_bench().detokenize
    recs = [r for split in ("train", "dev", "test") for r in json.loads((DEMO / f"{split}.json").read_text())]
    bert = BertPreTokenizer()
    found = {"ptb": 0, "bert": 0}
    n_words = n_ents = ents_ok = 0
    for r in recs:
        text = detokenize(r["sentence"])
        gold, pos = [], 0
        for w in r["sentence"]:
            pos = text.index(w, pos)
            gold.append((pos, pos + len(w)))
            pos += len(w)
        ptb = {(s, e) for _, s, e in split_words(text, "ptb")}
        found["ptb"] += sum(g in ptb for g in gold)
        found["bert"] += sum(g in {(s, e) for _, (s, e) in bert.pre_tokenize_str(text)} for g in gold)
        n_words += len(gold)
        starts, ends = {s for s, _ in ptb}, {e for _, e in ptb}
        for ent in r["ner"]:
            n_ents += 1
            ents_ok += gold[ent["index"][0]][0] in starts and gold[ent["index"][-1]][1] in ends
    assert found["ptb"] / n_words >= 0.96, found["ptb"] / n_words  # measured 0.970
    assert ents_ok == n_ents
    assert found["bert"] / n_words <= 0.92  # measured 0.900


# --- the Predictor against eval.py ----------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor(tiny_workdir):
    from vee_jax.predict import Predictor

    return Predictor.from_workdir(tiny_workdir, policy=POLICY, batch_size=8)


def test_predictor_equals_eval_on_the_same_words(tiny_workdir, predictor):
    from vee_jax.commands import eval as eval_command
    from vee_jax.commands.common import parse

    data = tiny_workdir / "data.json"
    fv = eval_command.define_flags()
    parse(fv, "eval.py", "", ["--workdir", str(tiny_workdir), "--data", str(data), "--strategy", "vee",
                                     "--measure", "kl", "--tau", str(POLICY["tau"]), "--patience", "1", "--batch-size", "8",
                                     "--quiet"])
    ev, _ = eval_command.evaluate(fv)
    sentences = [r["sentence"] for r in json.loads(data.read_text())]
    got = predictor.predict_words(sentences)
    assert [p.exit_layer for p in got] == ev["exit_layers"]
    assert len(set(ev["exit_layers"])) > 1, "the policy should exit at different layers here"
    assert [[[s, e, t] for s, e, t, _ in p.spans] for p in got] == ev["predictions"]
    assert sum(len(p) for p in ev["predictions"]) > 0

    # Raw text that cuts back into the same words gives the same entities, at character offsets.
    detokenize = _load_bench().detokenize
    texts = [detokenize(w) for w in sentences]
    same = [i for i, t in enumerate(texts) if [w for w, _, _ in split_words(t)] == sentences[i]]
    assert len(same) >= 4
    for i, pred in zip(same, predictor([texts[i] for i in same])):
        assert pred.exit_layer == got[i].exit_layer
        assert [(e.words[0], e.words[1], e.type) for e in pred.entities] == [(s, e, t) for s, e, t, _ in got[i].spans]


def test_continuous_engine_equals_whole_batches(tiny_workdir, predictor):
    """Predictor(engine="continuous") (batched_infer) gives the whole-batch loop's spans and exit layers."""
    from vee_jax.predict import Predictor

    sentences = [r["sentence"] for r in json.loads((tiny_workdir / "data.json").read_text())]
    cont = Predictor.from_workdir(tiny_workdir, policy=POLICY, batch_size=4)
    cont.engine = "continuous"
    loop = Predictor.from_workdir(tiny_workdir, policy=POLICY, batch_size=4)
    loop.engine = "loop"
    want, got = loop.predict_words(sentences), cont.predict_words(sentences)
    assert [p.exit_layer for p in got] == [p.exit_layer for p in want]
    assert len({p.exit_layer for p in got}) > 1  # sentences leave at different layers
    assert [[s[:3] for s in p.spans] for p in got] == [[s[:3] for s in p.spans] for p in want]
    from vee_jax.policies import BudgetPolicy

    assert predictor.continuous(predictor.policy)  # auto: VEE batches continuously,
    assert not predictor.continuous(BudgetPolicy(2))  # a budget in whole batches
    with pytest.raises(ValueError, match="engine must be one of auto, loop, continuous"):
        Predictor(cont.spec, None, cont.tokenizer, cont.labels, True, prepared=cont.model, engine="fast")


def test_entities_have_offsets_into_the_text(predictor):
    texts = ["IL-2 gene expression requires NF-kappa B.", "  Activation of (T cells) by anti-CD3,\te.g. in vitro.  ",
             "", "中 文"]
    preds = predictor(texts)
    assert [p.text for p in preds] == texts
    assert sum(len(p.entities) for p in preds) > 5
    K = len(predictor.labels) + 1
    for p in preds:
        starts, ends = {s for _, s, _ in p.words}, {e for _, _, e in p.words}
        assert 1 <= p.exit_layer <= predictor.num_layers
        for e in p.entities:
            assert p.text[e.start:e.end] == e.text and e.start in starts and e.end in ends
            assert e.type in predictor.labels and 1 / K <= e.score <= 1  # the argmax class's probability
        d = p.to_dict()
        assert set(d) == {"text", "entities", "exit_layer"}
        assert all(set(x) == {"start", "end", "type", "text", "score"} for x in d["entities"])
    with pytest.raises(TypeError, match="list of texts"):
        predictor("one string")


def test_policies_from_dicts_are_checked(predictor):
    from vee_jax.policies import BudgetPolicy, VeePolicy
    from vee_jax.policies import policy_from_input

    assert policy_from_input({"strategy": "budget", "layer": 2}) == BudgetPolicy(layer=2)
    assert policy_from_input(None) == VeePolicy() and policy_from_input("full").name == "full"
    assert policy_from_input(VeePolicy(tau=0.5).to_dict()) == VeePolicy(tau=0.5)
    for bad, msg in [({"strategy": "x"}, "strategy must be one of"), ({"strategy": "vee", "layer": 2}, "no field"),
                     ({"strategy": "vee", "patience": 1.5}, "patience must be int"),
                     ({"strategy": "vee", "tau": float("nan")}, "finite number"),
                     ({"strategy": "vee", "ensemble": 1}, "ensemble must be bool")]:
        with pytest.raises(ValueError, match=msg):
            policy_from_input(bad)
    with pytest.raises(ValueError, match="budget layer 9"):
        predictor.predict_words([["a"]], {"strategy": "budget", "layer": 9})


def test_predict_cli(tiny_workdir, tmp_path, monkeypatch, capsys):
    from vee_jax.commands.predict import main as predict_main

    monkeypatch.setenv("VEE_JAX_XLA_CACHE", "none")
    pol = ["--strategy", "vee", "--tau", str(POLICY["tau"]), "--patience", "1", "--batch-size", "8"]
    lines = ["IL-2 gene expression requires NF-kappa B.", "", "T cells (CD4+) express IL-2."]
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    predict_main(["--workdir", str(tiny_workdir), "--input", str(inp), "--output", str(out), "--quiet", *pol])
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == lines
    for r in rows:
        assert set(r) == {"text", "entities", "exit_layer"}
        assert all(r["text"][e["start"]:e["end"]] == e["text"] for e in r["entities"])
    capsys.readouterr()
    predict_main(["--workdir", str(tiny_workdir), "--quiet", *pol, lines[0]])
    assert_same_result(json.loads(capsys.readouterr().out.splitlines()[0]), rows[0])
    with pytest.raises(SystemExit) as e:
        predict_main(["--workdir", str(tiny_workdir), "--quiet", "--strategy", "budget", "x"])
    assert e.value.code == 2 and "--layer" in capsys.readouterr().err
