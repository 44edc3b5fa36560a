"""The loss that ``train_step`` really optimises, against a numpy reference of Eq. 4-5.

``loss.py``'s tests cover ``exit_losses`` with its default weights; training passes
``ModelSpec.exit_weights()`` instead, so the weights of Eq. 5 are checked here, through
``train_step`` itself. Mutant this catches (checked by hand): ``exit_weights`` returning
``m - 1`` (or any weights other than m for exit m) in ``training.py``.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vee_jax import BertConfig
from vee_jax.training import ModelSpec, forward_logits, init_state, make_optimizer, train_step

from helpers import random_params

# No dropout: the logits train_step sees are the deterministic forward pass.
CFG = BertConfig(vocab_size=40, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32, max_position=32,
                 hidden_dropout=0.0, attention_dropout=0.0)
K = 3


def tiny_batch(seed: int = 0) -> dict:
    """Three sentences of 4, 2 and 0 words (one subword each), padded to 8 subwords, 5 words."""
    rng = np.random.default_rng(seed)
    B, T, L = 3, 8, 5
    lengths = np.array([4, 2, 0], np.int32)
    batch = {k: np.zeros((B, T), np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    batch.update({k: np.zeros((B, L), np.int32) for k in ("word_index", "word_mask")})
    batch["gold"] = np.zeros((B, L, L), np.int32)
    for b, n in enumerate(lengths):
        batch["input_ids"][b, :n + 2] = [2, *rng.integers(5, CFG.vocab_size, n), 3]
        batch["attention_mask"][b, :n + 2] = 1
        batch["word_index"][b, :n] = np.arange(1, n + 1)
        batch["word_mask"][b, :n] = 1
        batch["gold"][b] = rng.integers(0, K, (L, L))  # junk outside the valid cells must not count
    batch["lengths"] = lengths
    return batch


def reference_loss(logits: np.ndarray, gold: np.ndarray, lengths: np.ndarray, weights: np.ndarray):
    """Eq. 4 per exit (cross-entropy summed over cells s <= e < length, over the batch's valid
    cell count, NOTES item 8) and Eq. 5's weighted average, in float64 loops."""
    M = logits.shape[0]
    per_exit = np.zeros(M)
    cells = 0
    for b, n in enumerate(lengths):
        for s in range(n):
            for e in range(s, n):
                cells += 1
                for m in range(M):
                    z = logits[m, b, s, e].astype(np.float64)
                    logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
                    per_exit[m] -= logp[gold[b, s, e]]
    per_exit /= max(cells, 1)
    return float((weights * per_exit).sum() / weights.sum()), per_exit


@pytest.mark.parametrize("exits", ["all", "last"])
def test_train_step_loss_is_eq5_with_exit_weights_m(exits):
    spec = ModelSpec(CFG, num_labels=K, exits=exits)
    opt = make_optimizer(10)
    state = init_state(spec, random_params(CFG), opt, seed=3)
    batch = tiny_batch()
    logits = np.asarray(forward_logits(spec, state["params"], batch))  # deterministic: no dropout
    M = CFG.num_layers
    if exits == "all":
        assert logits.shape[0] == M
        weights = np.arange(1, M + 1, dtype=np.float64)  # Eq. 5: weight m for exit m (1-based)
    else:
        assert logits.shape[0] == 1
        weights = np.ones(1)
    want, want_per_exit = reference_loss(logits, batch["gold"], batch["lengths"], weights)
    _, metrics = train_step(state, batch, spec=spec, optimizer=opt)
    np.testing.assert_allclose(np.asarray(metrics["per_exit"]), want_per_exit, rtol=1e-5)
    assert float(metrics["loss"]) == pytest.approx(want, rel=1e-5)
    if exits == "all":  # the weights matter here: an unweighted mean is visibly different
        assert abs(want_per_exit.mean() - want) > 1e-3 * want


def test_exit_weights_follow_eq5():
    """The weights themselves, independent of any loss: m for exit m, and one weight for 'last'."""
    np.testing.assert_array_equal(np.asarray(ModelSpec(CFG, K).exit_weights()), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(np.asarray(ModelSpec(CFG, K, exits="last").exit_weights()), [1.0])
    with pytest.raises(ValueError):
        ModelSpec(CFG, K, exits="some").exit_weights()
    assert jax.numpy.asarray(ModelSpec(CFG, K).exit_weights()).dtype == np.float32
