"""A non-finite loss stops training with a message naming the step, and keeps the last good checkpoint."""

from __future__ import annotations

import json

import jax.numpy as jnp
import pytest

import vee_jax.trainer as trainer
from vee_jax.config import DEMO, base_config
from vee_jax.workdir import checkpoint_manager


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, tiny_minilm_vocab_dir):
    data = tmp_path / "data"
    data.mkdir()
    recs = [r for r in json.loads((DEMO / "train.json").read_text()) if 12 <= len(r["sentence"]) <= 20][:16]
    for split in ("train", "dev"):
        (data / f"{split}.json").write_text(json.dumps(recs))
    c = base_config()
    c.data.train, c.data.dev = str(data / "train.json"), str(data / "dev.json")
    c.model.backbone = str(tiny_minilm_vocab_dir)
    c.train.batch_size = 2
    c.train.epochs = 1
    c.train.checkpoint_every_steps = 2
    c.train.log_every_steps = 1

    real_step = trainer.train_step

    def faulty_step(state, batch, **kw):
        state, metrics = real_step(state, batch, **kw)
        if int(state["step"]) == 5:  # inject a non-finite loss at step 5
            metrics = dict(metrics, loss=jnp.float32(jnp.nan))
        return state, metrics

    monkeypatch.setattr(trainer, "train_step", faulty_step)
    with pytest.raises(trainer.TrainingError, match=r"non-finite loss \(nan\).* at step 5 .*last good checkpoint"):
        trainer.train_and_evaluate(c, tmp_path / "wd")
    assert checkpoint_manager(tmp_path / "wd", "latest").latest_step() == 4
