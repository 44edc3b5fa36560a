"""The BERT encoder (paper Sec. 2.1) as Flax modules, and the step functions over their parameters.

The modules (linen: functional ``init`` / ``apply`` over explicit parameter pytrees):

- ``BertEmbeddings``: word + position + token type, LayerNorm, dropout (ALBERT: then E -> d);
- ``TransformerLayer``: one post-LN layer, the only code of a layer;
- ``BertEncoder``: the embeddings and the M layers, the layers ``nn.scan``ned so that their
  parameters are stacked on a leading layer axis. ALBERT keeps its S shared weight sets
  stacked ``[S, ...]``; the scan runs over the S sets and applies each to its M / S layers.

The step functions (``embed``, ``layer_step``, ``transformer_layer``, ``encode_layers``) apply
these modules to a parameter collection, so research code and the early-exit engine run one
layer at a time (a traced layer index inside ``lax.while_loop``) with the same code as training.

Parameter layout (``S`` stacked layers: ``S = M`` for BERT, the group count for ALBERT)::

    {"embeddings": {"word": [V, E], "position": [P, E], "token_type": [Tt, E],
                    "ln": {"scale": [E], "bias": [E]},
                    "proj": {"kernel": [E, d], "bias": [d]}},          # ALBERT only
     "layers": {"query" | "key" | "value" | "attn_out": {"kernel": [S, d, d], "bias": [S, d]},
                "attn_ln": {"scale": [S, d], "bias": [S, d]},
                "ffn_in": {"kernel": [S, d, F], "bias": [S, F]},
                "ffn_out": {"kernel": [S, F, d], "bias": [S, d]},
                "ffn_ln": {"scale": [S, d], "bias": [S, d]}}}

Dropout draws from the ``"dropout"`` rng stream (``rngs={"dropout": key}``); the step functions
take ``rng`` (None: deterministic).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from .int8 import Int8Dense, is_int8

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


def _init(config: "BertConfig"):
    """BERT's initialiser: normal with standard deviation 0.02 (fresh modules only; fine-tuning
    starts from ``weights.load_backbone``)."""
    return nn.initializers.normal(0.02)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, statistics in float32 as PyTorch computes them for fp32
    (``flax.linen.LayerNorm``'s default fast variance, E[x^2] - E[x]^2, drifts from it)."""

    eps: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,))
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * lax.rsqrt(var + self.eps)
        return (y * scale + bias).astype(x.dtype)


class BertEmbeddings(nn.Module):
    """h^(0): word + position + token type embeddings, LayerNorm, dropout (and ALBERT's E -> d map)."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array | None = None, *,
                 deterministic: bool = True) -> jax.Array:
        """input_ids, token_type_ids: [B, T] ints -> [B, T, d] (positions are absolute)."""
        c = self.config
        E = c.emb_size
        word = self.param("word", _init(c), (c.vocab_size, E))
        position = self.param("position", _init(c), (c.max_position, E))
        token_type = self.param("token_type", _init(c), (c.type_vocab_size, E))
        T = input_ids.shape[1]
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = word[input_ids] + position[jnp.arange(T)][None] + token_type[token_type_ids]
        x = LayerNorm(c.layer_norm_eps, name="ln")(x)
        x = nn.Dropout(c.hidden_dropout)(x, deterministic=deterministic)
        if c.model_type == "albert":  # embedding_hidden_mapping_in
            x = nn.Dense(c.hidden_size, kernel_init=_init(c), name="proj")(x)
        return x.astype(c.jnp_dtype)


def attention_bias(attention_mask: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """[B, T] 0/1 mask -> additive [B, 1, 1, T] bias (the dtype's minimum on padding, as HF)."""
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(dtype).min).astype(dtype)


class TransformerLayer(nn.Module):
    """One post-LN transformer layer: self-attention, add & norm, feed-forward, add & norm.

    ``int8``: the six dense layers run on int8 weights (``int8.Int8Dense``; inference only, the
    parameters made by ``int8.quantize_layer``); the rest of the layer is the same code."""

    config: BertConfig
    int8: bool = False

    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """hidden [B, T, d], bias [B, 1, 1, T] (``attention_bias``) -> [B, T, d]."""
        c = self.config
        B, T, d = hidden.shape
        H = c.num_heads
        dh = d // H
        if self.int8:
            dense = lambda n, name: Int8Dense(n, name=name)  # noqa: E731
        elif self.has_variable("params", "query") and "kernel_scale" in self.variables["params"]["query"]:
            # nn.Dense would read the int8 codes as floats and ignore the scales: wrong, silently
            raise ValueError("int8 layer weights given to a float32 TransformerLayer: pass int8=True "
                             "(vee_jax.int8.is_int8 tells)")
        else:
            dense = lambda n, name: nn.Dense(n, kernel_init=_init(c), name=name)  # noqa: E731
        drop = lambda rate, x: nn.Dropout(rate)(x, deterministic=deterministic)  # noqa: E731

        def heads(x):  # [B, T, d] -> [B, H, T, dh]
            return x.reshape(B, T, H, dh).transpose(0, 2, 1, 3)

        q = heads(dense(d, "query")(hidden))
        k = heads(dense(d, "key")(hidden))
        v = heads(dense(d, "value")(hidden))
        scores = jnp.einsum("bhqc,bhkc->bhqk", q, k) / math.sqrt(dh) + bias
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(hidden.dtype)
        probs = drop(c.attention_dropout, probs)
        ctx = jnp.einsum("bhqk,bhkc->bhqc", probs, v).transpose(0, 2, 1, 3).reshape(B, T, d)
        attn = drop(c.hidden_dropout, dense(d, "attn_out")(ctx))
        hidden = LayerNorm(c.layer_norm_eps, name="attn_ln")(attn + hidden)
        ff = _activation(c.hidden_act)(dense(c.intermediate_size, "ffn_in")(hidden))
        ff = drop(c.hidden_dropout, dense(d, "ffn_out")(ff))
        return LayerNorm(c.layer_norm_eps, name="ffn_ln")(ff + hidden)


def _layer_group(repeats: int, deterministic: bool):
    """The scan body over stacked weight sets: one set applied to its ``repeats`` consecutive
    layers (1 for BERT; M / S for ALBERT). Returns (hidden, [repeats, B, T, d])."""

    def body(layer: TransformerLayer, hidden: jax.Array, bias: jax.Array):
        outs = []
        for _ in range(repeats):
            hidden = layer(hidden, bias, deterministic=deterministic)
            outs.append(hidden)
        return hidden, jnp.stack(outs)

    return body


class BertEncoder(nn.Module):
    """The embeddings and the M layers: every hidden state [M+1, B, T, d] (as transformers'
    ``output_hidden_states``). Parameters ``{"embeddings": ..., "layers": [S, ...]}``
    (``int8``: the layers' dense kernels are int8, ``TransformerLayer``)."""

    config: BertConfig
    int8: bool = False

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, token_type_ids: jax.Array | None = None,
                 *, deterministic: bool = True) -> jax.Array:
        c = self.config
        S, M = c.stacked, c.num_layers
        if M % S:
            raise ValueError(f"{M} layers over {S} weight groups: the layers must split evenly over the groups")
        h0 = BertEmbeddings(c, name="embeddings")(input_ids, token_type_ids, deterministic=deterministic)
        bias = attention_bias(attention_mask, h0.dtype)
        scan = nn.scan(_layer_group(M // S, deterministic), variable_axes={"params": 0},
                       split_rngs={"params": True, "dropout": True}, in_axes=nn.broadcast, length=S)
        _, hs = scan(TransformerLayer(c, self.int8, name="layers"), h0, bias)  # [S, M / S, B, T, d]
        return jnp.concatenate([h0[None], hs.reshape((M,) + h0.shape)], axis=0)


def _rngs(rng: jax.Array | None) -> dict:
    return {} if rng is None else {"dropout": rng}


def embed(config: BertConfig, params: Params, input_ids: jax.Array, attention_mask: jax.Array,
          token_type_ids: jax.Array | None = None, *, rng: jax.Array | None = None) -> jax.Array:
    """Embedding output h^(0) (``BertEmbeddings`` on ``params["embeddings"]``).

    Args: input_ids, attention_mask, token_type_ids: [B, T] ints. ``rng``: dropout key
    (None = deterministic). Returns [B, T, d].
    """
    del attention_mask  # positions are absolute; padding is masked in attention
    return BertEmbeddings(config).apply({"params": params["embeddings"]}, input_ids, token_type_ids,
                                        deterministic=rng is None, rngs=_rngs(rng))


def stacked_index(config: BertConfig, m: jax.Array | int) -> jax.Array | int:
    """Which stacked weight set serves layer m (0-based): m for BERT, m * S // M when shared."""
    if config.stacked == config.num_layers:
        return m
    return (m * config.stacked) // config.num_layers


def select_layer(config: BertConfig, layers: Params, m: jax.Array | int) -> Params:
    """The weights of layer m (may be traced) from the stacked layer pytree."""
    idx = stacked_index(config, m)
    return jax.tree.map(lambda w: lax.dynamic_index_in_dim(w, idx, 0, keepdims=False), layers)


def transformer_layer(
    config: BertConfig,
    lp: Params,
    hidden: jax.Array,
    bias: jax.Array,
    *,
    rng: jax.Array | None = None,
) -> jax.Array:
    """``TransformerLayer`` with one layer's (unstacked) weights ``lp``: [B, T, d] -> [B, T, d]
    (int8 dense layers where ``lp`` holds int8 kernels: ``int8.is_int8``)."""
    return TransformerLayer(config, is_int8(lp)).apply({"params": lp}, hidden, bias, deterministic=rng is None,
                                          rngs=_rngs(rng))


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


def encode_layers(config: BertConfig, params: Params, input_ids: jax.Array, attention_mask: jax.Array,
                  token_type_ids: jax.Array | None = None, *, rng: jax.Array | None = None) -> jax.Array:
    """Every hidden state: [M+1, B, T, d], the embedding output then layers 1..M (``BertEncoder``)."""
    return BertEncoder(config, is_int8(params["layers"])).apply({"params": params}, input_ids, attention_mask, token_type_ids,
                                     deterministic=rng is None, rngs=_rngs(rng))


def init_encoder(key: jax.Array, config: BertConfig) -> Params:
    """Fresh encoder parameters (BERT's initialisation) in the layout above."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return BertEncoder(config).init(key, ids, jnp.ones_like(ids))["params"]


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
