"""bench/precision.py's HLO table reads the library's int8 dense layer (vee_jax.int8, tested in
test_int8.py) as what XLA:CPU compiles it to: an s8 x s8 -> s32 dot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vee_jax.int8 import int8_dense, quantize_kernel

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


def test_hlo_summary_reads_an_int8_dot(precision):
    x = jnp.ones((1, 8, 32), jnp.float32)
    q, scale = quantize_kernel(jnp.ones((32, 16), jnp.float32))
    text = jax.jit(int8_dense).lower(x, q, scale, jnp.zeros(16)).compile().as_text()
    summary = precision.hlo_summary(text)
    assert summary["dots"].get("s8 x s8 -> s32") == 1, summary
    assert "f32 -> s8" in summary["converts"], summary
    assert np.isfinite(float(int8_dense(x, q, scale, jnp.zeros(16)).sum()))
