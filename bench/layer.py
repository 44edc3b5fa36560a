"""Where a MiniLM layer's time goes on the CPU, and which layout of the same arithmetic is fastest.

    python bench/layer.py [--out bench/results/layer_cpu.json]

The full model (M layers, no exit) at batch 1 and 32, one jitted call each, with the layer
written several ways over the same weights, side by side in one process, interleaved, best of
``--repeats``; ratios to the library's ``TransformerLayer`` (``module``) are printed:

    module         vee_jax.bert.transformer_layer on engine.prepare's layout (what the engine runs)
    fused_qkv      one [d, 3d] projection for query, key and value, then the same attention
    no_transpose   fused_qkv, with the heads kept as [B, T, H, dh] (einsums contract across them)
    dpa            fused_qkv, attention through jax.nn.dot_product_attention (XLA implementation)
    arguments      module, with the weights passed as arguments of the jitted call (what the
                   engine and the Predictor do) instead of closed over as constants (the others)

Each variant's last hidden state is checked against ``module`` (max abs difference printed).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import cpu_name, write_results  # noqa: E402

from vee_jax import engine  # noqa: E402
from vee_jax.bert import ACTIVATIONS, LayerNorm, attention_bias, embed, transformer_layer  # noqa: E402
from vee_jax.exits import init_exits  # noqa: E402
from vee_jax.weights import load_backbone  # noqa: E402


def _ln(cfg, p, x):
    return LayerNorm(cfg.layer_norm_eps).apply({"params": p}, x)


def _fused(lp):
    """One layer's query/key/value weights as one [d, 3d] kernel and [3d] bias."""
    names = ("query", "key", "value")
    return (jnp.concatenate([lp[n]["kernel"] for n in names], axis=1),
            jnp.concatenate([lp[n]["bias"] for n in names], axis=0))


def hand_layer(cfg, lp, qkv, hidden, bias, attention: str):
    """The layer of vee_jax.bert.TransformerLayer with a fused QKV and a choice of attention."""
    B, T, d = hidden.shape
    H = cfg.num_heads
    dh = d // H
    kernel, b = qkv
    x = (hidden @ kernel + b).reshape(B, T, 3, H, dh)
    q, k, v = x[:, :, 0], x[:, :, 1], x[:, :, 2]  # [B, T, H, dh]
    if attention == "dpa":
        ctx = jax.nn.dot_product_attention(q, k, v, bias=bias, implementation="xla")
    elif attention == "no_transpose":
        scores = jnp.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(dh) + bias
        probs = jax.nn.softmax(scores, axis=-1)
        ctx = jnp.einsum("bhqk,bkhc->bqhc", probs, v)
    else:  # the module's transposes
        q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
        scores = jnp.einsum("bhqc,bhkc->bhqk", q, k) / math.sqrt(dh) + bias
        probs = jax.nn.softmax(scores, axis=-1)
        ctx = jnp.einsum("bhqk,bhkc->bhqc", probs, v).transpose(0, 2, 1, 3)
    ctx = ctx.reshape(B, T, d)
    attn = ctx @ lp["attn_out"]["kernel"] + lp["attn_out"]["bias"]
    hidden = _ln(cfg, lp["attn_ln"], attn + hidden)
    ff = ACTIVATIONS[cfg.hidden_act](hidden @ lp["ffn_in"]["kernel"] + lp["ffn_in"]["bias"])
    ff = ff @ lp["ffn_out"]["kernel"] + lp["ffn_out"]["bias"]
    return _ln(cfg, lp["ffn_ln"], ff + hidden)


def full_model(cfg, prepared, variant: str):
    """jit(input_ids, mask) -> [B, T, d], the M layers written as ``variant``.

    The weights are closed over (constants of the program), except for ``arguments``: the
    module with the weights passed as arguments of the jitted function, as the engine does."""
    def module(encoder, ids, mask):
        h = embed(cfg, encoder, ids, mask)
        bias = attention_bias(mask, h.dtype)
        for lp in encoder["layers"]:
            h = transformer_layer(cfg, lp, h, bias)
        return h

    if variant == "arguments":  # the same function as ``module``; only where the weights live differs
        return functools.partial(jax.jit(module), prepared["encoder"])
    if variant == "module":
        return jax.jit(lambda ids, mask: module(prepared["encoder"], ids, mask))
    layers = prepared["encoder"]["layers"]
    qkvs = tuple(_fused(lp) for lp in layers)
    attention = {"fused_qkv": "transpose"}.get(variant, variant)

    @jax.jit
    def run(ids, mask):
        h = embed(cfg, prepared["encoder"], ids, mask)
        bias = attention_bias(mask, h.dtype)
        for lp, qkv in zip(layers, qkvs):
            h = hand_layer(cfg, lp, qkv, h, bias, attention)
        return h

    return run


VARIANTS = ("module", "fused_qkv", "no_transpose", "dpa", "arguments")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="32,64", help="subword lengths T")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    cfg, params, _ = load_backbone("minilm")
    prepared = engine.prepare(cfg, params, init_exits(jax.random.PRNGKey(0), cfg, 6))
    runs = {v: full_model(cfg, prepared, v) for v in VARIANTS}
    rows = []
    rng = np.random.default_rng(0)
    for B in map(int, args.batches.split(",")):
        for T in map(int, args.lengths.split(",")):
            ids = jnp.asarray(rng.integers(1000, 20000, (B, T)), jnp.int32)
            mask = jnp.ones((B, T), jnp.int32)
            ref = np.asarray(runs["module"](ids, mask))
            diffs = {v: float(np.abs(np.asarray(f(ids, mask)) - ref).max()) for v, f in runs.items()}
            times = {v: [] for v in VARIANTS}
            for _ in range(args.repeats):  # interleaved: drift hits every variant alike
                for v, f in runs.items():
                    t = time.perf_counter()
                    jax.block_until_ready(f(ids, mask))
                    times[v].append(time.perf_counter() - t)
            best = {v: min(ts) for v, ts in times.items()}
            row = {"batch": B, "subwords": T, "ms": {v: 1e3 * t for v, t in best.items()},
                   "over_module": {v: best[v] / best["module"] for v in VARIANTS},
                   "max_abs_diff": diffs}
            rows.append(row)
            print(row, flush=True)
    result = {"command": "python bench/layer.py " + " ".join(argv or sys.argv[1:]), "cpu": cpu_name(),
              "jax": jax.__version__, "repeats": args.repeats, "rows": rows}
    md = [f"Command: `{result['command']}` ({result['cpu']}, jax {result['jax']}); MiniLM, "
          f"{cfg.num_layers} layers, no exit; best of {args.repeats}, variants interleaved.", "",
          "| batch | T | " + " | ".join(f"{v} ms" for v in VARIANTS) + " | " +
          " | ".join(f"{v} / module" for v in VARIANTS[1:]) + " | max abs diff |",
          "|---" * (3 + 2 * len(VARIANTS) - 1) + "|"]
    for r in rows:
        md.append(f"| {r['batch']} | {r['subwords']} | " + " | ".join(f"{r['ms'][v]:.2f}" for v in VARIANTS)
                  + " | " + " | ".join(f"{r['over_module'][v]:.3f}" for v in VARIANTS[1:])
                  + f" | {max(r['max_abs_diff'].values()):.1e} |")
    if args.out:
        write_results(args.out, result, "\n".join(md) + "\n")
    else:
        print("\n".join(md))


if __name__ == "__main__":
    main()
