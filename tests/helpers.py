"""Small builders shared by tests (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from vee_jax import BertConfig


def random_params(cfg: BertConfig, seed: int = 7) -> dict:
    """A random encoder pytree of ``cfg``'s shape (stacked layers), with non-trivial norms.

    Weights are larger than BERT's 0.02 initialisation so that layers differ visibly.
    """
    k = iter(jax.random.split(jax.random.PRNGKey(seed), 32))
    d, F, M = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers

    def lin(i, o):
        return {"kernel": 0.3 * jax.random.normal(next(k), (M, i, o)), "bias": 0.1 * jax.random.normal(next(k), (M, o))}

    def ln(n):
        return {"scale": 1 + 0.1 * jax.random.normal(next(k), (M, n)), "bias": 0.1 * jax.random.normal(next(k), (M, n))}

    return {
        "embeddings": {"word": jax.random.normal(next(k), (cfg.vocab_size, d)),
                       "position": jax.random.normal(next(k), (cfg.max_position, d)),
                       "token_type": jax.random.normal(next(k), (2, d)),
                       "ln": {"scale": jnp.ones(d), "bias": jnp.zeros(d)}},
        "layers": {"query": lin(d, d), "key": lin(d, d), "value": lin(d, d), "attn_out": lin(d, d),
                   "attn_ln": ln(d), "ffn_in": lin(d, F), "ffn_out": lin(F, d), "ffn_ln": ln(d)},
    }


ROOT = Path(__file__).resolve().parents[1]


def run_script(args: list[str], cwd: Path = ROOT, timeout: int = 600, env: dict | None = None):
    """``python *args`` in a fresh process (progress bars off); extra ``env`` entries on top of ours."""
    full = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


def logged_losses(workdir: Path) -> dict[int, float]:
    """``{step: loss}`` from a workdir's metrics.jsonl (the per-step records)."""
    import json

    return {r["step"]: r["loss"] for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


def train_args(workdir: Path, data: Path, backbone: Path, *extra: str) -> list[str]:
    """train.py on the ``tiny_data`` fixture's files: 2 epochs, batches of 4, a loss logged every step."""
    return ["train.py", "--config", "configs/demo.py", "--workdir", str(workdir),
            f"--config.model.backbone={backbone}", f"--config.data.train={data / 'train.json'}",
            f"--config.data.dev={data / 'dev.json'}", f"--config.data.test={data / 'test.json'}",
            "--config.data.labels=('DNA','RNA','cell_line','cell_type','protein')",
            "--config.train.epochs=2", "--config.train.batch_size=4", "--config.train.log_every_steps=1",
            "--config.train.checkpoint_every_steps=0", *extra]


def safe_tau(values, q: float) -> float:
    """A threshold near quantile q halfway between two observed values at least 1e-3 apart (no near-ties)."""
    import numpy as np

    v = np.unique(np.asarray(values)[np.isfinite(values)])
    gaps = np.flatnonzero(np.diff(v) > 1e-3)
    j = gaps[np.argmin(np.abs(gaps - q * (len(v) - 1)))]
    return float((v[j] + v[j + 1]) / 2)
