"""int8 weights (vee_jax.int8, engine.prepare(weights="int8")): the quantisation against numpy, the
int8 layer close to the float32 one, the engine on int8 weights equal to the replay on the same weights."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from vee_jax import vee_infer
from vee_jax.bert import TransformerLayer, attention_bias, encode_layers, transformer_layer
from vee_jax.engine import prepare
from vee_jax.int8 import DENSE, int8_dense, is_int8, quantize_encoder, quantize_kernel, quantize_layer
from vee_jax.offline import exit_probs, layer_distances, replay
from vee_jax.policies import VeePolicy

from test_engine import BATCH, CFG, EXITS, LENGTHS, N, PARAMS, as_numpy, assert_same, policies


def np_quantize(w):
    """numpy reference: per output channel (last axis) scale max|w| / 127, round half to even."""
    scale = np.abs(w).max(-2) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(w / scale[..., None, :]), -127, 127).astype(np.int8), scale


def test_quantize_kernel_matches_numpy_and_bounds_the_error():
    w = np.random.default_rng(0).normal(size=(3, 16, 8)).astype(np.float32)
    w[1, :, 2] = 0.0  # an all-zero channel: scale 1, codes 0
    q, scale = quantize_kernel(w)
    rq, rscale = np_quantize(w)
    np.testing.assert_allclose(np.asarray(scale), rscale, rtol=1e-6)
    assert np.abs(np.asarray(q).astype(int) - rq.astype(int)).max() <= 1  # ties may round either way after /scale
    assert np.asarray(q).dtype == np.int8 and np.abs(np.asarray(q)).max() == 127
    err = np.abs(np.asarray(q) * np.asarray(scale)[:, None, :] - w)
    assert (err <= np.asarray(scale)[:, None, :] / 2 + 1e-7).all()
    assert (np.asarray(q)[1, :, 2] == 0).all() and np.asarray(scale)[1, 2] == 1.0


def test_int8_dense_is_the_exact_integer_product_rescaled():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 16)).astype(np.float32)
    w = rng.normal(size=(16, 8)).astype(np.float32)
    b = rng.normal(size=8).astype(np.float32)
    q, scale = quantize_kernel(w)
    got = np.asarray(int8_dense(x, q, scale, b))
    xs = np.abs(x).max(-1, keepdims=True) / 127.0
    xq = np.clip(np.round(x / xs), -127, 127).astype(np.int64)
    want = (xq @ np.asarray(q).astype(np.int64)).astype(np.float64) * xs * np.asarray(scale) + b
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # and close to the float product: the quantisation error of both operands only
    rel = np.abs(got - (x @ w + b)).max() / np.abs(x @ w).max()
    assert rel < 0.03, rel


def test_int8_layer_is_close_to_the_float_layer():
    rng = np.random.default_rng(2)
    hidden = rng.normal(size=(2, 9, CFG.hidden_size)).astype(np.float32)
    mask = np.ones((2, 9), np.int32)
    mask[1, 6:] = 0
    bias = attention_bias(mask, np.float32)
    lp = jax.tree.map(lambda w: w[0], PARAMS["layers"])
    qp = quantize_layer(lp)
    assert is_int8(qp) and not is_int8(lp)
    assert all(qp[n]["kernel"].dtype == np.int8 and qp[n]["kernel_scale"].shape == lp[n]["bias"].shape for n in DENSE)
    assert qp["attn_ln"] is lp["attn_ln"]  # LayerNorms stay float32
    f = np.asarray(transformer_layer(CFG, lp, hidden, bias))
    i = np.asarray(transformer_layer(CFG, qp, hidden, bias))
    assert 0 < np.abs(f - i).max() < 0.1  # LayerNormed outputs (unit scale): quantisation noise, not a new layer
    np.testing.assert_allclose(i, f, atol=0.1)


def test_stacked_and_prepared_int8_layers_agree():
    """encode_layers on quantised stacked weights == the prepared int8 layers, layer by layer on the
    same inputs (chained, a float difference of 1e-7 can flip an activation's rounding: one code)."""
    q = quantize_encoder(PARAMS)
    ids, mask = BATCH["input_ids"][:N], BATCH["attention_mask"][:N]
    hs = np.asarray(encode_layers(CFG, q, ids, mask))
    model = prepare(CFG, PARAMS, EXITS, weights="int8")
    assert all(is_int8(lp) for lp in model["encoder"]["layers"])
    for m, lp in enumerate(model["encoder"]["layers"]):
        h = np.asarray(transformer_layer(CFG, lp, hs[m], attention_bias(mask, np.float32)))
        np.testing.assert_allclose(h, hs[m + 1], atol=2e-5)
    float_hs = np.asarray(encode_layers(CFG, PARAMS, ids, mask))
    assert not np.allclose(hs[-1], float_hs[-1], atol=1e-4)  # int8 really ran


def test_int8_weights_in_a_float_layer_are_refused():
    lp = quantize_layer(jax.tree.map(lambda w: w[0], PARAMS["layers"]))
    h = np.zeros((1, 3, CFG.hidden_size), np.float32)
    with pytest.raises(ValueError, match="int8 layer weights given to a float32 TransformerLayer"):
        TransformerLayer(CFG).apply({"params": lp}, h, attention_bias(np.ones((1, 3)), np.float32))


@pytest.fixture(scope="module")
def offline_int8():
    q = quantize_encoder(PARAMS)
    probs = np.asarray(exit_probs(CFG, q, EXITS, BATCH))
    return probs, {m: layer_distances(m, probs, BATCH["lengths"]) for m in ("kl", "euclidean", "cosine", "edit")}


@pytest.mark.parametrize("name", ["vee-kl-p1", "vee-kl-p2-ensemble", "vee-cosine", "entropy", "budget", "full"])
def test_engine_on_int8_weights_equals_the_replay_on_the_same_weights(offline_int8, name):
    probs, D = offline_int8
    policy = policies(offline_int8)[name]
    model = prepare(CFG, PARAMS, EXITS, weights="int8")
    on = as_numpy(vee_infer(CFG, model["encoder"], model["exits"], BATCH, policy))
    distances = D[policy.measure][..., :N] if isinstance(policy, VeePolicy) else None
    off = replay(policy, probs[:, :N], BATCH["lengths"][:N], distances=distances)
    assert (off["near_ties"] == 0).all()
    assert_same(on, off, list(range(N)), LENGTHS, name)
    np.testing.assert_array_equal(on["votes"][:N], off["votes"])


def test_prepare_refuses_an_unknown_weight_kind():
    with pytest.raises(ValueError, match="weights must be one of float32, int8"):
        prepare(CFG, PARAMS, EXITS, weights="int4")


def test_predictor_and_cli_take_int8_weights(tiny_workdir, tmp_path, monkeypatch):
    from vee_jax import Predictor
    from vee_jax.trained import TrainedModel

    model = TrainedModel.load(tiny_workdir)
    p8 = Predictor.from_trained(model, weights="int8")
    p32 = Predictor.from_trained(model)
    assert p8.weights == "int8" and p32.weights == "float32"
    assert model.prepared_as("int8") is p8.model  # built once per kind, shared
    texts = ["IL-2 gene expression requires NF-kappa B .", "The cells were washed ."]
    a, b = p8(texts), p32(texts)
    assert [len(x.words) for x in a] == [len(x.words) for x in b]
    assert all(1 <= x.exit_layer <= p8.num_layers for x in a)
    # int8 changes the tables a little: the scores differ from float32's, the Predictor's from the layout's
    s8 = [e.score for x in a for e in x.entities]
    s32 = [e.score for x in b for e in x.entities]
    assert s8 and s32 and s8 != s32
    with pytest.raises(ValueError, match="weights='int8' but the prepared layout given holds float32 weights"):
        Predictor(p32.spec, None, p32.tokenizer, p32.labels, True, prepared=p32.model, weights="int8")
    # the command line: --weights int8 answers as the int8 Predictor (its scores, not float32's)
    from vee_jax.commands.predict import main as predict_main

    monkeypatch.setenv("VEE_JAX_XLA_CACHE", "none")
    out = tmp_path / "out.jsonl"
    predict_main(["--workdir", str(tiny_workdir), "--weights", "int8", "--output", str(out), "--quiet", *texts])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == texts
    assert [r["exit_layer"] for r in rows] == [x.exit_layer for x in a]
    assert [e["score"] for r in rows for e in r["entities"]] == pytest.approx(s8, abs=1e-6)
