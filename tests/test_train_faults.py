"""A non-finite loss stops training with a message naming the step, and keeps the last good checkpoint."""

from __future__ import annotations

import json

import jax.numpy as jnp
import pytest

import vee_jax.trainer as trainer
from vee_jax.config import DEMO, base_config
from vee_jax.trained import checkpoint_manager


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

    real_make = trainer.distributed.make_train_step

    def make_faulty_step(*args, **kwargs):
        real_step = real_make(*args, **kwargs)

        def faulty_step(state, batch):
            state, metrics = real_step(state, batch)
            if int(state["step"]) == 5:  # inject a non-finite loss at step 5
                metrics = dict(metrics, loss=jnp.float32(jnp.nan))
            return state, metrics

        faulty_step._cache_size = real_step._cache_size
        return faulty_step

    monkeypatch.setattr(trainer.distributed, "make_train_step", make_faulty_step)
    with pytest.raises(trainer.TrainingError, match=r"non-finite loss \(nan\).* at step 5 .*last good checkpoint"):
        trainer.train_and_evaluate(c, tmp_path / "wd")
    assert checkpoint_manager(tmp_path / "wd", "latest").latest_step() == 4


def test_signal_during_dev_evaluation_stops_right_after_it(tmp_path, monkeypatch, tiny_bert_dir):
    """SIGTERM while dev is evaluated: the evaluation finishes, the epoch end is saved, no next-epoch step runs."""
    import os
    import signal

    import orbax.checkpoint as ocp

    recs = [{"sentence": ["w1", "w2"], "ner": [{"index": [0, 1], "type": "DNA"}]}] * 8
    (tmp_path / "train.json").write_text(json.dumps(recs))
    c = base_config()
    c.data.train = c.data.dev = str(tmp_path / "train.json")
    c.model.backbone = str(tiny_bert_dir)
    c.train.batch_size, c.train.epochs, c.train.log_every_steps = 2, 2, 1  # 4 steps an epoch

    def unchanged_step(state, batch, **kw):  # the loop's control flow is under test, not the update
        return state, {"loss": 1.0, "grad_norm": 1.0, "per_exit": [1.0, 1.0, 1.0]}

    unchanged_step._cache_size = lambda: 0
    evaluated = []

    def evaluate_with_a_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives during the evaluation
        evaluated.append(True)
        return {"per_exit": [{"f1": 0.5, "entropy": 0.1}] * 3}

    monkeypatch.setattr(trainer.distributed, "make_train_step", lambda *a, **k: unchanged_step)
    monkeypatch.setattr(trainer, "evaluate_exits", evaluate_with_a_signal)
    wd = tmp_path / "wd"
    with pytest.raises(KeyboardInterrupt, match=r"stopped by signal 15 at the end of epoch 1 \(step 4\)"):
        trainer.train_and_evaluate(c, wd)
    assert evaluated == [True]
    logged = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3, 4]  # nothing of epoch 2
    assert [r["epoch"] for r in logged if "dev_score" in r] == [1]
    mngr = checkpoint_manager(wd, "latest")
    assert mngr.latest_step() == 4
    meta = mngr.restore(4, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    assert (meta["epoch"], meta["batch"], meta["done"]) == (1, 0, False)  # resumes at epoch 2's start
    assert checkpoint_manager(wd, "best").latest_step() == 4
