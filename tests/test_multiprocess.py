"""Two real processes joined with ``jax.distributed.initialize`` on 127.0.0.1 (CPU collectives, Gloo).

Each process has one CPU device and reads its own half of every batch; together they must train
like one process on one device, write one set of metrics and one checkpoint, and that checkpoint
must restore in a single process (eval.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from helpers import ROOT, run_script, train_args

ARGS = ("--config.train.epochs=1", "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
        "--config.train.checkpoint_every_steps=2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_like_one(tmp_path, tiny_data, tiny_minilm_vocab_dir):
    ref, run = tmp_path / "ref", tmp_path / "run"
    r = run_script(train_args(ref, tiny_data, tiny_minilm_vocab_dir, *ARGS))
    assert r.returncode == 0, r.stderr[-3000:]

    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1", JAX_NUM_CPU_DEVICES="1",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2")
    procs = [subprocess.Popen([sys.executable, *train_args(run, tiny_data, tiny_minilm_vocab_dir, *ARGS)], cwd=ROOT,
                              env={**env, "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "process 0 of 2 joined" in outs[0][1] and "process 1 of 2 joined" in outs[1][1]
    assert "mesh: data=2 x fsdp=1 over 2 cpu device(s) in 2 process(es)" in outs[0][1]
    assert "done: best dev score" in outs[0][0] and "done" not in outs[1][0]  # process 0 speaks for both

    want, got = _records(ref), _records(run)
    assert len(got) == len(want)  # one writer: no line twice
    losses = [(r["step"], r["loss"]) for r in want if "loss" in r]
    assert [s for s, _ in losses] == [r["step"] for r in got if "loss" in r]
    for (step, loss), rec in zip(losses, [r for r in got if "loss" in r]):
        assert rec["loss"] == pytest.approx(loss, rel=1e-5), step

    # The checkpoint the two processes wrote restores in one process, equal to the one-process run's.
    check = ("import sys, jax, numpy as np\n"
             "from vee_jax.trained import TrainedModel\n"
             "a = TrainedModel.load(sys.argv[1], 'latest').params\n"
             "b = TrainedModel.load(sys.argv[2], 'latest').params\n"
             "d = sum(float(np.sum((np.asarray(x) - np.asarray(y)) ** 2)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))\n"
             "n = sum(float(np.sum(np.asarray(y) ** 2)) for y in jax.tree.leaves(b))\n"
             "print((d / n) ** 0.5)\n")
    r = run_script(["-c", check, str(run), str(ref)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert float(r.stdout.strip().splitlines()[-1]) < 1e-4
    r = run_script(["eval.py", "--workdir", str(run), "--checkpoint", "latest", "--split", "test", "--quiet"])
    assert r.returncode == 0 and "exit" in r.stdout, r.stderr[-3000:]
