"""A workdir written before the model became Flax modules still loads and gives the same numbers.

``tests/fixtures/v1`` was written by ``tests/fixtures/record_v1.py`` with the format-1 code
(pure functions over explicit pytrees): a random 2-layer backbone, an untrained workdir and
the outputs of that code on one batch. Today's code must read the workdir as it is and
reproduce every hidden state, every exit's logits and ``vee_infer``'s decisions within 1e-6,
and ``train_step``'s loss on the recorded logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v1"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fixture_v1(tmp_path_factory):
    """The fixture copied to a scratch folder (paths inside are relative to it), loaded."""
    from vee_jax.trained import TrainedModel

    root = tmp_path_factory.mktemp("v1")
    for name in ("backbone", "workdir"):
        shutil.copytree(FIXTURE / name, root / name)
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        m = TrainedModel.load("workdir")
        spec, state = m.spec, m.state
    finally:
        mp.undo()
    ref = dict(np.load(FIXTURE / "reference.npz"))
    batch = {k[len("batch_"):]: v for k, v in ref.items() if k.startswith("batch_")}
    return spec, state, batch, ref


def test_hidden_states_and_exit_logits_equal_the_recorded_ones(fixture_v1):
    from vee_jax import all_exit_logits, encode_layers

    spec, state, batch, ref = fixture_v1
    enc, ex = state["params"]["encoder"], state["params"]["exits"]
    hidden = encode_layers(spec.bert, enc, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    np.testing.assert_allclose(np.asarray(hidden), ref["hidden"], atol=1e-6, rtol=0)
    logits = all_exit_logits(spec.bert, enc, ex, batch)
    np.testing.assert_allclose(np.asarray(logits), ref["logits"], atol=1e-6 * max(1.0, np.abs(ref["logits"]).max()),
                               rtol=0)


def test_engine_decisions_equal_the_recorded_ones(fixture_v1):
    from vee_jax import vee_infer
    from vee_jax.engine import prepare
    from vee_jax.policies import VeePolicy

    spec, state, batch, ref = fixture_v1
    model = prepare(spec.bert, state["params"]["encoder"], state["params"]["exits"])
    out = jax.device_get(vee_infer(spec.bert, model["encoder"], model["exits"], batch, VeePolicy("kl", 0.05, 1)))
    np.testing.assert_array_equal(out["exit_layer"], ref["vee_exit_layer"])
    np.testing.assert_array_equal(out["votes"], ref["vee_votes"])
    np.testing.assert_allclose(out["probs"], ref["vee_probs"], atol=1e-6, rtol=0)


def test_train_step_loss_from_the_recorded_logits(fixture_v1):
    """train_step's first loss, dropout off, against Eq. 4-5 in numpy over the recorded logits.

    The recorded loss with dropout (``train_loss``) is not compared: dropout now draws from
    Flax's ``"dropout"`` rng stream, so the masks (not their distribution) changed."""
    import dataclasses

    from test_train_step_loss import reference_loss
    from vee_jax.training import make_optimizer, train_step

    spec, state, batch, ref = fixture_v1
    spec = dataclasses.replace(spec, bert=dataclasses.replace(spec.bert, hidden_dropout=0.0, attention_dropout=0.0))
    opt = make_optimizer(10)
    params = jax.tree.map(jnp.copy, state["params"])
    train_state = {"params": params, "opt_state": opt.init(params), "step": jnp.int32(0),
                   "rng": jax.random.PRNGKey(0)}
    _, metrics = train_step(train_state, {k: jnp.asarray(v) for k, v in batch.items()}, spec=spec, optimizer=opt)
    M = spec.bert.num_layers
    want, want_per_exit = reference_loss(ref["logits"], batch["gold"], batch["lengths"], np.arange(1.0, M + 1))
    np.testing.assert_allclose(np.asarray(metrics["per_exit"]), want_per_exit, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-5)


# --- what users call: recorded before the commands, the policies and the service were refactored ---
PREDICTIONS = json.loads((FIXTURE / "predictions.json").read_text())


@pytest.fixture(scope="module")
def v1_dir(tmp_path_factory):
    """A scratch copy of the fixture (backbone, workdir, data), the working directory of these tests."""
    root = tmp_path_factory.mktemp("v1_predict")
    for name in ("backbone", "workdir"):
        shutil.copytree(FIXTURE / name, root / name)
    shutil.copyfile(FIXTURE / "data.json", root / "data.json")
    # The same sentences in the W2NER JSON format that eval.py reads (spans [start, end, type]).
    recs = json.loads((FIXTURE / "data.json").read_text())
    (root / "eval.json").write_text(json.dumps([{"sentence": r["sentence"], "ner": [
        {"index": list(range(s, e + 1)), "type": t} for s, e, t in r["ner"]]} for r in recs]))
    return root


def _spans(words_result) -> list:
    return [[[s, e, t] for s, e, t, _ in r["spans"]] for r in words_result]


@pytest.mark.parametrize("key", sorted(PREDICTIONS["results"]))
def test_predictor_equals_the_recorded_predictions(v1_dir, key, monkeypatch):
    """``Predictor`` (words and raw text, batch 1 and 32) gives what the format-1 code recorded in
    tests/fixtures/v1/predictions.json (tests/fixtures/record_predictions.py, commit 21ca600)."""
    from vee_jax.predict import Predictor

    monkeypatch.chdir(v1_dir)
    strategy, bs = key.rsplit("_b", 1)
    policy = next(p for p in PREDICTIONS["policies"] if p["strategy"] == strategy)
    want = PREDICTIONS["results"][key]
    p = Predictor.from_workdir("workdir", policy=policy, batch_size=int(bs))
    words = [r["sentence"] for r in json.loads((v1_dir / "data.json").read_text())]
    got = p.predict_words(words)
    assert [g.exit_layer for g in got] == [w["exit_layer"] for w in want["words"]]
    assert [[[s, e, t] for s, e, t, _ in g.spans] for g in got] == _spans(want["words"])
    np.testing.assert_allclose([sc for g in got for *_, sc in g.spans],
                               [sc for w in want["words"] for *_, sc in w["spans"]], atol=1e-4)
    texts = [t.to_dict() for t in p(PREDICTIONS["texts"])]
    for a, b in zip(texts, want["texts"]):
        assert a["exit_layer"] == b["exit_layer"]
        assert [(e["start"], e["end"], e["type"], e["text"]) for e in a["entities"]] == \
            [(e["start"], e["end"], e["type"], e["text"]) for e in b["entities"]]


def test_eval_and_the_service_equal_the_recorded_predictions(v1_dir, monkeypatch):
    """eval.py's predictions and the HTTP service's answers under VEE-KL, as recorded."""
    from fastapi.testclient import TestClient

    from helpers import run_script
    from vee_jax.predict import Predictor
    from vee_jax.serving import create_app

    policy = PREDICTIONS["policies"][0]
    want = PREDICTIONS["results"]["vee_b32"]
    out = v1_dir / "eval_vee.json"
    # From the fixture's folder: the workdir names its backbone by a relative path.
    r = run_script([str(ROOT / "eval.py"), "--workdir", str(v1_dir / "workdir"), "--data", str(v1_dir / "eval.json"),
                    "--strategy", "vee", "--measure", "kl", "--tau", str(policy["tau"]), "--patience",
                    str(policy["patience"]), "--quiet", "--output", str(out)], cwd=v1_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json.loads(out.read_text())
    assert ev["exit_layers"] == [w["exit_layer"] for w in want["words"]]
    assert ev["predictions"] == _spans(want["words"])

    monkeypatch.chdir(v1_dir)
    app = create_app(Predictor.from_workdir("workdir", policy=policy, batch_size=8), start_worker=True,
                     warmup_subwords=0)  # ready at once: this test checks predictions, not readiness
    with TestClient(app) as client:
        resp = client.post("/ner", json={"texts": PREDICTIONS["texts"]})
    assert resp.status_code == 200, resp.text
    for a, b in zip(resp.json()["results"], want["texts"]):
        assert a["exit_layer"] == b["exit_layer"]
        assert [(e["start"], e["end"], e["type"]) for e in a["entities"]] == \
            [(e["start"], e["end"], e["type"]) for e in b["entities"]]
