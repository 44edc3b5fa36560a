"""Training and inference on a jax.sharding Mesh of 8 fake CPU devices (vee_jax/distributed.py).

Everything runs in subprocesses with ``JAX_NUM_CPU_DEVICES=8``, so the rest of the suite keeps
one device.
"""

from __future__ import annotations

import json

import jax
import pytest
from helpers import ROOT, logged_losses, run_script, train_args
from jax.sharding import PartitionSpec as P

from vee_jax.distributed import param_spec

EIGHT = {"JAX_NUM_CPU_DEVICES": "8"}


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_param_spec_shards_the_largest_divisible_dimension():
    assert param_spec((3, 384, 1536), 2, 1024) == P(None, None, "fsdp")
    assert param_spec((30522, 384), 4, 1024) == P(None, "fsdp")  # 30522 is not a multiple of 4
    assert param_spec((6, 384), 2, 1024) == P(None, "fsdp")
    assert param_spec((384,), 2, 1024) == P()  # under min_size: replicated
    assert param_spec((7, 5, 3), 2, 1) == P()  # no dimension divisible
    assert param_spec((3, 384, 1536), 1, 1) == P()  # fsdp=1: replicated


def test_mesh_that_does_not_fit_the_devices_is_a_clear_error():
    import ml_collections

    from vee_jax.config import ConfigError
    from vee_jax.distributed import make_mesh

    one = jax.devices()[:1]
    with pytest.raises(ConfigError, match=r"config.mesh.data=2 x config.mesh.fsdp=1 = 2 devices, but 1 are available"):
        make_mesh(ml_collections.ConfigDict({"data": 2, "fsdp": 1}), one)
    with pytest.raises(ConfigError, match=r"config.mesh.fsdp=3 must be >= 1 and divide the 1 devices"):
        make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 3}), one)
    assert make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1}), one).shape == {"data": 1, "fsdp": 1}


def test_train_steps_on_meshes_match_one_device():
    """5 steps (dropout on, ragged batches with padding rows) on data=8 and on data=4 x fsdp=2."""
    r = run_script(["tests/sharding_worker.py", "steps"], env=EIGHT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = _last_json(r.stdout)
    assert out["device_count"] == 8
    runs = out["runs"]
    ref = runs["1x1"]["losses"]
    assert runs["1x1"]["devices"] == 1 and runs["8x1"]["devices"] == 8 and runs["4x2"]["devices"] == 8
    assert runs["8x1"]["sharded_leaves"] == 0 and runs["4x2"]["sharded_leaves"] > 0  # fsdp really shards
    assert len(set(ref)) == len(ref)  # the loss moves: the steps train
    for name in ("8x1", "4x2"):
        assert runs[name]["losses"] == pytest.approx(ref, rel=1e-5), name
        assert runs[name]["param_diff"] < 1e-4, name


def test_checkpoint_restores_across_meshes(tmp_path):
    """Saved on 1 device, restored on (data=4, fsdp=2) and trained there, saved, restored on 1 device."""
    r = run_script(["tests/sharding_worker.py", "checkpoint", str(tmp_path / "ckpt")], env=EIGHT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = _last_json(r.stdout)
    assert out["equal_8"] and out["layout_8"] and out["fsdp_leaves_8"] > 0
    assert out["equal_1"] and out["on_one_device"]
    assert out["meta_8"]["step"] == 1 and out["meta_1"]["step"] == 2


def test_train_py_on_eight_devices_resumes_on_one_and_eval_shards(tmp_path, tiny_data, tiny_minilm_vocab_dir):
    """train.py on data=4 x fsdp=2 for 3 steps, resumed on 1 device to the end of epoch 1: the same
    losses as a run on 1 device; eval.py --mesh-data 8 gives the same results as on 1 device."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    one = ("--config.train.epochs=1", "--config.train.batch_size=8", "--config.train.eval_batch_size=8")
    r = run_script(train_args(ref, tiny_data, tiny_minilm_vocab_dir, *one))
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_script(train_args(run, tiny_data, tiny_minilm_vocab_dir, *one, "--config.mesh.fsdp=2",
                              "--config.mesh.fsdp_min_size=256", "--config.train.max_steps=3"), env=EIGHT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mesh: data=4 x fsdp=2 over 8 cpu device(s)" in r.stderr
    r = run_script(train_args(run, tiny_data, tiny_minilm_vocab_dir, *one))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stderr and "mesh: data=1 x fsdp=1 over 1 cpu" in r.stderr
    want, got = logged_losses(ref), logged_losses(run)
    assert sorted(got) == sorted(want) and len(want) >= 4
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-5), step

    # A batch size the mesh cannot split is refused before training.
    r = run_script(train_args(tmp_path / "bad", tiny_data, tiny_minilm_vocab_dir, "--config.train.batch_size=6"),
                   env=EIGHT)
    assert r.returncode == 2 and "config.train.batch_size=6 must be a multiple of 8" in r.stderr

    # eval.py: exit by exit and one policy, batches split over 8 devices, equal to one device.
    results = {}
    for n in (1, 8):
        for mode in ((), ("--strategy", "vee", "--measure", "kl", "--tau", "0.05", "--patience", "1")):
            out = tmp_path / f"eval_{n}_{len(mode)}.json"
            r = run_script(["eval.py", "--workdir", str(run), "--checkpoint", "latest", "--split", "test", "--quiet",
                            "--batch-size", "8", "--mesh-data", str(n), "--output", str(out), *mode],
                           env=EIGHT, cwd=ROOT)
            assert r.returncode == 0, r.stderr[-3000:]
            results[n, len(mode)] = json.loads(out.read_text())
    exits1, exits8 = results[1, 0]["per_exit"], results[8, 0]["per_exit"]
    assert [(e["tp"], e["n_pred"]) for e in exits1] == [(e["tp"], e["n_pred"]) for e in exits8]
    assert [e["entropy"] for e in exits8] == pytest.approx([e["entropy"] for e in exits1], rel=1e-4)
    pol1, pol8 = results[1, 8], results[8, 8]
    assert pol8["devices"] == 8 and pol1["devices"] == 1
    assert pol8["exit_layers"] == pol1["exit_layers"] and pol8["predictions"] == pol1["predictions"]
    assert pol8["offline_disagreements"] == 0
