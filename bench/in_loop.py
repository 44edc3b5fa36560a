"""What an exit and a vote cost inside the engine's loop, as fractions of one layer (batch 1).

    python bench/in_loop.py [--exit-rank 128] [--out bench/results/in_loop_cpu.json]
    python bench/in_loop.py --exit-rank 0 --ffnn-size 64 --out bench/results/in_loop_ffnn64_cpu.json
    python bench/in_loop.py --shape bert-base --exit-rank 0 --out bench/results/in_loop_bert_base_cpu.json

bench/latency.py times the exit and the vote as standalone jitted calls, which include a
call's dispatch. Here everything runs inside one jitted call over all M layers, with policies
that never exit early, every variant on the same exits (``--exit-rank`` / ``--ffnn-size``), and
the costs are differences:

    full          M layers + 1 exit                                   (vee_infer, FullPolicy)
    exits         M layers + M exits + softmax                        (no_vote_loop, history None)
    history       exits + each table written into the history         (no_vote_loop, "tables")
    history_kl    history + each table's KL self term, written         (no_vote_loop, "kl")
    vote_<ms>     history(_kl) + M votes                              (vee_infer, VeePolicy(ms, tau=-1, patience=1))

``no_vote_loop`` (below) is ``vee_infer``'s VEE loop (``engine._infer``) with the vote left
out: the same carry, layer, exit, softmax and history write (and the KL self term where the KL
vote uses it) from the engine's own pieces, the stop test replaced by "last layer"; it returns
the history so that the write is not dead code. It checks that its table equals the engine's.
So each vote share is the vote alone: vote_kl over history_kl, Euclidean and cosine over history.

``--shape bert-base``: a random encoder of bert-base's shape (12 layers, hidden 768), the
paper's model size, to see how the shares scale with the layer.

layer = (full - one exit) / M, with one exit (the same exit, softmax included) timed alone;
exit share = (exits - full + one exit) / M / layer; history share = (history - exits) / M /
layer (history_kl likewise); vote share = (vote_<ms> - its history baseline) / M / layer. The
MiniLM backbone with random exits (timing does not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import functools  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import cpu_name, write_results  # noqa: E402
from jax import lax  # noqa: E402

from vee_jax import engine  # noqa: E402
from vee_jax.bert import attention_bias, embed  # noqa: E402
from vee_jax.measures import kl_self_term  # noqa: E402
from vee_jax.allocator import keep_freed_memory  # noqa: E402
from vee_jax.data.features import SUBWORD_BUCKETS, bucket  # noqa: E402
from vee_jax.exits import biaffine, exit_inputs, init_exits  # noqa: E402
from vee_jax.policies import FullPolicy, VeePolicy  # noqa: E402
from vee_jax.weights import load_backbone  # noqa: E402


def median_ms(fn, reps: int) -> float:
    jax.block_until_ready(fn())
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


def random_encoder(shape: str):
    """``(config, params)``: the shipped MiniLM, or random weights of bert-base's shape."""
    if shape == "minilm":
        cfg, params, _ = load_backbone("minilm")
        return cfg, params
    from vee_jax import BertConfig

    cfg = BertConfig(vocab_size=30522, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 32))
    d, F, M = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    rnd = lambda *shape: 0.02 * jax.random.normal(next(keys), shape)  # noqa: E731
    lin = lambda i, o: {"kernel": rnd(M, i, o), "bias": rnd(M, o)}  # noqa: E731
    ln = lambda n: {"scale": 1 + rnd(M, n), "bias": rnd(M, n)}  # noqa: E731
    params = {"embeddings": {"word": rnd(cfg.vocab_size, d), "position": rnd(cfg.max_position, d),
                             "token_type": rnd(2, d), "ln": {"scale": jax.numpy.ones(d), "bias": jax.numpy.zeros(d)}},
              "layers": {"query": lin(d, d), "key": lin(d, d), "value": lin(d, d), "attn_out": lin(d, d),
                         "attn_ln": ln(d), "ffn_in": lin(d, F), "ffn_out": lin(F, d), "ffn_ln": ln(d)}}
    return cfg, params


@functools.partial(jax.jit, static_argnames=("config", "history"))
def no_vote_loop(config, encoder, exits, batch: dict, history: str | None):
    """``engine._infer``'s VEE loop without the vote: the baseline of the vote's in-loop cost.

    Per layer: the layer and its exit (``engine._layer_and_exit``), the softmax, and with
    ``history`` "tables" the table written into the history (``engine.empty_history``'s layout),
    with "kl" also its ``kl_self_term``, as ``engine._layer_vote`` does; then, instead of
    ``vote_step``, stop at the last layer (count 0). The carry and the frozen-exit updates are
    ``_infer``'s. Returns ``(outputs, history)``: the history is returned so that XLA keeps
    its writes (a while-loop element nobody reads would be removed).
    """
    M = config.num_layers
    ids, mask, lengths = batch["input_ids"], batch["attention_mask"], batch["lengths"]
    B, L = batch["word_index"].shape
    K = exits[0]["b"].shape[-1]
    h0 = embed(config, encoder, ids, mask, batch.get("token_type_ids"))
    bias = attention_bias(mask, h0.dtype)
    padding_row = mask.sum(-1) == 0
    words_of = lambda h: exit_inputs(h, batch, "first")  # noqa: E731
    step = engine._layer_and_exit(config, encoder, exits, bias, words_of)
    vee = {"kl": VeePolicy("kl"), "tables": VeePolicy("euclidean")}.get(history)
    zeros = jnp.zeros((B, L, L, K), jnp.float32)
    init = {"hidden": h0, "m": jnp.int32(0), "history": engine.empty_history(vee, M, B, L, K) if vee else None,
            "acc": None, "count": jnp.zeros(B, jnp.int32), "exited": padding_row, "table": zeros,
            "exit_layer": jnp.zeros(B, jnp.int32)}

    def body(c):
        m = c["m"]
        hidden, logits = step(m, c["hidden"], True)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        hist = c["history"]
        if hist is not None:  # as engine._layer_vote writes it
            new_hist = {"tables": lax.dynamic_update_index_in_dim(hist["tables"], probs, m, 0)}
            if "kl" in hist:
                new_hist["kl"] = lax.dynamic_update_index_in_dim(hist["kl"], kl_self_term(probs, lengths), m, 0)
            hist = new_hist
        stop = jnp.broadcast_to(m >= M - 1, (B,))  # vote_step's "last" alone
        count = jnp.zeros(B, jnp.int32)
        new = stop & ~c["exited"]
        return {"hidden": hidden, "m": m + 1, "history": hist, "acc": None,
                "count": jnp.where(new, count, c["count"]), "exited": c["exited"] | stop,
                "table": jnp.where(new[:, None, None, None], probs, c["table"]),
                "exit_layer": jnp.where(new, m + 1, c["exit_layer"])}

    c = lax.while_loop(lambda c: (c["m"] < M) & ~jnp.all(c["exited"]), body, init)
    return {"probs": c["table"], "exit_layer": c["exit_layer"], "votes": c["count"], "layers_run": c["m"]}, c["history"]


def forced_exit_rows(cfg, model, b, M: int, reps: int) -> list[dict]:
    """The engine end to end with every sentence exiting at layer k, against the full model
    on the same exits (``model``: the ``--exit-rank`` / ``--ffnn-size`` exits on both sides).

    ``VeePolicy("kl", tau=1e9, patience=k-1)``: every earlier layer agrees, so the vote passes
    exactly at layer k, after k layers, k exits and k votes, as a real exit at k would. Timing
    does not depend on the weights, so this holds for any trained model of this shape.
    """
    ks = sorted({2, M // 3, M // 2, (2 * M) // 3, M - 1} - {0, 1})
    fns = {"full": lambda: engine.vee_infer(cfg, model["encoder"], model["exits"], b, FullPolicy())}
    for k in ks:
        fns[k] = lambda k=k: engine.vee_infer(cfg, model["encoder"], model["exits"], b, VeePolicy("kl", 1e9, k - 1))
    for k in ks:
        assert int(fns[k]()["exit_layer"][0]) == k
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f())
            ts[k].append(time.perf_counter() - t)
    full = float(np.median(ts["full"]))
    out = []
    for k in ks:
        wall = full / float(np.median(ts[k]))
        out.append({"exit_layer": k, "layer_speedup": M / k, "wall_speedup": wall, "wall_over_layer": wall * k / M})
        print(out[-1], flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exit-rank", type=int, default=128)
    ap.add_argument("--ffnn-size", type=int, default=0,
                    help="exits with start/end projections of this size (model.ffnn_size), as trained")
    ap.add_argument("--shape", choices=["minilm", "bert-base"], default="minilm",
                    help="the shipped MiniLM, or random weights of bert-base's shape (timing only)")
    ap.add_argument("--reps", type=int, default=150)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "in_loop_cpu.json"))
    args = ap.parse_args(argv)
    keep_freed_memory()  # as eval.py and predict.py do (vee_jax/allocator.py)
    cfg, params = random_encoder(args.shape)
    M = cfg.num_layers
    ex = init_exits(jax.random.PRNGKey(0), cfg, 6, ffnn_size=args.ffnn_size or None)
    model = engine.prepare(cfg, params, ex, exit_rank=args.exit_rank)  # every variant runs these exits
    one_exit = jax.jit(lambda ep, w: jax.nn.softmax(biaffine(ep, w), -1))
    rows = []
    for L in (16, 32, 48, 64):
        T = bucket(int(L * 1.25) + 2, SUBWORD_BUCKETS)
        rng = np.random.default_rng(L)
        b = engine.infer_inputs({"input_ids": rng.integers(1000, 20000, (1, T)).astype(np.int32),
                                 "attention_mask": np.ones((1, T), np.int32),
                                 "word_index": np.arange(1, L + 1)[None].astype(np.int32),
                                 "word_mask": np.ones((1, L), np.int32), "lengths": np.array([L], np.int32)})
        run = lambda p: (lambda: engine.vee_infer(cfg, model["encoder"], model["exits"], b, p))  # noqa: E731
        base = lambda h: (lambda: no_vote_loop(cfg, model["encoder"], model["exits"], engine.infer_inputs(b), h))  # noqa: E731
        variants = {"full": run(FullPolicy()), "exits": base(None), "history": base("tables"),
                    "history_kl": base("kl")}
        variants.update({f"vote_{ms}": run(VeePolicy(ms, -1.0, 1)) for ms in ("kl", "euclidean", "cosine")})
        w = jax.numpy.zeros((1, L, cfg.hidden_size))
        variants["one_exit"] = lambda: one_exit(model["exits"][0], w)
        for f in variants.values():
            jax.block_until_ready(f())
        ref = variants["vote_kl"]()  # the baseline computes the engine's table, exiting at layer M
        for h in ("exits", "history", "history_kl"):
            got = variants[h]()[0]
            assert int(got["exit_layer"][0]) == int(ref["exit_layer"][0]) == M
            np.testing.assert_allclose(np.asarray(got["probs"]), np.asarray(ref["probs"]), rtol=1e-5, atol=1e-6)
        ts = {k: [] for k in variants}
        for _ in range(args.reps):  # interleaved: drift hits all alike
            for k, f in variants.items():
                t = time.perf_counter()
                jax.block_until_ready(f())
                ts[k].append(time.perf_counter() - t)
        ms = {k: float(np.median(v)) * 1e3 for k, v in ts.items()}
        layer = (ms["full"] - ms["one_exit"]) / M
        row = {"words": L, "subwords": T, "layer_ms": layer, "full_ms": ms["full"],
               "exit_fraction": (ms["exits"] - ms["full"] + ms["one_exit"]) / M / layer,
               "history_fraction": (ms["history"] - ms["exits"]) / M / layer,
               "history_kl_fraction": (ms["history_kl"] - ms["exits"]) / M / layer}
        for k in ms:
            if k.startswith("vote_"):
                row[f"{k}_fraction"] = (ms[k] - ms["history_kl" if k == "vote_kl" else "history"]) / M / layer
        rows.append(row)
        print(row, flush=True)
        if L == 32:  # GENIA's mean sentence: end to end at forced exit layers
            forced = forced_exit_rows(cfg, model, b, M, args.reps)
    dev = jax.devices()[0]
    result = {"machine": f"{cpu_name()}, jax {jax.__version__} on {dev.platform}", "exit_rank": args.exit_rank,
              "ffnn_size": args.ffnn_size, "shape": args.shape, "num_layers": M, "hidden_size": cfg.hidden_size,
              "command": "python bench/in_loop.py " + " ".join(argv or sys.argv[1:]),
              "baselines": "full: vee_infer FullPolicy; exits / history / history_kl: no_vote_loop (the engine's loop "
                           "without the vote) with no history / the tables written / tables and KL self terms; "
                           "vote_kl - history_kl and vote_euclidean, vote_cosine - history; all on the same exits",
              "rows": rows,
              "forced_exit_32_words": forced}
    exit_name = ", ".join([f"ffnn {args.ffnn_size}"] * bool(args.ffnn_size) + [f"rank {args.exit_rank}"] * bool(args.exit_rank)) or "exact"
    md = [f"Machine: {result['machine']}  ", f"Command: `{result['command']}`  ",
          f"Encoder: {args.shape} ({M} layers, hidden {cfg.hidden_size})", "",
          "Shares of one layer inside the loop; each vote against the same loop without the vote (history written, "
          "KL self terms for KL); every variant on the same exits.", "",
          f"| words | subwords | layer ms | exit ({exit_name}) | history write | history + KL self term | vote kl | "
          "vote euclidean | vote cosine |",
          "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['words']} | {r['subwords']} | {r['layer_ms']:.3f} | {r['exit_fraction']:.3f} | "
           f"{r['history_fraction']:.3f} | {r['history_kl_fraction']:.3f} | "
           f"{r['vote_kl_fraction']:.3f} | {r['vote_euclidean_fraction']:.3f} | {r['vote_cosine_fraction']:.3f} |"
           for r in rows]
    md += ["", "End to end at 32 words (48 subwords), every sentence exiting at layer k (VEE-KL, all exits and votes "
           f"computed), against the full model on the same exits ({exit_name}):", "",
           "| exit layer | layer speed-up | wall speed-up | wall / layer |",
           "|---|---|---|---|"]
    md += [f"| {r['exit_layer']} | {r['layer_speedup']:.2f} | {r['wall_speedup']:.2f} | {r['wall_over_layer']:.2f} |"
           for r in forced]
    write_results(args.out, result, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
