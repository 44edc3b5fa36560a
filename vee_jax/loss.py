"""The training loss: per-exit masked cross-entropy (Eq. 4) and the weighted average (Eq. 5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def valid_cells(lengths: jax.Array, L: int) -> jax.Array:
    """[...] sentence lengths -> [..., L, L] bool, True where s <= e < length (NOTES item 3).

    The one definition of a table's valid cells: the loss, every measure and the decoding read
    only these, so results do not depend on padding.
    """
    s = jnp.arange(L)[:, None]
    e = jnp.arange(L)[None, :]
    return (s <= e) & (e < jnp.asarray(lengths)[..., None, None])


def exit_losses(
    logits: jax.Array,
    gold: jax.Array,
    lengths: jax.Array,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The layer-weighted loss of Eq. 5 over the per-exit losses of Eq. 4.

    Args:
      logits: [M, B, L, L, K] every exit's span table.
      gold: [B, L, L] class ids (0 = no entity); cells outside the valid triangle are ignored.
      lengths: [B] number of words of each sentence.
      weights: [M] exit weights; default m for exit m (1-based), the relative cost of exit m.
    Returns:
      (loss, per_exit [M]). Each per-exit loss is the cross-entropy summed over valid cells
      s <= e < length and divided by the number of valid cells in the batch (the paper's plain
      sum only rescales the learning rate, NOTES item 8); loss = sum_m w_m L_m / sum_m w_m.
    """
    M, _, L = logits.shape[:3]
    mask = valid_cells(lengths, L).astype(jnp.float32)  # [B, L, L]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, gold[None, ..., None].astype(jnp.int32), axis=-1)[..., 0]
    n = jnp.maximum(mask.sum(), 1.0)
    per_exit = (nll * mask[None]).sum(axis=(1, 2, 3)) / n
    if weights is None:
        weights = jnp.arange(1, M + 1, dtype=jnp.float32)
    loss = (weights * per_exit).sum() / weights.sum()
    return loss, per_exit
