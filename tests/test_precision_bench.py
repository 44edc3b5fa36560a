"""bench/precision.py's int8 dense layer: close to the float product, applied by the interceptor to
the encoder's dense layers only, and compiled by XLA:CPU as an int8 dot (what its HLO table reads)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def precision():
    sys.path.insert(0, str(ROOT / "bench"))  # the script imports its neighbours (_common, latency)
    try:
        spec = importlib.util.spec_from_file_location("bench_precision", ROOT / "bench" / "precision.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_int8_dense_is_close_to_the_float_product(precision):
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (2, 7, 64))
    w = jax.random.normal(kw, (64, 96)) * 0.05
    q, scale = precision.quantize_kernel(w)
    assert q.dtype == jnp.int8 and scale.shape == (96,)
    got = precision.int8_dense(x, q, scale, jnp.zeros(96))
    want = x @ w
    assert float(jnp.abs(got - want).max()) < 0.03 * float(jnp.abs(want).max())


def test_the_interceptor_quantises_the_encoder_layers(precision):
    from vee_jax.bert import BertConfig, encode_layers, init_encoder

    cfg = BertConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position=16)
    params = init_encoder(jax.random.PRNGKey(1), cfg)
    ids = jnp.arange(1, 9)[None]
    mask = jnp.ones_like(ids)
    qparams = precision.quantize_encoder(params)
    assert qparams["layers"]["ffn_in"]["kernel"].dtype == jnp.int8
    ref = encode_layers(cfg, params, ids, mask)[-1]
    with precision._precision("int8"):
        got = encode_layers(cfg, qparams, ids, mask)[-1]
    diff = float(jnp.abs(got - ref).max())
    assert 0 < diff < 0.1, diff  # quantised (not the float path), and close


def test_hlo_summary_reads_an_int8_dot(precision):
    x = jnp.ones((1, 8, 32), jnp.float32)
    q, scale = precision.quantize_kernel(jnp.ones((32, 16), jnp.float32))
    text = jax.jit(precision.int8_dense).lower(x, q, scale, jnp.zeros(16)).compile().as_text()
    summary = precision.hlo_summary(text)
    assert summary["dots"].get("s8 x s8 -> s32") == 1, summary
    assert "f32 -> s8" in summary["converts"], summary
    assert np.isfinite(float(precision.int8_dense(x, q, scale, jnp.zeros(16)).sum()))
