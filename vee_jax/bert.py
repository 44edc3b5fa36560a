"""The BERT encoder (paper Sec. 2.1) as pure functions over an explicit pytree.

Parameters of the M transformer layers are stacked on a leading layer axis so that one layer
can be picked by a traced index inside ``lax.while_loop`` (the early-exit engine) and all
layers can run under ``lax.scan``. ALBERT keeps a single stacked entry (shared weights):
``layer_step`` maps every depth to it, so gradients from all depths reach the same array and
fine-tuning keeps the weights tied.

Pytree layout (``S`` stacked layers: ``S = M`` for BERT, ``S = 1`` for ALBERT)::

    {"embeddings": {"word": [V, E], "position": [P, E], "token_type": [Tt, E],
                    "ln": {"scale": [E], "bias": [E]},
                    "proj": {"kernel": [E, d], "bias": [d]}},          # ALBERT only (E != d)
     "layers": {"query" | "key" | "value" | "attn_out": {"kernel": [S, d, d], "bias": [S, d]},
                "attn_ln": {"scale": [S, d], "bias": [S, d]},
                "ffn_in": {"kernel": [S, d, F], "bias": [S, F]},
                "ffn_out": {"kernel": [S, F, d], "bias": [S, d]},
                "ffn_ln": {"scale": [S, d], "bias": [S, d]}}}
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Shape and numerics of a BERT-style encoder (hashable: usable as a static jit arg)."""

    vocab_size: int
    hidden_size: int  # d
    num_layers: int  # M: one exit per layer
    num_heads: int
    intermediate_size: int  # F
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    embedding_size: int | None = None  # E; ALBERT factorises the embeddings (E < d)
    num_stacked: int | None = None  # S; None means S = M (no sharing)
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    model_type: str = "bert"
    dtype: str = "float32"
    pad_token_id: int = 0

    @property
    def stacked(self) -> int:
        """Number of distinct layer weight sets S (M for BERT, the group count for ALBERT)."""
        return self.num_stacked or self.num_layers

    @property
    def emb_size(self) -> int:
        return self.embedding_size or self.hidden_size

    @property
    def jnp_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)


# Hugging Face hidden_act names: "gelu" is the exact erf GELU; "gelu_new" is the tanh approximation.
ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; supported: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def layer_norm(x: jax.Array, p: Params, eps: float) -> jax.Array:
    """LayerNorm over the last axis, statistics in float32 (as PyTorch does for fp32)."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * lax.rsqrt(var + eps)
    return (y * p["scale"] + p["bias"]).astype(x.dtype)


def _dense(x: jax.Array, p: Params) -> jax.Array:
    return x @ p["kernel"] + p["bias"]


def _dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def embed(
    config: BertConfig,
    params: Params,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    token_type_ids: jax.Array | None = None,
    *,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Embedding output h^(0): word + position + token type, LayerNorm (and ALBERT's E->d map).

    Args: input_ids, attention_mask, token_type_ids: [B, T] ints. ``rng``: dropout key
    (None = deterministic). Returns [B, T, d].
    """
    del attention_mask  # positions are absolute; padding is masked in attention
    p = params["embeddings"]
    T = input_ids.shape[1]
    if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
    x = p["word"][input_ids] + p["position"][jnp.arange(T)][None] + p["token_type"][token_type_ids]
    x = layer_norm(x, p["ln"], config.layer_norm_eps)
    x = _dropout(x, config.hidden_dropout, rng)
    if "proj" in p:  # ALBERT: embedding_hidden_mapping_in
        x = _dense(x, p["proj"])
    return x.astype(config.jnp_dtype)


def stacked_index(config: BertConfig, m: jax.Array | int) -> jax.Array | int:
    """Which stacked weight set serves layer m (0-based): m for BERT, m * S // M when shared."""
    if config.stacked == config.num_layers:
        return m
    return (m * config.stacked) // config.num_layers


def select_layer(config: BertConfig, layers: Params, m: jax.Array | int) -> Params:
    """The weights of layer m (may be traced) from the stacked layer pytree."""
    idx = stacked_index(config, m)
    return jax.tree.map(lambda w: lax.dynamic_index_in_dim(w, idx, 0, keepdims=False), layers)


def attention_bias(attention_mask: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """[B, T] 0/1 mask -> additive [B, 1, 1, T] bias (the dtype's minimum on padding, as HF)."""
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(dtype).min).astype(dtype)


def transformer_layer(
    config: BertConfig,
    lp: Params,
    hidden: jax.Array,
    bias: jax.Array,
    *,
    rng: jax.Array | None = None,
) -> jax.Array:
    """One post-LN transformer layer with weights ``lp`` (unstacked). hidden [B, T, d]."""
    B, T, d = hidden.shape
    H = config.num_heads
    dh = d // H
    rngs = [None] * 3 if rng is None else list(jax.random.split(rng, 3))

    def heads(x):  # [B, T, d] -> [B, H, T, dh]
        return x.reshape(B, T, H, dh).transpose(0, 2, 1, 3)

    q = heads(_dense(hidden, lp["query"]))
    k = heads(_dense(hidden, lp["key"]))
    v = heads(_dense(hidden, lp["value"]))
    scores = jnp.einsum("bhqc,bhkc->bhqk", q, k) / math.sqrt(dh) + bias
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(hidden.dtype)
    probs = _dropout(probs, config.attention_dropout, rngs[0])
    ctx = jnp.einsum("bhqk,bhkc->bhqc", probs, v).transpose(0, 2, 1, 3).reshape(B, T, d)
    attn = _dropout(_dense(ctx, lp["attn_out"]), config.hidden_dropout, rngs[1])
    hidden = layer_norm(attn + hidden, lp["attn_ln"], config.layer_norm_eps)
    ff = _activation(config.hidden_act)(_dense(hidden, lp["ffn_in"]))
    ff = _dropout(_dense(ff, lp["ffn_out"]), config.hidden_dropout, rngs[2])
    return layer_norm(ff + hidden, lp["ffn_ln"], config.layer_norm_eps)


def layer_step(
    config: BertConfig,
    params: Params,
    m: jax.Array | int,
    hidden: jax.Array,
    attention_mask: jax.Array,
    *,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Apply transformer layer m (0-based, may be traced): [B, T, d] -> [B, T, d]."""
    lp = select_layer(config, params["layers"], m)
    bias = attention_bias(attention_mask, hidden.dtype)
    return transformer_layer(config, lp, hidden, bias, rng=rng)


def encode_layers(
    config: BertConfig,
    params: Params,
    input_ids: jax.Array,
    attention_mask: jax.Array,
    token_type_ids: jax.Array | None = None,
    *,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Every hidden state: [M+1, B, T, d], the embedding output then layers 1..M.

    The same quantity as transformers' ``output_hidden_states``. Layers run under ``lax.scan``.
    """
    rngs = (None, None) if rng is None else tuple(jax.random.split(rng))
    h0 = embed(config, params, input_ids, attention_mask, token_type_ids, rng=rngs[0])
    bias = attention_bias(attention_mask, h0.dtype)
    M = config.num_layers

    def body(h, m):
        lr = None if rngs[1] is None else jax.random.fold_in(rngs[1], m)
        h = transformer_layer(config, select_layer(config, params["layers"], m), h, bias, rng=lr)
        return h, h

    _, hs = lax.scan(body, h0, jnp.arange(M))
    return jnp.concatenate([h0[None], hs], axis=0)


def word_vectors(
    hidden: jax.Array,
    word_index: jax.Array,
    word_mask: jax.Array,
    pooling: str = "first",
    word_end: jax.Array | None = None,
) -> jax.Array:
    """Word representations from subword states (NOTES item 6: tables are over words).

    Args:
      hidden: [B, T, d] subword states.
      word_index: [B, L] position of each word's first subword.
      word_mask: [B, L] 1 for real words, 0 for padding.
      pooling: "first" (first subword) or "mean" (mean of the word's subwords; needs
        ``word_end`` [B, L], the exclusive end position of each word's subwords).
    Returns: [B, L, d], zero at padded words.
    """
    mask = word_mask[..., None].astype(hidden.dtype)
    if pooling == "first":
        return jnp.take_along_axis(hidden, word_index[..., None], axis=1) * mask
    if pooling == "mean":
        if word_end is None:
            raise ValueError("pooling='mean' needs word_end [B, L]")
        pos = jnp.arange(hidden.shape[1])
        member = (pos[None, None, :] >= word_index[..., None]) & (pos[None, None, :] < word_end[..., None])
        member = member.astype(hidden.dtype)  # [B, L, T]
        count = jnp.maximum(member.sum(-1, keepdims=True), 1.0)
        return jnp.einsum("blt,btd->bld", member / count, hidden) * mask
    raise ValueError(f"unknown pooling {pooling!r}; expected 'first' or 'mean'")
