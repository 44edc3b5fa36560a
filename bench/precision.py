"""The JAX full model in float32, bfloat16 and with int8 dense layers on XLA:CPU, in one process.

    python bench/precision.py                                  # runs/demo on its test split
    python bench/precision.py --workdir runs/demo --rounds 3 --out bench/results/precision_cpu.json

The model is ``bench/latency.py``'s ``jax_full``: ``engine.vee_infer`` with ``FullPolicy`` (every
layer, then the last exit) on ``engine.prepare``'s layout, the exits as trained, jitted. Variants:

- ``float32``: as trained;
- ``bfloat16``: every parameter cast to bfloat16 and ``BertConfig.dtype = "bfloat16"``, so the
  activations are bfloat16 too; the modules keep LayerNorm's statistics and the softmaxes in
  float32 as they always do, and the exit's probabilities come back float32;
- ``int8``: the six dense layers of every transformer layer (query, key, value, attention
  output, FFN in and out) as ``lax.dot_general`` of int8 by int8 into int32
  (``preferred_element_type=jnp.int32``): weights quantised once, symmetric, one scale per
  output channel; activations quantised at run time, symmetric, one scale per token (row).
  Everything else (embeddings, the attention's two batched products, LayerNorm, GELU, the exit)
  stays float32. This is the library's int8 layout, ``engine.prepare(..., weights="int8")``
  (``vee_jax.int8``), as ``--weights int8`` serves it.
- ``int8_aqt`` (only when asked for with ``--variants`` and ``aqtp`` is installed; it is not a
  dependency): the same six layers through AQT's int8 ``dot_general`` (Google's quantisation
  library for JAX, ``aqt.jax.v2``), which quantises the float weights inside every call.

Timing: batch 1 on each test sentence at its bucket shape (as ``bench/latency.py``), per sentence
the best of ``--rounds`` rounds, variants in whole blocks per round, order reversed every other
round; batch 32 on ``batched.whole_batches`` (sentences of one shape, padded to a power of two),
the best of the rounds of a pass over all sentences. Ratios are each variant's total time over
float32's in the same process.

Accuracy against float32: the largest absolute difference of the last layer's hidden states over
the real subwords (``encode_layers``, batch 32) beside float32's largest magnitude, and the test F1
at the last exit (batch 1 and batch 32 tables, decoded as ``bench/latency.py`` decodes).

Also: what XLA:CPU compiled the dots into, per variant (the optimised HLO of the batch-1
program: dot and convert instructions by dtype, custom calls, fusion kinds).

Prints a table; writes ``--out`` (JSON) and the Markdown beside it only when asked.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _common import write_results  # noqa: E402  (bench/ is on sys.path when run as a script)
from latency import f1_of, machine, one_batch, pick_workdir, timed  # noqa: E402

from vee_jax import engine  # noqa: E402
from vee_jax.allocator import keep_freed_memory  # noqa: E402
from vee_jax.bert import encode_layers  # noqa: E402
from vee_jax.batched import whole_batches  # noqa: E402
from vee_jax.data.features import encode_sentences  # noqa: E402
from vee_jax.data.splits import load_split, read_file  # noqa: E402
from vee_jax.int8 import DENSE, quantize_encoder  # noqa: E402
from vee_jax.paths import display_path  # noqa: E402
from vee_jax.policies import FullPolicy  # noqa: E402
from vee_jax.trained import TrainedModel  # noqa: E402

VARIANTS = ("float32", "bfloat16", "int8")
OPTIONAL = ("int8_aqt",)  # with --variants, where aqtp is installed


def _bf16(tree):
    return jax.tree.map(lambda x: x.astype(jnp.bfloat16) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


@functools.cache
def _aqt_interceptor():
    """``nn.Dense.__call__`` -> AQT's int8 ``dot_general`` (8-bit operands, int32 accumulation,
    its default per-row / per-column absmax scales) on the encoder's six dense layers, the weights
    quantised inside every call (no frozen int8 checkpoint). Needs ``aqtp`` (not a dependency)."""
    from aqt.jax.v2 import config as aqt_config

    dg = aqt_config.dot_general_make(lhs_bits=8, rhs_bits=8)

    def intercept(next_fun, args, kwargs, context):
        m = context.module
        if isinstance(m, nn.Dense) and context.method_name == "__call__" and m.name in DENSE:
            x, p = args[0], m.variables["params"]
            return dg(x, p["kernel"], (((x.ndim - 1,), (0,)), ((), ()))) + p["bias"]
        return next_fun(*args, **kwargs)
    return intercept


def _precision(variant: str):
    if variant == "int8_aqt":
        return nn.intercept_methods(_aqt_interceptor())
    return contextlib.nullcontext()


# --- the programs ------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("config", "variant", "pooling"))
def full_model(config, encoder, exits, inputs, variant: str, pooling: str):
    """``vee_infer`` with ``FullPolicy`` (bench/latency.py's ``jax_full``), traced under the
    variant's precision (AQT's interceptor is active while the engine is traced); ``inputs``
    as ``engine.infer_inputs`` makes them."""
    # The engine's own function unjitted (``__wrapped__``): a nested jit would reuse a trace made
    # without the interceptor whenever two variants' weights have the same shapes and dtypes.
    static, knobs = engine.traced_policy(FullPolicy())
    with _precision(variant):
        return engine._infer.__wrapped__(config, encoder, exits, inputs, knobs, static, pooling)


@functools.partial(jax.jit, static_argnames=("config", "variant"))
def last_hidden(config, encoder, input_ids, attention_mask, variant: str):
    """The last layer's hidden states [B, T, d] as float32."""
    with _precision(variant):
        return encode_layers(config, encoder, input_ids, attention_mask)[-1].astype(jnp.float32)


# --- what XLA:CPU made of the dots ----------------------------------------------------------------
_DEF = re.compile(r"%?([\w.\-]+) = (\w+)\[")  # an instruction: name = dtype[shape]
_OP = re.compile(r"%?([\w.\-]+) = (\w+)\[[^=]*? (dot|convert)\(([^)]*)\)")


def hlo_summary(text: str) -> dict:
    """Counts in an optimised HLO module's text: dots as ``lhs x rhs -> out`` dtypes, converts as
    ``from -> to`` (operand dtypes looked up in each computation, as the text names operands
    only), custom-call targets, fusion kinds (``kind=`` and backend-config kinds), and whether
    oneDNN or YNNPACK are named anywhere."""
    dots, converts = Counter(), Counter()
    for block in re.split(r"\n(?=\S)", text):  # one computation per block
        types = {m[1]: m[2] for m in _DEF.finditer(block)}
        for m in _OP.finditer(block):
            ins = [types.get(a.strip().lstrip("%"), "?") for a in m[4].split(",") if a.strip()]
            if m[3] == "dot":
                dots[f"{' x '.join(ins)} -> {m[2]}"] += 1
            elif ins:
                converts[f"{ins[0]} -> {m[2]}"] += 1
    calls = Counter(re.findall(r'custom_call_target="([^"]+)"', text))
    fusions = Counter(re.findall(r"kind=(k\w+)", text))
    fusions.update(re.findall(r'"kind":"([^"]+)"', text))
    low = text.lower()
    return {"dots": dict(dots), "converts": dict(converts), "custom_calls": dict(calls), "fusion_kinds": dict(fusions),
            "mentions_onednn": "onednn" in low, "mentions_ynn": "ynn" in low}


# --- main ----------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=None, help="a trained workdir (default: as bench/latency.py picks)")
    ap.add_argument("--data", default=None, help="the sentences (default: the workdir's test split)")
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="timed passes per variant at each batch size")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated, float32 among them, of {','.join(VARIANTS + OPTIONAL)}")
    ap.add_argument("--out", default=None, help="write this JSON and the Markdown beside it (default: print only)")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if "float32" not in variants or set(variants) - set(VARIANTS + OPTIONAL):
        raise SystemExit(f"--variants: float32 (the base of every ratio) plus any of {VARIANTS + OPTIONAL}")
    if "int8_aqt" in variants:
        try:
            import aqt.jax.v2.config  # noqa: F401
        except ImportError:
            raise SystemExit("--variants int8_aqt needs AQT: pip install aqtp") from None
    keep_freed_memory()

    workdir = pick_workdir(args.workdir)
    model = TrainedModel.load(workdir)
    config, info, spec = model.config, model.info, model.spec
    labels, nested, pooling = info["labels"], info["nested"], spec.pooling
    sentences = (read_file(config.data, args.data) if args.data else load_split(config.data, "test"))[: args.sentences]
    encoded, _ = encode_sentences(sentences, model.tokenizer, labels, model.max_subwords)
    N, cfg = len(encoded), spec.bert
    enc, ex = model.params["encoder"], model.params["exits"]
    print(f"{workdir}: {N} sentences of {args.data or 'the test split'}; {machine()}", flush=True)

    # The variants' configs and weights: stacked (for last_hidden) and prepared (for the engine).
    setups = {}
    for v in variants:
        c, e, x = cfg, enc, ex
        if v == "bfloat16":
            c, e, x = dataclasses.replace(cfg, dtype="bfloat16"), _bf16(enc), _bf16(ex)
        elif v == "int8":
            setups[v] = {"config": c, "stacked": quantize_encoder(enc), "prepared": engine.prepare(c, e, x, weights="int8")}
            continue
        setups[v] = {"config": c, "stacked": e, "prepared": engine.prepare(c, e, x)}

    def run(v, inputs):
        s = setups[v]
        return full_model(s["config"], s["prepared"]["encoder"], s["prepared"]["exits"], inputs, v, pooling)

    one = [one_batch(e, pooling) for e in encoded]
    # Whole batches of one shape, padded to a power of two (as bench/latency.py's batched rows).
    batches = [(idx, engine.infer_inputs(b, pooling), b) for idx, b in whole_batches(encoded, args.batch_size)]

    # Warm up (compile every shape) and keep the outputs for accuracy.
    t0 = time.perf_counter()
    out1 = {v: [run(v, x) for x in one] for v in variants}
    outB = {v: [run(v, x) for _, x, _ in batches] for v in variants}
    jax.block_until_ready((out1, outB))
    compile_s = time.perf_counter() - t0
    print(f"compiled and ran once in {compile_s:.1f} s", flush=True)

    # Batch 1: per sentence the best of the rounds; batch B: the best total over the rounds.
    t1 = {v: np.zeros((args.rounds, N)) for v in variants}
    tB = {v: np.zeros(args.rounds) for v in variants}
    for r in range(args.rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            run(v, one[0])
            for i, x in enumerate(one):
                t1[v][r, i] = timed(lambda: run(v, x))[0]
            tB[v][r] = timed(lambda: [run(v, x) for _, x, _ in batches])[0]
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    ms1 = {v: t.min(0) * 1e3 for v, t in t1.items()}
    total1 = {v: float(t.sum()) for v, t in ms1.items()}
    totalB = {v: float(t.min()) for v, t in tB.items()}

    # Accuracy against float32: the last hidden states and the F1 at the last exit.
    def f1(v):
        b1 = [np.asarray(o["probs"])[0, :e.length, :e.length] for o, e in zip(out1[v], encoded)]
        tabs = [None] * N
        for (idx, _, _), o in zip(batches, outB[v]):
            p = np.asarray(o["probs"])
            for r, i in enumerate(idx):
                tabs[i] = p[r, :encoded[i].length, :encoded[i].length]
        return f1_of(sentences, b1, labels, nested), f1_of(sentences, tabs, labels, nested)

    def hidden(v):
        s = setups[v]
        return [np.asarray(last_hidden(s["config"], s["stacked"], b["input_ids"], b["attention_mask"], v))
                for _, _, b in batches]
    ref = hidden("float32")
    masks = [b["attention_mask"].astype(bool) for _, _, b in batches]
    ref_max = max(float(np.abs(h[m]).max()) for h, m in zip(ref, masks))

    # What XLA:CPU compiled: the batch-1 program of the first sentence's shape, per variant.
    hlo = {}
    for v in variants:
        s = setups[v]
        text = full_model.lower(s["config"], s["prepared"]["encoder"], s["prepared"]["exits"], one[0], v,
                                pooling).compile().as_text()
        hlo[v] = hlo_summary(text)

    rows = []
    for v in variants:
        f1_b1, f1_bB = f1(v)
        diff = (0.0 if v == "float32" else
                max(float(np.abs(h[m] - g[m]).max()) for h, g, m in zip(hidden(v), ref, masks)))
        rows.append({"variant": v, "ms_p50_b1": float(np.median(ms1[v])), "ms_p90_b1": float(np.percentile(ms1[v], 90)),
                     "time_over_float32_b1": total1[v] / total1["float32"],
                     f"sentences_per_s_b{args.batch_size}": N / totalB[v],
                     f"time_over_float32_b{args.batch_size}": totalB[v] / totalB["float32"],
                     "last_hidden_max_abs_diff": diff, "f1_last_exit_b1": f1_b1,
                     f"f1_last_exit_b{args.batch_size}": f1_bB, "hlo": hlo[v]})
        print(f"{v}: {rows[-1]}", flush=True)

    result = {
        "machine": machine(), "command": "python bench/precision.py " + " ".join(argv or sys.argv[1:]),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "workdir": display_path(workdir),
        "data": display_path(args.data) if args.data else "test split of the workdir's config",
        "sentences": N, "rounds": args.rounds, "batch_size": args.batch_size, "exits": "as trained (exact)",
        "model": "engine.vee_infer with FullPolicy on engine.prepare's layout (bench/latency.py's jax_full)",
        "int8": "six dense layers per transformer layer: int8 x int8 -> int32 lax.dot_general; weights symmetric per "
                "output channel, activations symmetric per token at run time; the rest float32",
        "bfloat16": "every parameter and activation bfloat16 (LayerNorm statistics and softmaxes float32)",
        **({"int8_aqt": "the same six layers through AQT's dot_general_make(lhs_bits=8, rhs_bits=8), weights "
                        "quantised inside every call"} if "int8_aqt" in variants else {}),
        "timing": "batch 1: per sentence the best of the rounds, ratio of the totals; batch "
                  f"{args.batch_size}: the best of the rounds of one pass over all sentences",
        "last_hidden_float32_max_abs": ref_max, "compile_s": compile_s, "rows": rows,
    }
    md = markdown(result)
    print(md)
    if args.out:
        write_results(args.out, result, md)


def markdown(r: dict) -> str:
    B = r["batch_size"]
    L = [f"Machine: {r['machine']}  ", f"Command: `{r['command']}`  ",
         f"Model: {r['workdir']}, {r['sentences']} sentences ({r['data']}); {r['model']}, exits {r['exits']}.  ",
         f"int8: {r['int8']}.  ", f"bfloat16: {r['bfloat16']}.  ",
         *([f"int8_aqt: {r['int8_aqt']}.  "] if "int8_aqt" in r else []), f"Timing: {r['timing']}.", "",
         (f"| variant | p50 ms (batch 1) | time / float32 (batch 1) | sentences/s (batch {B}) | "
          f"time / float32 (batch {B}) | last hidden max abs diff (float32 max "
          f"{r['last_hidden_float32_max_abs']:.1f}) | F1 last exit (batch 1) | F1 last exit (batch {B}) |"),
         "|---|---|---|---|---|---|---|---|"]
    for w in r["rows"]:
        L.append(f"| {w['variant']} | {w['ms_p50_b1']:.2f} | {w['time_over_float32_b1']:.2f} | "
                 f"{w[f'sentences_per_s_b{B}']:.1f} | {w[f'time_over_float32_b{B}']:.2f} | "
                 f"{w['last_hidden_max_abs_diff']:.3g} | {w['f1_last_exit_b1']:.4f} | {w[f'f1_last_exit_b{B}']:.4f} |")
    L += ["", "What XLA:CPU compiled (the optimised HLO of the batch-1 program, first sentence's shape):", "",
          "| variant | dots (lhs x rhs -> out) | converts | custom calls | fusion kinds | oneDNN named | YNNPACK named |",
          "|---|---|---|---|---|---|---|"]
    fmt = lambda d: ", ".join(f"{k}: {n}" for k, n in sorted(d.items())) or "none"  # noqa: E731
    for w in r["rows"]:
        h = w["hlo"]
        L.append(f"| {w['variant']} | {fmt(h['dots'])} | {fmt(h['converts'])} | {fmt(h['custom_calls'])} | "
                 f"{fmt(h['fusion_kinds'])} | {'yes' if h['mentions_onednn'] else 'no'} | "
                 f"{'yes' if h['mentions_ynn'] else 'no'} |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
