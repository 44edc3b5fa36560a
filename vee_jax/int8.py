"""int8 weights for inference: the six dense layers of every transformer layer as int8 x int8 -> int32.

A deviation from the paper for speed on CPU (docs/performance.md "int8"): XLA:CPU runs an s8 x s8
-> s32 ``dot_general`` at about half the time of the float32 one (``bench/precision.py``), while it
turns bfloat16 dots back into float32.

- Weights: symmetric, one scale per output channel, quantised once (``quantize_layer``, called by
  ``engine.prepare(..., weights="int8")``): ``kernel`` int8 [din, dout], ``kernel_scale`` [dout].
- Activations: symmetric, one scale per row (token), quantised at run time inside ``Int8Dense``.
- Everything else stays float32: embeddings, LayerNorm, softmax, GELU, the exits.

A layer's parameters say which dense it uses (``is_int8``): ``bert.TransformerLayer`` keeps one
layer code and swaps ``nn.Dense`` for ``Int8Dense`` where the kernels are int8.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# The dense layers of a transformer layer (``bert.TransformerLayer``'s submodule names).
DENSE = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
QMAX = 127.0  # symmetric: [-127, 127], so that -x is representable for every x


def quantize_kernel(w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Symmetric int8 weights, one scale per output channel: [..., din, dout] -> (int8 [..., din, dout],
    float32 [..., dout]) with ``w ~ q * scale``; an all-zero channel gets scale 1."""
    w = jnp.asarray(w, jnp.float32)
    scale = jnp.max(jnp.abs(w), axis=-2) / QMAX
    scale = jnp.where(scale > 0, scale, 1.0)
    q = jnp.clip(jnp.round(w / scale[..., None, :]), -QMAX, QMAX).astype(jnp.int8)
    return q, scale.astype(jnp.float32)


def quantize_rows(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Symmetric int8 activations, one scale per row: [..., din] -> (int8 [..., din], float32 [..., 1])."""
    x = x.astype(jnp.float32)
    scale = jnp.max(jnp.abs(x), axis=-1, keepdims=True) / QMAX
    scale = jnp.where(scale > 0, scale, 1.0)
    return jnp.clip(jnp.round(x / scale), -QMAX, QMAX).astype(jnp.int8), scale


def int8_dense(x: jax.Array, kernel: jax.Array, kernel_scale: jax.Array, bias: jax.Array) -> jax.Array:
    """x [..., din] float, kernel int8 [din, dout], kernel_scale [dout], bias [dout] -> [..., dout] in x's dtype.

    x is quantised per row, the product runs int8 x int8 -> int32 (exact), then is rescaled by
    both scales and the bias added in float32."""
    xq, xs = quantize_rows(x)
    acc = lax.dot_general(xq, kernel, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32)
    return (acc.astype(jnp.float32) * xs * kernel_scale + bias).astype(x.dtype)


class Int8Dense(nn.Module):
    """``nn.Dense`` over int8 weights (parameters ``kernel`` int8 [din, dout], ``kernel_scale``
    [dout], ``bias`` [dout]); inference only: made by ``quantize_layer``, never trained."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        din = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.zeros, (din, self.features), jnp.int8)
        kernel_scale = self.param("kernel_scale", nn.initializers.ones, (self.features,))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return int8_dense(x, kernel, kernel_scale, bias)


def is_int8(layer_params: Any) -> bool:
    """Whether a transformer layer's parameters (one layer, or stacked) carry int8 dense kernels."""
    return isinstance(layer_params, dict) and "kernel_scale" in layer_params.get("query", {})


def quantize_layer(layer_params: dict) -> dict:
    """One transformer layer's parameters (or stacked ones: leading axes pass through) with its six
    dense kernels as int8 plus ``kernel_scale`` (``quantize_kernel``); the rest unchanged."""
    if is_int8(layer_params):
        return layer_params
    out = dict(layer_params)
    for name in DENSE:
        q, scale = quantize_kernel(layer_params[name]["kernel"])
        out[name] = {**layer_params[name], "kernel": q, "kernel_scale": scale}
    return out


def quantize_encoder(encoder: dict) -> dict:
    """The encoder's parameters (stacked as trained, or ``engine.prepare``'s tuple of layers) with
    every layer quantised (``quantize_layer``); the embeddings stay float32."""
    layers = encoder["layers"]
    layers = tuple(map(quantize_layer, layers)) if isinstance(layers, tuple) else quantize_layer(layers)
    return {**encoder, "layers": layers}
