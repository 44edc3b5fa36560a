"""train.py -> checkpoint -> resume -> eval.py on a tiny config (flax train_test.py style).

Real processes through the command lines; a random 2-layer BERT with MiniLM's tokenizer keeps
it fast, on 24 sentences of the shipped GENIA sample.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT, logged_losses as _losses, run_script as _run, train_args as _train_args  # noqa: E402


def _start(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _logged_lines(workdir):
    f = workdir / "metrics.jsonl"
    return f.read_text().splitlines() if f.exists() else []


def _wait_for_step(workdir, step, proc, timeout=400):
    """Block until ``proc`` itself logs ``step`` to metrics.jsonl (lines before its start don't count)."""
    skip = len(_logged_lines(workdir))
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()[1][-2000:]}")
        new = [json.loads(l) for l in _logged_lines(workdir)[skip:]]
        if any(r.get("step", 0) >= step and "loss" in r for r in new):
            return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def _checkpoint_steps(workdir):
    return sorted(int(x.name) for x in (workdir / "checkpoints" / "latest").iterdir() if x.name.isdigit())


def test_train_resume_eval(tmp_path, tiny_data, tiny_minilm_vocab_dir):
    # Uninterrupted reference run: 2 epochs (24 sentences in batches of <= 4 per length bucket).
    ref = tmp_path / "ref"
    r = _run(_train_args(ref, tiny_data, tiny_minilm_vocab_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done: best dev score" in r.stdout
    ref_losses = _losses(ref)
    n = len(ref_losses)
    assert n >= 12 and n % 2 == 0 and sorted(ref_losses) == list(range(1, n + 1))
    assert (ref / "config.json").exists() and (ref / "vee_format.json").exists()
    assert list((ref / "checkpoints" / "best").iterdir()) and list((ref / "checkpoints" / "latest").iterdir())

    # Killed with SIGKILL mid-epoch, resumed, stopped with Ctrl-C (SIGINT), resumed, stopped with
    # SIGTERM, resumed again: the same loss at every step as the uninterrupted run (steps re-run
    # after the kill log again, equal).
    run = tmp_path / "resumed"
    args = _train_args(run, tiny_data, tiny_minilm_vocab_dir, "--config.train.checkpoint_every_steps=2")
    p = _start(args)
    _wait_for_step(run, 5, p)  # started before any line: all lines are its own
    p.send_signal(signal.SIGKILL)
    p.wait()
    latest = _checkpoint_steps(run)
    assert latest and latest[-1] >= 4
    stopped_at = latest[-1]
    for sig in (signal.SIGINT, signal.SIGTERM):
        p = _start(args)
        _wait_for_step(run, stopped_at + 1, p)
        p.send_signal(sig)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 130, err[-2000:]
        assert "resumed from" in err and f"stopped by signal {int(sig)}" in err and "the same command resumes" in err
        assert max(_losses(run)) > stopped_at  # it trained before stopping
        stopped_at = max(_losses(run))  # no step past the signal's is logged ...
        assert stopped_at == _checkpoint_steps(run)[-1]  # ... and that step is saved
    r = _run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    got = _losses(run)
    assert sorted(got) == sorted(ref_losses)
    for step, loss in ref_losses.items():
        assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-7), f"step {step}"

    # A finished run is not trained again.
    r = _run(args)
    assert r.returncode == 0 and "already finished" in r.stderr

    # eval.py reads the workdir alone (best checkpoint by default, latest on request).
    out = tmp_path / "per_exit.json"
    png = tmp_path / "fig1.png"
    r = _run(["eval.py", "--workdir", str(run), "--split", "test", "--output", str(out), "--plot", str(png), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [row["exit"] for row in res["per_exit"]] == [1, 2]
    for row in res["per_exit"]:
        assert set(row) >= {"exit", "precision", "recall", "f1", "entropy"}
        assert 0.0 <= row["entropy"] <= 1.0 and row["n_gold"] == sum(len(x["ner"]) for x in json.loads((tiny_data / "test.json").read_text()))
    assert png.stat().st_size > 1000
    r = _run(["eval.py", "--workdir", str(run), "--checkpoint", "latest", "--split", "dev", "--quiet"])
    assert r.returncode == 0 and "exit" in r.stdout


def test_train_refuses_other_labels_in_same_workdir(tmp_path, tiny_data, tiny_minilm_vocab_dir):
    wd = tmp_path / "wd"
    r = _run(_train_args(wd, tiny_data, tiny_minilm_vocab_dir, "--config.train.max_steps=1"))
    assert r.returncode == 0, r.stderr[-3000:]
    # Rerunning a run stopped by max_steps trains no further step.
    r = _run(_train_args(wd, tiny_data, tiny_minilm_vocab_dir, "--config.train.max_steps=1"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(_losses(wd)) == [1]
    r = _run(_train_args(wd, tiny_data, tiny_minilm_vocab_dir, "--config.data.labels=('DNA','protein','extra')"))
    assert r.returncode == 2
    assert "holds a run with labels" in r.stderr and "Traceback" not in r.stderr
    # Another schedule would not continue the same run: refused, and config.json is kept.
    saved = (wd / "config.json").read_text()
    r = _run(_train_args(wd, tiny_data, tiny_minilm_vocab_dir, "--config.train.epochs=3"))
    assert r.returncode == 2
    assert "train.epochs: 2 -> 3" in r.stderr and "Traceback" not in r.stderr
    assert (wd / "config.json").read_text() == saved


def test_eval_on_a_non_workdir_is_a_clear_error(tmp_path):
    r = _run(["eval.py", "--workdir", str(tmp_path)])
    assert r.returncode == 2
    assert "not a vee_jax workdir" in r.stderr and "Traceback" not in r.stderr


def test_bad_config_values_are_refused_before_training(tmp_path):
    r = _run(["train.py", "--config", "configs/demo.py", "--workdir", str(tmp_path / "wd"),
              "--config.train.select_by=best", "--config.train.log_every_steps=0"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "config.train.select_by='best' (expected one of last, mean)" in r.stderr
    assert "config.train.log_every_steps=0 (expected > 0)" in r.stderr
    assert not (tmp_path / "wd").exists()
