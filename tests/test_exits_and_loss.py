"""The biaffine exit (Eq. 3) and the weighted loss (Eq. 4-5) against numpy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vee_jax import BertConfig, all_exit_logits, exit_logits, exit_losses, init_exits, word_vectors
from vee_jax.bert import embed

from helpers import random_params

CFG = BertConfig(vocab_size=50, hidden_size=8, num_layers=3, num_heads=2, intermediate_size=16, max_position=32)


def numpy_biaffine_cell_loop(p, words):
    """f(s,e) = h_s^T U h_e + W [h_s; h_e] + b, one cell at a time."""
    p = jax.tree.map(np.asarray, p)
    B, L, _ = words.shape
    K = p["b"].shape[-1]
    W = np.concatenate([p["W_start"], p["W_end"]], axis=0)  # the paper's 2h x K
    out = np.zeros((B, L, L, K))
    for b in range(B):
        if "ffnn" in p:
            hs_all = np.maximum(words[b] @ p["ffnn"]["start"]["kernel"] + p["ffnn"]["start"]["bias"], 0)
            he_all = np.maximum(words[b] @ p["ffnn"]["end"]["kernel"] + p["ffnn"]["end"]["bias"], 0)
        else:
            hs_all = he_all = words[b]
        for s in range(L):
            for e in range(L):
                hs, he = hs_all[s], he_all[e]
                for k in range(K):
                    out[b, s, e, k] = hs @ p["U"][:, k, :] @ he
                out[b, s, e] += np.concatenate([hs, he]) @ W + p["b"]
    return out


@pytest.mark.parametrize("ffnn", [None, 5])
def test_biaffine_matches_cell_loop(ffnn):
    ep = init_exits(jax.random.PRNGKey(0), CFG, num_labels=4, ffnn_size=ffnn)
    ep = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(1), x.shape), ep)  # nonzero b
    words = np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32)
    for m in range(3):
        ours = np.asarray(exit_logits(ep, jnp.int32(m), jnp.asarray(words)))
        ref = numpy_biaffine_cell_loop(jax.tree.map(lambda x: x[m], ep), words)
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_word_vectors_first_and_mean():
    h = np.random.default_rng(1).normal(size=(1, 6, 3)).astype(np.float32)
    idx = np.array([[1, 2, 4, 0]])
    end = np.array([[2, 4, 5, 0]])
    mask = np.array([[1, 1, 1, 0]])
    first = np.asarray(word_vectors(jnp.asarray(h), jnp.asarray(idx), jnp.asarray(mask)))
    np.testing.assert_allclose(first[0, :3], h[0, [1, 2, 4]])
    assert (first[0, 3] == 0).all()
    mean = np.asarray(word_vectors(jnp.asarray(h), jnp.asarray(idx), jnp.asarray(mask), "mean", jnp.asarray(end)))
    np.testing.assert_allclose(mean[0, 1], h[0, 2:4].mean(0), rtol=1e-6)
    np.testing.assert_allclose(mean[0, 0], h[0, 1], rtol=1e-6)


def numpy_loss(logits, gold, lengths, weights=None):
    M, B, L, _, K = logits.shape
    per = np.zeros(M)
    n = 0
    for b in range(B):
        for s in range(lengths[b]):
            for e in range(s, lengths[b]):
                n += 1
                for m in range(M):
                    z = logits[m, b, s, e].astype(np.float64)
                    lse = np.log(np.exp(z - z.max()).sum()) + z.max()
                    per[m] += lse - z[gold[b, s, e]]
    per /= max(n, 1)
    w = np.arange(1, M + 1) if weights is None else np.asarray(weights)
    return (w * per).sum() / w.sum(), per


def test_loss_matches_numpy_and_ignores_invalid_cells():
    rng = np.random.default_rng(2)
    M, B, L, K = 3, 3, 5, 4
    logits = rng.normal(size=(M, B, L, L, K)).astype(np.float32)
    gold = rng.integers(0, K, size=(B, L, L))
    lengths = np.array([5, 2, 0])
    loss, per = exit_losses(jnp.asarray(logits), jnp.asarray(gold), jnp.asarray(lengths))
    ref_loss, ref_per = numpy_loss(logits, gold, lengths)
    np.testing.assert_allclose(np.asarray(per), ref_per, rtol=1e-5)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    # Weighted average with weight m for exit m (Eq. 5): hand check of the average itself.
    np.testing.assert_allclose(float(loss), (1 * ref_per[0] + 2 * ref_per[1] + 3 * ref_per[2]) / 6, rtol=1e-5)
    # Garbage below the diagonal, beyond the length, or in the empty sentence changes nothing.
    s, e = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    invalid = (s > e)[None] | (e[None] >= lengths[:, None, None])
    logits2 = np.where(invalid[None, ..., None], 1e3 * rng.normal(size=logits.shape), logits).astype(np.float32)
    gold2 = np.where(invalid, rng.integers(0, K, size=gold.shape), gold)
    loss2, _ = exit_losses(jnp.asarray(logits2), jnp.asarray(gold2), jnp.asarray(lengths))
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)


def test_loss_custom_weights_select_last_exit():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 2, 4, 4, 3)).astype(np.float32)
    gold = rng.integers(0, 3, size=(2, 4, 4))
    loss, per = exit_losses(jnp.asarray(logits), jnp.asarray(gold), jnp.asarray([4, 3]), jnp.asarray([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(float(loss), float(per[2]), rtol=1e-6)


def test_padding_changes_no_valid_logit_or_loss():
    """A sentence padded to more subwords and more words keeps its valid cells and loss."""
    params = random_params(CFG)
    ep = init_exits(jax.random.PRNGKey(3), CFG, num_labels=3)
    ids = np.array([[2, 7, 8, 9, 10, 3]])
    word_index = np.array([[1, 2, 4]])
    gold = np.zeros((1, 3, 3), np.int32)
    gold[0, 0, 1] = 2
    gold[0, 2, 2] = 1

    def run(T, L):
        batch = {
            "input_ids": jnp.asarray(np.pad(ids, ((0, 0), (0, T - ids.shape[1])))),
            "attention_mask": jnp.asarray((np.arange(T) < ids.shape[1])[None].astype(np.int32)),
            "word_index": jnp.asarray(np.pad(word_index, ((0, 0), (0, L - 3)))),
            "word_mask": jnp.asarray((np.arange(L) < 3)[None].astype(np.int32)),
        }
        logits = all_exit_logits(CFG, params, ep, batch)
        loss, _ = exit_losses(logits, jnp.asarray(np.pad(gold, ((0, 0), (0, L - 3), (0, L - 3)))), jnp.asarray([3]))
        return np.asarray(logits), float(loss)

    small, loss_small = run(6, 3)
    big, loss_big = run(11, 7)
    np.testing.assert_allclose(big[:, :, :3, :3], small, atol=1e-5)
    np.testing.assert_allclose(loss_big, loss_small, rtol=1e-6)


def test_embed_dropout_only_with_rng():
    params = random_params(CFG)
    ids = jnp.asarray([[2, 5, 6, 3]])
    mask = jnp.ones_like(ids)
    a = embed(CFG, params, ids, mask)
    b = embed(CFG, params, ids, mask)
    c = embed(CFG, params, ids, mask, rng=jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


# --- low-rank exits (exits.compress_exits, for fast inference) --------------------------------
def _orthonormal(rng, h, r):
    return np.linalg.qr(rng.normal(size=(h, r)))[0]


def test_compress_exits_is_exact_at_the_true_rank_and_not_below():
    """U built with multilinear rank (r, r) by hand: rank-r compression reproduces the exit's
    logits; rank r-2 cannot. Also P and Q have orthonormal columns and W, b are untouched."""
    from vee_jax.exits import biaffine, compress_exits, select_exit

    rng = np.random.default_rng(0)
    M, h, K, r = 2, 12, 3, 5
    U = np.stack([np.einsum("akb,ia,jb->ikj", rng.normal(size=(r, K, r)), _orthonormal(rng, h, r),
                            _orthonormal(rng, h, r)) for _ in range(M)])
    ex = {"U": jnp.asarray(U, jnp.float32), "W_start": jnp.asarray(rng.normal(size=(M, h, K)), jnp.float32),
          "W_end": jnp.asarray(rng.normal(size=(M, h, K)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(M, K)), jnp.float32)}
    words = jnp.asarray(rng.normal(size=(2, 7, h)), jnp.float32)
    exact = compress_exits(ex, r)
    low = compress_exits(ex, r - 2)
    assert exact["U"].shape == (M, r, K, r) and exact["P"].shape == (M, h, r)
    assert compress_exits(ex, h) is ex
    for m in range(M):
        ref = np.asarray(biaffine(select_exit(ex, m), words))
        np.testing.assert_allclose(np.asarray(biaffine(select_exit(exact, m), words)), ref, atol=1e-4)
        assert np.abs(np.asarray(biaffine(select_exit(low, m), words)) - ref).max() > 1e-2
        P = np.asarray(exact["P"][m])
        np.testing.assert_allclose(P.T @ P, np.eye(r), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(exact["W_start"]), np.asarray(ex["W_start"]))
