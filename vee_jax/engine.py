"""The online early-exit engine: ``vee_infer``, one jitted ``lax.while_loop`` over the layers.

Each iteration runs one transformer layer (``transformer_layer``), that layer's biaffine exit
(``biaffine``), a softmax, and the policy's ``vote_step``. The loop carries::

    hidden     [B, T, d]        the current hidden state
    m          int32 []         the next layer to run (0-based)
    history    {"tables": [M, B, L, L, K], "kl": [M, B]}  every layer's table so far and, for
                                the KL measure, its self term (VEE only; others carry none)
    acc        [B, L, L, K]     running sum of the tables (cross-layer ensemble only)
    count      [B] int32        the vote count at the exit layer (VEE)
    exited     [B] bool         sentences that have stopped
    table      [B, L, L, K]     the prediction at the exit
    exit_layer [B] int32        1-based exit layer (0 while running)

and stops when every sentence has exited. In a batch each sentence exits on its own: once it
has exited its table, exit layer and count are frozen while the others go on, so results
equal running every sentence alone (up to float rounding that depends on the batch shape).
At batch size 1 (the paper's setting) no layer after the exit is computed.

Speed (bench/latency.py, README "Performance"):

- ``prepare`` lays the weights out for inference: one pytree per layer and per exit, picked
  by ``lax.switch`` on the traced layer index. Indexing stacked ``[M, ...]`` weights with a
  traced index copies the layer's weights (7 MB for MiniLM) at every iteration; a switch
  branch reads its own buffers. Stacked params still work (training's layout), slower.
- ``prepare(..., exit_rank=r)`` swaps the exits for low-rank ones (``exits.compress_exits``):
  the engine pays an exit at every layer it passes, and the exact biaffine exit costs about
  half a MiniLM layer.
- ``prepare(..., weights="int8")`` runs the six dense layers of every transformer layer as
  int8 x int8 -> int32 dots (``vee_jax.int8``; weights per output channel, activations per
  token): about half the float32 layer's time on XLA:CPU, a deviation from the paper.
- The KL vote reads each earlier table once, as a multiply-add with the log of the new table:
  each table's self term sum p log p is computed once, when it is written
  (``measures.kl_from_self_term``), not at every later vote.
- The policy's numbers (tau, patience, budget layer) are traced arguments
  (``Policy.split``): one compilation per policy kind and batch shape.
- A policy whose exit does not depend on the tables (``Policy.fixed_exit``: ``full``,
  ``budget``), without ensemble, computes only the exit it returns. When that layer is static
  (``full``) the program is straight-line code, one block per layer, no loop of ``lax.switch``
  branches: simpler for XLA, never slower, a few percent at batch 1 at most (docs/decisions.md).

The engine asks the policy, never its kind: ``needs_history`` / ``history_kl`` (what the loop
carries), ``stop`` (through ``policies.vote_step``), ``fixed_exit`` and ``split``.

Rows whose ``attention_mask`` is all zero are batch padding (``data.collate`` adds them): they
are exited before layer 1 with exit layer 0 and a zero table, so they never keep the loop going.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .bert import (
    BertConfig,
    Params,
    attention_bias,
    embed,
    stacked_index,
    transformer_layer,
)
from .exits import biaffine, compress_exits, exit_inputs, select_exit
from .int8 import quantize_layer
from .measures import kl_self_term
from .policies import Policy, check_policy, vote_step

_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "word_index", "word_mask", "word_end", "word_shape",
           "lengths")


WEIGHTS = ("float32", "int8")


def prepare(config: BertConfig, params: Params, exit_params: Params, *, exit_rank: int = 0,
            weights: str = "float32") -> Params:
    """The inference layout: ``{"encoder": {..., "layers": (layer 0, ..)}, "exits": (exit 0, ..)}``.

    One pytree per layer (ALBERT's shared weights repeat) and per exit, so that ``vee_infer``
    reads each layer's weights in place. ``exit_rank`` > 0 compresses every exit to that
    rank (``exits.compress_exits``). ``weights="int8"``: every layer's dense kernels as int8
    with per-channel scales (``int8.quantize_layer``); the embeddings and exits stay as trained.
    Do this once per model: it copies the weights.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    M = config.num_layers
    exits = compress_exits(exit_params, exit_rank) if exit_rank else exit_params
    stacked = quantize_layer(params["layers"]) if weights == "int8" else params["layers"]
    layers = tuple(jax.tree.map(lambda w: w[stacked_index(config, m)], stacked) for m in range(M))
    encoder = {k: v for k, v in params.items() if k != "layers"}
    encoder["layers"] = layers
    return {"encoder": encoder, "exits": tuple(select_exit(exits, m) for m in range(M))}


def _is_prepared(params: Params) -> bool:
    return isinstance(params.get("layers"), tuple)


def _layer_and_exit(config: BertConfig, encoder: Params, exits: Any, bias: jax.Array, words_of: Callable):
    """``step(m, hidden, with_exit) -> (hidden, logits or None)`` for either weight layout.

    ``words_of(hidden)``: the exit's ``exits.exit_inputs`` of the layer's output."""

    def one(lp, ep, hidden, with_exit):
        hidden = transformer_layer(config, lp, hidden, bias)
        return hidden, (biaffine(ep, *words_of(hidden)) if with_exit else None)

    if _is_prepared(encoder):
        def step(m, hidden, with_exit):
            branches = [functools.partial(one, lp, ep, with_exit=with_exit)
                        for lp, ep in zip(encoder["layers"], exits)]
            return lax.switch(m, branches, hidden)
        return step

    def step(m, hidden, with_exit):  # stacked weights: dynamic slices (copies) of layer m
        lp = jax.tree.map(lambda w: lax.dynamic_index_in_dim(w, stacked_index(config, m), 0, False),
                          encoder["layers"])
        return one(lp, select_exit(exits, m), hidden, with_exit)
    return step


def empty_history(policy: Policy, M: int, B: int, L: int, K: int) -> dict | None:
    """The history before layer 1 of a policy that ``needs_history`` (VEE): ``{"tables":
    [M, B, L, L, K]}`` zeros, plus ``"kl": [M, B]`` (each table's ``measures.kl_self_term``,
    written with the table) when it reads them (``history_kl``); None for the other policies."""
    if not policy.needs_history:
        return None
    history = {"tables": jnp.zeros((M, B, L, L, K), jnp.float32)}
    if policy.history_kl:
        history["kl"] = jnp.zeros((M, B), jnp.float32)
    return history


def _layer_vote(step: Callable, policy: Policy, m: jax.Array, hidden: jax.Array, history: dict | None,
                lengths: jax.Array, knobs: dict, num_layers: int):
    """Layer m, its exit's softmax, the table into the history (VEE), the vote: one iteration.

    Returns ``(hidden, probs [B, L, L, K], history, stop [B], count [B])``.
    """
    hidden, logits = step(m, hidden, True)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    tables = kl = None
    if history is not None:
        tables = lax.dynamic_update_index_in_dim(history["tables"], probs, m, 0)
        # The vote reads layer m's table back from the history: else XLA:CPU fuses the softmax
        # into the distance and recomputes it there with other rounding (a fused multiply-add)
        # than the copy it stored, so identical tables sit ~1e-9 apart and a tie at tau = 0 is
        # missed (tests/test_ties.py).
        probs = lax.dynamic_index_in_dim(tables, m, 0, keepdims=False)
        if "kl" in history:  # the new table's self term, once; later votes reuse it
            kl = lax.dynamic_update_index_in_dim(history["kl"], kl_self_term(probs, lengths), m, 0)
        history = {"tables": tables} | ({"kl": kl} if kl is not None else {})
    stop, count = vote_step(policy, tables, probs, m, lengths, num_layers=num_layers, knobs=knobs, history_kl=kl)
    return hidden, probs, history, stop, count


def _static_layer(config: BertConfig, encoder: Params, m: int) -> Params:
    """Layer m's weights (m a Python int) in either layout: a static slice of stacked weights."""
    if _is_prepared(encoder):
        return encoder["layers"][m]
    return jax.tree.map(lambda w: w[stacked_index(config, m)], encoder["layers"])


def _exit_only(exits: Any, m: jax.Array | int, inputs: tuple) -> jax.Array:
    """Exit m's logits alone (for a ``fixed_exit``, computed once after the loop); ``inputs``:
    ``exits.exit_inputs``' pair. A Python int m reads that exit directly, no switch."""
    if isinstance(exits, tuple):
        if isinstance(m, int):
            return biaffine(exits[m], *inputs)
        return lax.switch(m, [functools.partial(biaffine, ep) for ep in exits], *inputs)
    return biaffine(select_exit(exits, m), *inputs)


@functools.partial(jax.jit, static_argnames=("config", "policy", "pooling"))
def _infer(config: BertConfig, encoder: Params, exits: Any, batch: dict, knobs: dict, policy: Policy, pooling: str):
    M = config.num_layers
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lengths = batch["lengths"]
    B, L = batch["word_index"].shape
    K = (exits[0] if isinstance(exits, tuple) else exits)["b"].shape[-1]

    h0 = embed(config, encoder, ids, mask, batch.get("token_type_ids"))
    bias = attention_bias(mask, h0.dtype)
    padding_row = mask.sum(-1) == 0

    def words_of(hidden):
        return exit_inputs(hidden, batch, pooling)

    step = _layer_and_exit(config, encoder, exits, bias, words_of)

    stop_at = policy.fixed_exit(M, knobs)
    if stop_at is not None and not policy.ensemble:
        # Every sentence exits at the same layer: run the layers, then that one exit.
        if isinstance(stop_at, jax.core.Tracer):  # a traced layer (budget): one loop for every layer
            hidden = lax.fori_loop(0, stop_at, lambda m, h: step(m, h, False)[0], h0)
        else:  # a static layer (full): straight-line code, no loop or switch around each layer
            hidden = h0
            for m in range(stop_at):
                hidden = transformer_layer(config, _static_layer(config, encoder, m), hidden, bias)
        probs = jax.nn.softmax(_exit_only(exits, stop_at - 1, words_of(hidden)).astype(jnp.float32), -1)
        real = ~padding_row
        return {"probs": jnp.where(real[:, None, None, None], probs, 0.0),
                "exit_layer": jnp.where(real, stop_at, 0), "votes": jnp.zeros(B, jnp.int32),
                "layers_run": stop_at}

    zeros = jnp.zeros((B, L, L, K), jnp.float32)
    init = {
        "hidden": h0,
        "m": jnp.int32(0),
        "history": empty_history(policy, M, B, L, K),
        "acc": zeros if policy.ensemble else None,
        "count": jnp.zeros(B, jnp.int32),
        "exited": padding_row,
        "table": zeros,
        "exit_layer": jnp.zeros(B, jnp.int32),
    }

    def cond(c):
        return (c["m"] < M) & ~jnp.all(c["exited"])

    def body(c):
        m = c["m"]
        hidden, probs, history, stop, count = _layer_vote(step, policy, m, c["hidden"], c["history"], lengths,
                                                          knobs, M)
        acc, out = c["acc"], probs
        if policy.ensemble:  # Sec. 5.5.1: mean of the tables of layers 1..m (a running sum)
            acc = acc + probs
            out = acc / (m + 1).astype(jnp.float32)
        new = stop & ~c["exited"]  # sentences exiting at this layer; earlier exits stay frozen
        return {
            "hidden": hidden,
            "m": m + 1,
            "history": history,
            "acc": acc,
            "count": jnp.where(new, count, c["count"]),
            "exited": c["exited"] | stop,
            "table": jnp.where(new[:, None, None, None], out, c["table"]),
            "exit_layer": jnp.where(new, m + 1, c["exit_layer"]),
        }

    c = lax.while_loop(cond, body, init)
    return {"probs": c["table"], "exit_layer": c["exit_layer"], "votes": c["count"], "layers_run": c["m"]}


@functools.partial(jax.jit, static_argnames=("config",))
def embed_step(config: BertConfig, encoder: Params, inputs: dict) -> jax.Array:
    """The embedding output h^(0) [B, T, d] of ``infer_inputs``' arrays, as its own jitted call."""
    return embed(config, encoder, inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids"))


@functools.partial(jax.jit, static_argnames=("config", "policy", "pooling"))
def layer_vote_step(config: BertConfig, encoder: Params, exits: Any, m: jax.Array, hidden: jax.Array,
                    history: dict | None, inputs: dict, knobs: dict, policy: Policy, pooling: str = "first"):
    """One iteration of ``vee_infer``'s loop as its own jitted call (host-driven loops, as in
    bench/latency.py's Python-loop variant; ``batched_infer`` has its own steps).

    m: 0-based layer (traced); hidden [B, T, d]; history: ``empty_history(...)`` before
    layer 1, then this function's output (VEE; else None).
    Returns ``(hidden, probs [B, L, L, K], history, stop [B] bool, count [B] int32)``, where
    ``probs`` is layer m's own table (no ensemble). The same functions as the fused loop, so
    the decisions are the same; what differs is a host round trip per layer.
    """
    bias = attention_bias(inputs["attention_mask"], hidden.dtype)
    words_of = lambda h: exit_inputs(h, inputs, pooling)  # noqa: E731
    step = _layer_and_exit(config, encoder, exits, bias, words_of)
    return _layer_vote(step, policy, m, hidden, history, inputs["lengths"], knobs, config.num_layers)


def infer_inputs(batch: dict[str, Any], pooling: str = "first") -> dict[str, jax.Array]:
    """The arrays ``vee_infer`` reads from a ``data.collate`` batch (``lengths`` filled in).

    Arrays are passed on as they are: numpy arrays go to the device inside the jitted call's
    own dispatch, which costs less than one ``jnp.asarray`` per key (bench/in_loop.py: the
    per-call overhead is paid by every sentence at batch 1, whatever layer it exits at).
    """
    inputs = {k: batch[k] for k in _INPUTS if k in batch and batch[k] is not None}
    if "lengths" not in inputs:
        mask = inputs["word_mask"]
        inputs["lengths"] = (mask.sum(-1).astype(np.int32) if isinstance(mask, np.ndarray)
                             else jnp.asarray(mask).sum(-1).astype(jnp.int32))
    if pooling != "mean":
        inputs.pop("word_end", None)
    return inputs


@functools.lru_cache(maxsize=1024)
def traced_policy(policy: Policy) -> tuple[Policy, dict[str, jax.Array]]:
    """``policy.split()`` with the knobs as device scalars (of the dtypes in ``policy.KNOBS``).

    Cached per policy (policies are frozen and hashable): making the scalars costs about
    0.13 ms a call, a tenth of a 2-layer exit at batch 1. Do not modify the returned dict.
    """
    static, knobs = policy.split()
    return static, {k: jnp.asarray(v, policy.KNOBS[k]) for k, v in knobs.items()}


def vee_infer(
    config: BertConfig,
    params: Params,
    exit_params: Params | tuple,
    batch: dict[str, Any],
    policy: Policy,
    *,
    pooling: str = "first",
) -> dict[str, jax.Array]:
    """Early-exit inference of a batch under ``policy`` (one compiled ``lax.while_loop``).

    Args:
      config: the encoder's ``BertConfig`` (static).
      params, exit_params: the encoder pytree and the M exits, either as trained (stacked on
        a leading layer axis) or, faster, as laid out by ``prepare``:
        ``model = prepare(config, params, exits); vee_infer(config, model["encoder"],
        model["exits"], batch, policy)``.
      batch: ``input_ids``, ``attention_mask`` [B, T]; ``word_index``, ``word_mask`` [B, L];
        optional ``token_type_ids`` [B, T], ``word_end`` [B, L] (mean pooling) and ``lengths``
        [B] (default: ``word_mask.sum(-1)``). Other keys (``gold``) are ignored.
      policy: a ``policies`` config. Its kind, measure and ensemble flag are static (one
        compilation per batch shape); tau, patience and the budget layer are traced.
      pooling: "first" or "mean" subword -> word (as in training).
    Returns:
      ``probs`` [B, L, L, K] the table at the exit (float32; the ensemble mean with
      ``policy.ensemble``); ``exit_layer`` [B] int32, 1-based (0 for padding rows);
      ``votes`` [B] VEE's count at the exit layer; ``layers_run`` [] how many layers the
      loop computed (the largest exit layer of the batch).
    """
    check_policy(policy, config.num_layers)
    static, knobs = traced_policy(policy)
    return _infer(config, params, exit_params, infer_inputs(batch, pooling), knobs, static, pooling)


def compile_vee_infer(config: BertConfig, params: Params, exit_params: Params | tuple, batch: dict[str, Any],
                      policy: Policy, *, pooling: str = "first") -> None:
    """Compile ``vee_infer`` for ``batch``'s shapes and ``policy``'s program, without running it.

    Takes ``vee_infer``'s arguments (``batch`` may be all padding: only its shapes and dtypes
    count). ``jax.jit`` keeps the executable of ``.lower(...).compile()`` in the caches its calls
    read, so a later ``vee_infer`` on those shapes and the same static policy compiles nothing.
    """
    check_policy(policy, config.num_layers)
    static, knobs = traced_policy(policy)
    _infer.lower(config, params, exit_params, infer_inputs(batch, pooling), knobs, static, pooling).compile()


def compilations() -> int:
    """How many (policy kind, batch shape) variants the engine has compiled in this process."""
    return _infer._cache_size()
