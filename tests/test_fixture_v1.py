"""A workdir written before the model became Flax modules still loads and gives the same numbers.

``tests/fixtures/v1`` was written by ``tests/fixtures/record_v1.py`` with the format-1 code
(pure functions over explicit pytrees): a random 2-layer backbone, an untrained workdir and
the outputs of that code on one batch. Today's code must read the workdir as it is and
reproduce every hidden state, every exit's logits and ``vee_infer``'s decisions within 1e-6,
and ``train_step``'s loss on the recorded logits.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v1"


@pytest.fixture(scope="module")
def fixture_v1(tmp_path_factory):
    """The fixture copied to a scratch folder (paths inside are relative to it), loaded."""
    from vee_jax.evaluate_cli import load_trained

    root = tmp_path_factory.mktemp("v1")
    for name in ("backbone", "workdir"):
        shutil.copytree(FIXTURE / name, root / name)
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        config, info, spec, state, tok = load_trained("workdir")
    finally:
        mp.undo()
    ref = dict(np.load(FIXTURE / "reference.npz"))
    batch = {k[len("batch_"):]: v for k, v in ref.items() if k.startswith("batch_")}
    return spec, state, batch, ref


def test_hidden_states_and_exit_logits_equal_the_recorded_ones(fixture_v1):
    from vee_jax import all_exit_logits, encode_layers

    spec, state, batch, ref = fixture_v1
    enc, ex = state["params"]["encoder"], state["params"]["exits"]
    hidden = encode_layers(spec.bert, enc, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    np.testing.assert_allclose(np.asarray(hidden), ref["hidden"], atol=1e-6, rtol=0)
    logits = all_exit_logits(spec.bert, enc, ex, batch)
    np.testing.assert_allclose(np.asarray(logits), ref["logits"], atol=1e-6 * max(1.0, np.abs(ref["logits"]).max()),
                               rtol=0)


def test_engine_decisions_equal_the_recorded_ones(fixture_v1):
    from vee_jax import vee_infer
    from vee_jax.engine import prepare
    from vee_jax.policies import VeePolicy

    spec, state, batch, ref = fixture_v1
    model = prepare(spec.bert, state["params"]["encoder"], state["params"]["exits"])
    out = jax.device_get(vee_infer(spec.bert, model["encoder"], model["exits"], batch, VeePolicy("kl", 0.05, 1)))
    np.testing.assert_array_equal(out["exit_layer"], ref["vee_exit_layer"])
    np.testing.assert_array_equal(out["votes"], ref["vee_votes"])
    np.testing.assert_allclose(out["probs"], ref["vee_probs"], atol=1e-6, rtol=0)


def test_train_step_loss_from_the_recorded_logits(fixture_v1):
    """train_step's first loss, dropout off, against Eq. 4-5 in numpy over the recorded logits.

    The recorded loss with dropout (``train_loss``) is not compared: dropout now draws from
    Flax's ``"dropout"`` rng stream, so the masks (not their distribution) changed."""
    import dataclasses

    from test_train_step_loss import reference_loss
    from vee_jax.training import make_optimizer, train_step

    spec, state, batch, ref = fixture_v1
    spec = dataclasses.replace(spec, bert=dataclasses.replace(spec.bert, hidden_dropout=0.0, attention_dropout=0.0))
    opt = make_optimizer(10)
    params = jax.tree.map(jnp.copy, state["params"])
    train_state = {"params": params, "opt_state": opt.init(params), "step": jnp.int32(0),
                   "rng": jax.random.PRNGKey(0)}
    _, metrics = train_step(train_state, {k: jnp.asarray(v) for k, v in batch.items()}, spec=spec, optimizer=opt)
    M = spec.bert.num_layers
    want, want_per_exit = reference_loss(ref["logits"], batch["gold"], batch["lengths"], np.arange(1.0, M + 1))
    np.testing.assert_allclose(np.asarray(metrics["per_exit"]), want_per_exit, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-5)
