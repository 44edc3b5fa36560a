"""The biaffine exit after every layer (Eq. 1 and 3, footnote 5) as Flax modules, and the step functions.

    f^(m)(s, e) = h_s^T U^(m) h_e + W^(m) [h_s ; h_e] + b^(m)        (Eq. 3)

computed as ``(H U) H^T`` contractions over the word table, never per cell.

- ``BiaffineExit``: one exit, the only code of an exit;
- ``StackedExits``: the M exits, ``nn.vmap``ped over a leading exit axis (one exit per layer);
- ``VeeBert``: ``BertEncoder`` + word vectors + ``StackedExits``; its ``__call__`` gives every
  exit's logits [M, B, L, L, K] for training, ``hidden_states`` and ``exit_table`` the pieces.

Parameters, stacked on a leading exit axis like the layers::

    {"U": [M, h, K, h], "W_start": [M, h, K], "W_end": [M, h, K], "b": [M, K],
     "ffnn": {"start" | "end": {"kernel": [M, d, h], "bias": [M, h]}}}   # optional (Yu et al.)

``compress_exits`` adds ``"P"``, ``"Q"``: [M, h, r] and shrinks ``U`` to [M, r, K, r] (inference).
``W`` of the paper is ``[W_start; W_end]`` (a 2h x K matrix split in halves). Without the
optional projections (the paper's default, footnote 5) h = d.

With ``model.casing`` (a deviation from the paper for uncased backbones, docs/model.md "Casing
feature") every exit also has ``"shape_emb": {"embedding": [M, S, d]}``, S = ``NUM_SHAPES``:
exit m's input is ``words + embedding[m][word_shape]`` (``shape_offsets``), ``word_shape`` [B, L] the words'
shape ids from the batch (0 at padding adds nothing). Without it the tree has no such entry.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .bert import BertConfig, BertEncoder, Params, word_vectors
from .int8 import is_int8


def _normal(scale_of_fan: float):
    """Normal initialiser with standard deviation 1 / sqrt(scale_of_fan), whatever the shape."""
    return lambda key, shape, dtype=jnp.float32: jax.random.normal(key, shape, dtype) / jnp.sqrt(scale_of_fan)


class StartEnd(nn.Module):
    """Yu et al. (2020)'s start and end projections: ReLU(W h + b) each, to ``size`` dims."""

    size: int

    @nn.compact
    def __call__(self, words: jax.Array) -> tuple[jax.Array, jax.Array]:
        d = words.shape[-1]
        dense = lambda name: nn.Dense(self.size, kernel_init=_normal(d), name=name)  # noqa: E731
        return jax.nn.relu(dense("start")(words)), jax.nn.relu(dense("end")(words))


NUM_SHAPES = 8  # data.features.NUM_SHAPES: padding and the 7 word shapes (the model imports no data module)


def shape_offsets(embedded: jax.Array, word_shape: jax.Array) -> jax.Array:
    """The casing feature's addition to an exit's input: each word's shape row [B, L, d] (looked up
    by ``word_shape`` [B, L] ints), zeroed at padding (shape 0)."""
    return jnp.where((word_shape > 0)[..., None], embedded, 0)


class BiaffineExit(nn.Module):
    """One exit's span table (Eq. 3): words [B, L, d] -> logits [B, L, L, K].

    ``ffnn_size``: Yu et al.'s start/end projections (None: none, the paper's default,
    footnote 5). Initial scales keep logits O(1) for LayerNorm-ed inputs. An exit compressed by
    ``compress_exits`` (parameters ``P``, ``Q`` present) projects to its rank r first.
    ``num_shapes`` > 0 (``model.casing``): the exit's own shape embedding ``shape_emb``
    (``{"embedding": [S, d]}``), zero-initialised, added to the words first (``shape_offsets``);
    ``word_shape`` [B, L] is then required.
    """

    num_labels: int
    ffnn_size: int | None = None
    num_shapes: int = 0

    @nn.compact
    def __call__(self, words: jax.Array, word_shape: jax.Array | None = None) -> jax.Array:
        K = self.num_labels
        if self.num_shapes:
            # Zeros: at initialisation the exit is the one without casing (fine-tuning starts from the
            # backbone's own word vectors, unperturbed); the gradient reaches the table at once
            # through U and W, which are not zero. Its own table per exit: each layer's hidden
            # states have their own geometry, and S x d numbers per exit cost nothing.
            if word_shape is None:
                raise ValueError("this exit was trained with model.casing: the batch needs word_shape [B, L] "
                                 "(data.features.collate of rows encoded with casing=True)")
            # A submodule: its parameter draws no key from this exit's stream, so U and W are those
            # drawn without casing for the same seed.
            embed = nn.Embed(self.num_shapes, words.shape[-1], embedding_init=nn.initializers.zeros,
                             name="shape_emb")
            words = words + shape_offsets(embed(word_shape), word_shape).astype(words.dtype)
        if self.ffnn_size:
            hs, he = StartEnd(self.ffnn_size, name="ffnn")(words)
        else:
            hs = he = words
        h = hs.shape[-1]
        w_start = self.param("W_start", _normal(2.0 * h), (h, K))
        w_end = self.param("W_end", _normal(2.0 * h), (h, K))
        b = self.param("b", nn.initializers.zeros, (K,))
        lin = (hs @ w_start)[:, :, None, :] + (he @ w_end)[:, None, :, :]
        r = h
        if self.has_variable("params", "P"):  # a low-rank exit: U ~ C x P x Q, so project to r first
            P, Q = self.get_variable("params", "P"), self.get_variable("params", "Q")
            hs, he, r = hs @ P, he @ Q, P.shape[-1]
        U = self.param("U", _normal(float(h) ** 2), (r, K, r))
        hu = jnp.einsum("bsi,ikj->bskj", hs, U)  # H_s U: [B, L, K, h]
        bil = jnp.einsum("bskj,bej->bsek", hu, he)  # (H_s U) H_e^T: [B, L, L, K]
        return bil + lin + b


StackedExits = nn.vmap(BiaffineExit, variable_axes={"params": 0}, split_rngs={"params": True},
                       in_axes=0, out_axes=0)
StackedExits.__doc__ = """The M exits stacked on a leading axis: words [M, B, L, d] (and with casing word_shape
[M, B, L], the same ids for every exit) -> logits [M, B, L, L, K]."""


class VeeBert(nn.Module):
    """The whole model: encoder, word vectors, an exit after every layer.

    Parameters ``{"encoder": BertEncoder's, "exits": StackedExits'}`` (the train state's
    ``params``). ``batch`` as made by ``data.collate``: ``input_ids``, ``attention_mask`` [B, T];
    ``word_index``, ``word_mask`` [B, L]; optional ``token_type_ids`` [B, T], ``word_end`` [B, L];
    with ``casing``, ``word_shape`` [B, L]. ``int8``: the encoder's layers hold int8 dense kernels
    (inference only: ``int8.quantize_encoder``).
    """

    config: BertConfig
    num_labels: int
    ffnn_size: int | None = None
    pooling: str = "first"
    casing: bool = False
    int8: bool = False

    def setup(self):
        self.encoder = BertEncoder(self.config, self.int8)
        self.exits = StackedExits(self.num_labels, self.ffnn_size, NUM_SHAPES if self.casing else 0)

    def hidden_states(self, batch: dict[str, Any], *, deterministic: bool = True) -> jax.Array:
        """Every layer's output [M, B, T, d] (the embedding output dropped: exit m reads layer m)."""
        return self.encoder(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
                            deterministic=deterministic)[1:]

    def word_table_inputs(self, hidden: jax.Array, batch: dict[str, Any]) -> tuple[jax.Array, jax.Array | None]:
        """[M, B, T, d] subword states -> every exit's ``exit_inputs``: word vectors [M, B, L, d]
        (NOTES item 6) and the shape ids [M, B, L] (the same for every exit; None without casing)."""
        words = jax.vmap(lambda h: exit_inputs(h, batch, self.pooling)[0])(hidden)
        shapes = batch.get("word_shape")
        if shapes is not None:  # StackedExits maps over a leading exit axis
            shapes = jnp.broadcast_to(shapes, words.shape[:1] + shapes.shape)
        return words, shapes

    def __call__(self, batch: dict[str, Any], *, deterministic: bool = True) -> jax.Array:
        """Every exit's logits from one encoder pass: [M, B, L, L, K]."""
        return self.exits(*self.word_table_inputs(self.hidden_states(batch, deterministic=deterministic), batch))


def _exit_module(p: Params) -> BiaffineExit:
    """The ``BiaffineExit`` whose parameters are ``p`` (stacked or not: K and h from the shapes)."""
    ffnn = p["ffnn"]["start"]["kernel"].shape[-1] if "ffnn" in p else None
    shapes = p["shape_emb"]["embedding"].shape[-2] if "shape_emb" in p else 0
    return BiaffineExit(num_labels=p["b"].shape[-1], ffnn_size=ffnn, num_shapes=shapes)


def init_exits(
    key: jax.Array,
    config: BertConfig,
    num_labels: int,
    *,
    ffnn_size: int | None = None,
    num_exits: int | None = None,
    casing: bool = False,
) -> Params:
    """Initialise M stacked biaffine exits (``StackedExits``) with K = ``num_labels`` classes (0 = no entity).

    ``ffnn_size``: hidden size of Yu et al.'s start/end feed-forward projections (None: none,
    the paper's default). ``casing``: each exit also gets its zero shape embedding ``shape_emb``
    ``{"embedding": [S, d]}`` (``model.casing``); the other parameters are those drawn without it.
    """
    M = num_exits or config.num_layers
    words = jnp.zeros((M, 1, 1, config.hidden_size), jnp.float32)
    shapes = jnp.ones((M, 1, 1), jnp.int32) if casing else None
    p = StackedExits(num_labels, ffnn_size, NUM_SHAPES if casing else 0).init(key, words, shapes)["params"]
    return jax.tree.map(lambda x: x.astype(config.jnp_dtype), p)


def biaffine(p: Params, words: jax.Array, word_shape: jax.Array | None = None) -> jax.Array:
    """One exit's span table (``BiaffineExit``). p: a single (unstacked) exit; words [B, L, d] -> [B, L, L, K].

    ``word_shape`` [B, L]: the words' shape ids, read when the exit has a shape embedding
    (``model.casing``; required then), ignored otherwise.
    """
    return _exit_module(p).apply({"params": p}, words, word_shape)


def exit_inputs(hidden: jax.Array, batch: dict[str, Any], pooling: str = "first",
                ) -> tuple[jax.Array, jax.Array | None]:
    """What an exit reads of one layer: ``(words [B, L, d], word_shape [B, L] or None)``.

    words: ``word_vectors`` of the layer's subword states ``hidden`` [B, T, d] (NOTES item 6);
    word_shape: the batch's shape ids (``model.casing``), which the exit embeds and adds to the
    words itself (``BiaffineExit``). Every caller of an exit (training, the engine, continuous
    batching, the offline replay) goes through here: ``biaffine(p, *exit_inputs(h, batch))``.
    """
    words = word_vectors(hidden, batch["word_index"], batch["word_mask"], pooling, batch.get("word_end"))
    return words, batch.get("word_shape")


def compress_exits(exit_params: Params, rank: int) -> Params:
    """Low-rank exits for fast inference: each U [h, K, h] -> core [r, K, r] and P, Q [h, r].

    The bilinear term costs L h^2 K per table, about half a MiniLM layer at L = 40; most of an
    early-exit engine's overhead (it runs an exit at every layer it passes). A truncated
    higher-order SVD (Tucker) keeps the r leading directions of U's start and end modes:
    ``U_k ~ P C_k Q^T``, so ``h_s^T U_k h_e ~ (P^T h_s)^T C_k (Q^T h_e)`` costs 2 L h r + L r^2 K
    + L^2 r K. W and b stay exact. No retraining; the F1 cost is measured (bench/latency.py).
    ``rank`` >= h returns the exits unchanged. Works on stacked ([M, ...]) exit pytrees.
    """
    U = np.asarray(exit_params["U"], np.float32)  # [M, h, K, h]
    M, h, K, _ = U.shape
    if rank <= 0 or rank >= h:
        return exit_params
    Ps, Qs, Cs = [], [], []
    for u in U:
        P = np.linalg.svd(u.reshape(h, K * h), full_matrices=False)[0][:, :rank]  # start mode
        Q = np.linalg.svd(u.transpose(2, 0, 1).reshape(h, h * K), full_matrices=False)[0][:, :rank]  # end mode
        Ps.append(P)
        Qs.append(Q)
        Cs.append(np.einsum("ikj,ia,jb->akb", u, P, Q))
    dtype = exit_params["U"].dtype
    out = dict(exit_params)
    out.update(U=jnp.asarray(np.stack(Cs), dtype), P=jnp.asarray(np.stack(Ps), dtype),
               Q=jnp.asarray(np.stack(Qs), dtype))
    return out


def select_exit(exit_params: Params, m: jax.Array | int) -> Params:
    """Exit m's parameters (m 0-based, may be traced)."""
    return jax.tree.map(lambda w: lax.dynamic_index_in_dim(w, m, 0, keepdims=False), exit_params)


def exit_logits(exit_params: Params, m: jax.Array | int, words: jax.Array,
                word_shape: jax.Array | None = None) -> jax.Array:
    """Biaffine exit m (0-based, may be traced): words [B, L, d] -> logits [B, L, L, K] (``biaffine``)."""
    return biaffine(select_exit(exit_params, m), words, word_shape)


def all_exit_logits(
    config: BertConfig,
    params: Params,
    exit_params: Params,
    batch: dict[str, Any],
    *,
    pooling: str = "first",
    rng: jax.Array | None = None,
) -> jax.Array:
    """Every exit's logits from one encoder pass: [M, B, L, L, K] (``VeeBert`` on these parameters).

    ``batch``: ``input_ids``, ``attention_mask`` [B, T]; ``word_index``, ``word_mask`` [B, L];
    optional ``token_type_ids`` [B, T] and ``word_end`` [B, L] (for mean pooling); ``word_shape``
    [B, L] when the exits have shape embeddings (``model.casing``).
    ``rng``: dropout key (None = deterministic).
    """
    module = VeeBert(config, exit_params["b"].shape[-1], _exit_module(exit_params).ffnn_size, pooling,
                     casing="shape_emb" in exit_params, int8=is_int8(params["layers"]))
    return module.apply({"params": {"encoder": params, "exits": exit_params}}, batch, deterministic=rng is None,
                        rngs={} if rng is None else {"dropout": rng})
