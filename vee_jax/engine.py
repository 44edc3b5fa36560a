"""The online early-exit engine: ``vee_infer``, one jitted ``lax.while_loop`` over the layers.

Each iteration runs one transformer layer (``layer_step``), that layer's biaffine exit
(``exit_logits``), a softmax, and the policy's ``vote_step``. The loop carries::

    hidden     [B, T, d]        the current hidden state
    m          int32 []         the next layer to run (0-based)
    history    [M, B, L, L, K]  every layer's table so far (VEE only; others carry none)
    acc        [B, L, L, K]     running sum of the tables (cross-layer ensemble only)
    count      [B] int32        the vote count at the exit layer (VEE)
    exited     [B] bool         sentences that have stopped
    table      [B, L, L, K]     the prediction at the exit
    exit_layer [B] int32        1-based exit layer (0 while running)

and stops when every sentence has exited. In a batch each sentence exits on its own: once it
has exited its table, exit layer and count are frozen while the others go on, so results
equal running every sentence alone (up to float rounding that depends on the batch shape).
At batch size 1 (the paper's setting) no layer after the exit is computed.

Rows whose ``attention_mask`` is all zero are batch padding (``data.collate`` adds them): they
are exited before layer 1 with exit layer 0 and a zero table, so they never keep the loop going.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from .bert import BertConfig, Params, embed, layer_step, word_vectors
from .exits import exit_logits
from .policies import Policy, VeePolicy, check_policy, vote_step

_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "word_index", "word_mask", "word_end", "lengths")


@functools.partial(jax.jit, static_argnames=("config", "policy", "pooling"))
def _infer(config: BertConfig, params: Params, exit_params: Params, batch: dict, policy: Policy, pooling: str):
    M = config.num_layers
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lengths = batch["lengths"]
    B, L = batch["word_index"].shape
    K = exit_params["b"].shape[-1]
    vee = isinstance(policy, VeePolicy)

    h0 = embed(config, params, ids, mask, batch.get("token_type_ids"))
    padding_row = mask.sum(-1) == 0
    zeros = jnp.zeros((B, L, L, K), jnp.float32)
    init = {
        "hidden": h0,
        "m": jnp.int32(0),
        "history": jnp.zeros((M, B, L, L, K), jnp.float32) if vee else None,
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
        hidden = layer_step(config, params, m, c["hidden"], mask)
        words = word_vectors(hidden, batch["word_index"], batch["word_mask"], pooling, batch.get("word_end"))
        probs = jax.nn.softmax(exit_logits(exit_params, m, words).astype(jnp.float32), axis=-1)
        history = c["history"]
        if vee:
            history = lax.dynamic_update_index_in_dim(history, probs, m, 0)
        stop, count = vote_step(policy, history, probs, m, lengths, num_layers=M)
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


def vee_infer(
    config: BertConfig,
    params: Params,
    exit_params: Params,
    batch: dict[str, Any],
    policy: Policy,
    *,
    pooling: str = "first",
) -> dict[str, jax.Array]:
    """Early-exit inference of a batch under ``policy`` (one compiled ``lax.while_loop``).

    Args:
      config: the encoder's ``BertConfig`` (static).
      params: encoder pytree (stacked layers); exit_params: the M stacked biaffine exits.
      batch: ``input_ids``, ``attention_mask`` [B, T]; ``word_index``, ``word_mask`` [B, L];
        optional ``token_type_ids`` [B, T], ``word_end`` [B, L] (mean pooling) and ``lengths``
        [B] (default: ``word_mask.sum(-1)``). Other keys (``gold``) are ignored.
      policy: a ``policies`` config (static: one compilation per policy and batch shape, so
        each new tau recompiles; sweep thresholds with ``offline.replay`` instead).
      pooling: "first" or "mean" subword -> word (as in training).
    Returns:
      ``probs`` [B, L, L, K] the table at the exit (float32; the ensemble mean with
      ``policy.ensemble``); ``exit_layer`` [B] int32, 1-based (0 for padding rows);
      ``votes`` [B] VEE's count at the exit layer; ``layers_run`` [] how many layers the
      loop computed (the largest exit layer of the batch).
    """
    check_policy(policy, config.num_layers)
    inputs = {k: jnp.asarray(batch[k]) for k in _INPUTS if k in batch and batch[k] is not None}
    if "lengths" not in inputs:
        inputs["lengths"] = inputs["word_mask"].sum(-1).astype(jnp.int32)
    if pooling != "mean":
        inputs.pop("word_end", None)
    return _infer(config, params, exit_params, inputs, policy, pooling)
