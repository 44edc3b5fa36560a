"""Sweeps from cached tables: the cache, sweep F1 == the online engine, Pareto fronts, bootstrap, Table 1.

A random 4-layer model (test_engine's shapes, drawn with numpy so that no JAX op compiles while
setting up) and a tiny WordPiece tokenizer (words w0..w44, one subword each) keep it fast; gold
spans are partly the spans layer 2 decodes, so that F1 really depends on where each sentence exits.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import write_tiny_tokenizer
from vee_jax import BertConfig

CFG = BertConfig(vocab_size=50, hidden_size=16, num_layers=4, num_heads=2, intermediate_size=32, max_position=64)
K = 4
LABELS = ["A", "B", "C"]


def random_model(seed=7):
    """Encoder and exit pytrees of CFG's shapes (stacked layers) with random values."""
    rng = np.random.default_rng(seed)
    d, F, M = CFG.hidden_size, CFG.intermediate_size, CFG.num_layers
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
    lin = lambda i, o: {"kernel": 0.3 * normal(M, i, o), "bias": 0.1 * normal(M, o)}
    ln = lambda n: {"scale": 1 + 0.1 * normal(M, n), "bias": 0.1 * normal(M, n)}
    encoder = {
        "embeddings": {"word": normal(CFG.vocab_size, d), "position": normal(CFG.max_position, d),
                       "token_type": normal(2, d), "ln": {"scale": jnp.ones(d), "bias": jnp.zeros(d)}},
        "layers": {"query": lin(d, d), "key": lin(d, d), "value": lin(d, d), "attn_out": lin(d, d),
                   "attn_ln": ln(d), "ffn_in": lin(d, F), "ffn_out": lin(F, d), "ffn_ln": ln(d)},
    }
    exits = {"U": normal(M, d, K, d) / d, "W_start": normal(M, d, K) / np.sqrt(2 * d),
             "W_end": normal(M, d, K) / np.sqrt(2 * d), "b": jnp.zeros((M, K))}
    return encoder, exits


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Dev and test sentences (1-8 words: one length bucket), their encodings, the model state and the tokenizer."""
    from transformers import BertTokenizerFast

    from vee_jax.cache import build_tables
    from vee_jax.data.features import encode_sentences
    from vee_jax.data.sentence import Sentence
    from vee_jax.decode import decode_table
    from vee_jax.training import ModelSpec

    folder = tmp_path_factory.mktemp("tok")
    write_tiny_tokenizer(folder, CFG.vocab_size)
    tok = BertTokenizerFast.from_pretrained(str(folder))
    spec = ModelSpec(CFG, K)
    encoder, exits = random_model()
    state = {"params": {"encoder": encoder, "exits": exits}}
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("dev", 14), ("test", 16)):
        words = [tuple(f"w{j}" for j in rng.integers(0, 45, rng.integers(1, 9))) for _ in range(n)]
        encoded, _ = encode_sentences([Sentence(w) for w in words], tok, LABELS)
        tables = build_tables(state, spec, encoded, batch_size=4)
        sents = []
        for i, (w, t) in enumerate(zip(words, tables)):
            spans = {(s, e, LABELS[c - 1]) for s, e, c, _ in decode_table(t[1], len(w), True)} if i % 2 else set()
            s = int(rng.integers(0, len(w)))
            spans.add((s, s, LABELS[int(rng.integers(0, 3))]))
            sents.append(Sentence(w, tuple(spans)))
        encoded, _ = encode_sentences(sents, tok, LABELS)
        splits[split] = (sents, encoded, tables)
    return {"splits": splits, "spec": spec, "state": state, "tokenizer": tok, "tok_dir": folder}


def _summary(setup, split="test", **kw):
    from vee_jax.sweeps import summarize

    sents, _, tables = setup["splits"][split]
    return summarize(tables, [s.span_set() for s in sents], LABELS, True, **kw)


# --- sweep == online engine ---------------------------------------------------------------------
def test_sweep_f1_equals_evaluate_policy(setup):
    """The F1, average exit layer and exit layers of sweep rows equal evaluate_policy (the online
    engine, decoding and span_prf) run with the same policy."""
    from vee_jax.evaluation import evaluate_policy
    from vee_jax.policies import policy_from_input
    from vee_jax.sweeps import config_exits, near_ties, sweep_split

    summary = _summary(setup, measures=("kl", "cosine"))
    rows = sweep_split(summary, "test")
    sents, encoded, _ = setup["splits"]["test"]

    def pick(**want):
        """The matching row with the most distinct exit layers, no near-tie, and not F1 of the last layer."""
        cands = [r for r in rows if all(r[k] == v for k, v in want.items()) and r["sentences"] == "all"]
        scored = [(len(set(config_exits(summary, r).tolist())), r) for r in cands
                  if near_ties(summary, r, config_exits(summary, r)) == 0]
        return max(scored, key=lambda x: x[0])[1]

    chosen = [pick(strategy="vee", measure="kl", patience=1, ensemble=False),
              pick(strategy="vee", measure="cosine", patience=2, ensemble=True),
              pick(strategy="maxprob", ensemble=False)]
    for row in chosen:
        policy = policy_from_input(row, strict=False)
        res = evaluate_policy(setup["state"], setup["spec"], sents, encoded, LABELS, True, policy, batch_size=8)
        assert res["offline_disagreements"] == 0
        np.testing.assert_array_equal(res["exit_layers"], config_exits(summary, row), err_msg=str(policy))
        assert (res["tp"], res["n_pred"], res["n_gold"]) == (row["tp"], row["n_pred"], row["n_gold"]), policy
        assert res["f1"] == pytest.approx(row["f1"], abs=1e-12), policy
        assert res["avg_exit_layer"] == pytest.approx(row["avg_exit_layer"]), policy
    assert len(set(config_exits(summary, chosen[0]).tolist())) >= 2  # a real early-exit decision
    f1s = {round(r["f1"], 6) for r in rows if r["strategy"] == "budget" and not r["ensemble"]}
    assert len(f1s) >= 2  # F1 depends on the exit layer: the comparison above can fail


def test_span_counts_match_span_prf_per_layer(setup):
    """The per-(layer, sentence) counts give span_prf's F1 of every exit, with and without the ensemble."""
    from vee_jax.decode import decode_table
    from vee_jax.metrics import span_prf
    from vee_jax.offline import exit_tables

    summary = _summary(setup, measures=("kl",))
    sents, _, tables = setup["splits"]["test"]
    gold = [s.span_set() for s in sents]
    for ens in (False, True):
        for m in range(CFG.num_layers):
            pred = []
            for t, s in zip(tables, sents):
                table = exit_tables(t[:, None], np.array([m + 1]), ens)[0]
                pred.append({(a, b, LABELS[c - 1]) for a, b, c, _ in decode_table(table, len(s.words), True)})
            ref = span_prf(gold, pred)
            assert summary.tp[int(ens), m].sum() == ref["tp"], (ens, m)
            assert summary.n_pred[int(ens), m].sum() == ref["n_pred"], (ens, m)
    assert summary.n_gold.sum() == sum(map(len, gold))


def test_edit_limit_marks_the_subset(setup):
    from vee_jax.sweeps import sweep_split

    summary = _summary(setup, measures=("kl", "edit"), edit_max_words=4)
    lengths = summary.lengths
    np.testing.assert_array_equal(summary.edit_done, lengths <= 4)
    assert 0 < summary.edit_done.sum() < len(lengths)
    assert np.isnan(summary.distances["edit"][0, 1, ~summary.edit_done]).all()
    assert np.isfinite(summary.distances["edit"][0, 1, summary.edit_done]).all()
    rows = sweep_split(summary, "test")
    assert not [r for r in rows if r["measure"] == "edit" and r["sentences"] == "all"]
    sub = {r["n_sentences"] for r in rows if r["sentences"] == "edit subset"}
    assert sub == {int(summary.edit_done.sum())}
    assert {r["measure"] for r in rows if r["sentences"] == "edit subset"} == {"kl", "edit"}


# --- Pareto front, bootstrap, selection on dev ----------------------------------------------------
def test_pareto_front_hand_case():
    from vee_jax.sweeps import pareto_front

    cost = [3.0, 1.0, 2.0, 2.0, 4.0, 1.5, 3.0]
    score = [0.8, 0.5, 0.7, 0.6, 0.75, 0.5, 0.8]
    # (1, .5) kept; (1.5, .5) dominated by it; (2, .7) kept, (2, .6) dominated; (3, .8) kept once;
    # (4, .75) dominated by (3, .8).
    assert pareto_front(cost, score).tolist() == [1, 2, 0]


def test_paired_bootstrap_hand_cases():
    from vee_jax.sweeps import paired_bootstrap

    rng = np.random.default_rng(1)
    g = rng.integers(0, 5, 40)
    tp = np.minimum(g, rng.integers(0, 4, 40))
    npred = tp + rng.integers(0, 3, 40)
    same = paired_bootstrap((tp, npred), (tp.copy(), npred.copy()), g, 200, seed=3)
    assert same["diff"] == 0 and same["mean"] == 0 and same["ci95"] == [0.0, 0.0] and same["p_le_0"] == 1.0
    worse_tp = np.maximum(tp - 1, 0)  # b loses a true positive wherever it can: a is never worse
    better = paired_bootstrap((tp, npred), (worse_tp, npred), g, 200, seed=3)
    f1 = lambda t, p: 2 * t.sum() / (g.sum() + p.sum())
    assert better["diff"] == pytest.approx(f1(tp, npred) - f1(worse_tp, npred))
    assert better["ci95"][0] > 0 and better["p_le_0"] == 0.0
    assert paired_bootstrap((tp, npred), (worse_tp, npred), g, 200, seed=3) == better  # seeded
    flipped = paired_bootstrap((worse_tp, npred), (tp, npred), g, 200, seed=3)
    assert flipped["diff"] == pytest.approx(-better["diff"]) and flipped["p_le_0"] == 1.0


def test_choose_on_dev_and_table1(setup):
    from vee_jax.sweeps import METHODS, choose, sweep_split, table1

    rows = [{"strategy": "entropy", "measure": "", "ensemble": False, "sentences": "all", "tau": t, "f1": f,
             "avg_exit_layer": a} for t, f, a in ((0.1, 0.5, 1.5), (0.2, 0.7, 2.0), (0.3, 0.9, 2.5), (0.4, 0.6, 1.8))]
    ent = METHODS["entropy (BranchyNet)"]
    assert choose(rows, 2.0, ent)["tau"] == 0.2  # the best F1 among avg exit layer <= 2
    rows[3]["f1"] = 0.7
    assert choose(rows, 2.0, ent)["tau"] == 0.4  # equal F1: the faster one
    rows.append({**rows[0], "measure": "kl", "strategy": "vee", "f1": 0.99})
    assert choose(rows, 2.0, ent)["tau"] == 0.4  # another method's rows are not candidates
    assert choose(rows, 3.0, ent)["tau"] == 0.3
    assert choose(rows, 1.0, ent) is None

    dev, test = _summary(setup, "dev", measures=("kl",)), _summary(setup, "test", measures=("kl",))
    dev_rows, test_rows = sweep_split(dev, "dev"), sweep_split(test, "test")
    t1 = table1(dev_rows, test_rows, test, [1.5, 2.5, 3.5], n_resamples=50)
    for e in t1["entries"]:
        if e["config"] is None:
            continue
        d = choose(dev_rows, e["target"], METHODS[e["method"]])
        assert e["dev_f1"] == d["f1"] and e["dev_avg_exit_layer"] <= e["target"] + 1e-9
        same = [r for r in test_rows if r["sentences"] == "all"
                and all(r[k] == v for k, v in e["config"].items()) and r["ensemble"] == d["ensemble"]]
        assert len(same) == 1 and same[0]["f1"] == e["test_f1"]  # the dev choice, reported on test
    assert {b["b"] for b in t1["bootstrap"]} == {"entropy (BranchyNet)", "max-prob (Shallow-Deep)", "budget"}


# --- the cache and eval.py --sweep ------------------------------------------------------------------
def _write_workdir(root: Path, setup) -> Path:
    from vee_jax.config import base_config
    from vee_jax.trained import save_run_info

    data = root / "data"
    data.mkdir(parents=True)
    for split, (sents, _, _) in setup["splits"].items():
        recs = [{"sentence": list(s.words), "ner": [{"index": list(range(a, b + 1)), "type": t} for a, b, t in s.spans]}
                for s in sents]
        (data / f"{split}.json").write_text(json.dumps(recs))
    (data / "train.json").write_text("[]")
    c = base_config()
    c.data.format = "json"
    c.data.nested = True
    for split in ("train", "dev", "test"):
        c.data[split] = str(data / f"{split}.json")
    wd = root / "wd"
    save_run_info(wd, c, {"labels": LABELS, "nested": True, "backbone": str(setup["tok_dir"]),
                          "tokenizer": str(setup["tok_dir"]), "num_layers": CFG.num_layers, "total_steps": 1})
    (wd / "checkpoints" / "latest" / "5").mkdir(parents=True)
    return wd


def test_sweep_cli_caches_and_invalidates(tmp_path, setup, monkeypatch):
    """eval.py --sweep: builds the caches once, reuses them without loading the model, rebuilds a
    split when the checkpoint step or its data file changes; writes the CSV, figures and Table 1."""
    from vee_jax.commands import eval as eval_command
    from vee_jax.commands.common import parse
    from vee_jax.trained import TrainedModel

    wd = _write_workdir(tmp_path, setup)
    loads = []

    def fake_load(cls, workdir, checkpoint):
        step = max(int(p.name) for p in (workdir.path / "checkpoints" / checkpoint).iterdir())
        loads.append(step)
        return TrainedModel(workdir, setup["spec"], setup["state"], setup["tokenizer"], {"step": step}, checkpoint)

    monkeypatch.setattr(TrainedModel, "load", classmethod(fake_load))

    fv = eval_command.define_flags()
    parse(fv, "eval.py", "", ["--workdir", str(wd), "--checkpoint", "latest", "--sweep", "--quiet",
                                           "--edit-max-words", "4", "--bootstrap", "50", "--batch-size", "4"])

    def run_sweep():
        return eval_command.evaluate(fv)[0]

    res = run_sweep()
    assert loads == [5]  # one model load for both splits
    assert [(r["tables_reused"], r["summary_reused"]) for r in res["splits"]] == [(False, False)] * 2
    out = wd / "sweeps"
    for f in ("sweep.csv", "table1.json", "table1.md", "summary.json", "pareto_test.png", "ensemble_dev.png",
              "measures_test.png"):
        assert (out / f).stat().st_size > 0, f
    csv1 = (out / "sweep.csv").read_text()
    header = csv1.splitlines()[0].split(",")
    assert header[:11] == ["split", "strategy", "measure", "tau", "patience", "layer", "ensemble", "avg_exit_layer",
                           "precision", "recall", "f1"]
    assert "| VEE-KL |" in (out / "table1.md").read_text()
    # The sweep's test tables are the build_tables tables of the fixture.
    tpath = wd / "cache" / Path(res["splits"][1]["tables"]).name
    with np.load(tpath) as z:
        np.testing.assert_array_equal(z["probs_3"], setup["splits"]["test"][2][3])

    def refuse(*a, **k):
        raise AssertionError("the model must not be loaded when the caches are valid")

    monkeypatch.setattr(TrainedModel, "load", classmethod(refuse))
    res2 = run_sweep()
    assert [r["summary_reused"] for r in res2["splits"]] == [True, True]
    assert (out / "sweep.csv").read_text() == csv1

    # A new checkpoint step: both splits rebuilt, the old step's caches removed.
    monkeypatch.setattr(TrainedModel, "load", classmethod(fake_load))
    (wd / "checkpoints" / "latest" / "9").mkdir()
    res3 = run_sweep()
    assert loads == [5, 9]
    assert [(r["tables_reused"], r["summary_reused"]) for r in res3["splits"]] == [(False, False)] * 2
    names = sorted(p.name for p in (wd / "cache").iterdir())
    assert len(names) == 4 and all("-latest-9-" in n for n in names), names

    # Changing only the test data file rebuilds test and reuses dev.
    f = wd.parent / "data" / "test.json"
    f.write_text(f.read_text() + "\n")
    res4 = run_sweep()
    assert [r["summary_reused"] for r in res4["splits"]] == [True, False]
    assert res4["splits"][1]["tables_reused"] is False
