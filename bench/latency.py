"""Latency and throughput of early exiting against the full model and its peers, in one process.

    python bench/latency.py                                  # GENIA model if trained, else the demo
    python bench/latency.py --workdir ~/vee_runs/genia --sentences 400 --exit-rank 64
    python bench/latency.py --workdir ~/vee_runs/genia_ffnn64 --exit-rank 0 --out bench/results/cpu_ffnn64.json
    (a model trained with model.ffnn_size=64: its exits are small as trained, nothing to truncate)

Operating points: for each target average exit layer (2, 2.5, 3, 4, 5) the (tau, patience)
with the best F1 near it, chosen from offline tables of the DEV sentences (``--dev-data``;
default: the ``dev.json`` beside the test file when the test file is not the config's test
split, else the workdir's dev split, ``config.data.dev`` or its held-out part of train; at most
``--dev-sentences``). The JSON records ``points_chosen_on`` and, per point, the dev F1 and dev
average exit used to choose it beside the test F1 and test average exit measured here.

Variants, all on the same test sentences with the same trained weights, in whole blocks per
variant and round (ratios within this run are what to trust). Every ratio compares runs of the
same exits: with ``--exit-rank r`` > 0 the full model runs the same rank-r exits as the VEE
variants, and the exact-exit variants compare against a full model with exact exits.

1. ``jax_full``: the full model, jitted (``FullPolicy``: every layer, the last exit), batch 1, on
   the ``--exit-rank`` exits (the exits as trained with ``--exit-rank 0``);
   ``jax_full_exact_exits``: the same with the exact exits (timed only when r > 0);
   ``jax_full_unpadded``: the full model on the exact exits, each sentence at its own shape (T its
   subwords, L its words) instead of its bucket's: what the padding to buckets costs the JAX
   model at batch 1 against the peers, which run unpadded (one compilation per distinct shape,
   which a service cannot afford on its request path); ``by_length``: both over ONNX Runtime per
   bin of sentence length (subwords);
2. ``points``: the VEE engine (``vee_infer``) at batch 1 at several (tau, patience) points whose
   average exit layers span about 2..5, on the ``--exit-rank`` exits (ratios over ``jax_full``),
   and ``points_exact_exits`` on the exact exits (ratios over ``jax_full_exact_exits``);
3. ``python_loop_points``: the same decisions the PyTorch-repo way: a Python loop over jitted
   per-layer calls (``engine.layer_vote_step``) that reads the vote back after every layer
   (``--exit-rank`` exits, ratios over ``jax_full``);
4. ``torch_eager``: transformers' PyTorch ``BertModel`` with the same weights plus the biaffine
   exit in torch, eager, batch 1, all layers, unpadded;
5. ``onnxruntime``: the same torch module exported to ONNX, ORT with 2 threads and every graph
   optimisation, batch 1, unpadded.
   ``onnxruntime_int8``: that same ONNX file after ORT's dynamic quantisation
   (``quantize_dynamic``: int8 weights, per output channel unless ``--no-ort-int8-per-channel``; each
   MatMul's input quantised to uint8 at run time), every quantisable node, the exit's included;
   ``onnxruntime_int8_fp32_exit``: the same with the exit's nodes (everything outside the
   ``BertModel``) left in float32. Same threads and graph optimisations as ``onnxruntime``;
   the F1 of each (and of ``onnxruntime``) from its tables, decoded as the JAX variants';
   The peers (4, 5) run the exact last exit as trained, never a low-rank one: they are peers,
   compared with ``jax_full_exact_exits`` (the same exit), not the base of a speed-up ratio;
   every JAX variant's time is also reported over ORT int8's (``*_over_onnxruntime_int8``);
6. ``jax_full_int8`` and ``points_int8`` (``--int8``, the default): the full model and VEE points
   on ``engine.prepare(..., weights="int8")`` (the layers' dense kernels int8, per channel;
   activations per token; the ``--exit-rank`` exits, float32), the points chosen on dev tables
   of the same int8 weights; speed-ups over ``jax_full`` (float32, the same exits);
7. ``batched``: batch 32 with per-sentence exit (``batched_infer``) against the full model at
   batch 32 (``batched_infer`` with ``FullPolicy``), and ``vee_infer`` with the same policy on
   whole batches for reference, all three on the ``--exit-rank`` exits.

Also: ``vote_fraction_of_layer`` (the vote's cost over one layer's, per length up to 64
words, per measure), the exit's cost over a layer's, compile time and recompilations after
warm-up. Writes ``bench/results/cpu.json`` (``gpu-<name>.json`` on a GPU) and a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's OpenMP threads: no busy-waiting between calls
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
from _common import cpu_name, write_results  # noqa: E402  (bench/ is on sys.path when run as a script)
import jax.numpy as jnp  # noqa: E402

from vee_jax import engine  # noqa: E402
from vee_jax.allocator import keep_freed_memory  # noqa: E402
from vee_jax.batched import batched_infer, whole_batches  # noqa: E402
from vee_jax.bert import transformer_layer, attention_bias  # noqa: E402
from vee_jax.data.features import (FINE_SUBWORD_BUCKETS, FINE_WORD_BUCKETS, SUBWORD_BUCKETS, bucket, collate,  # noqa: E402
                                   encode_sentences, iterate_batches)
from vee_jax.data.readers import read_split  # noqa: E402
from vee_jax.decode import decode_table  # noqa: E402
from vee_jax.paths import display_path  # noqa: E402
from vee_jax.trained import TrainedModel  # noqa: E402
from vee_jax.exits import biaffine, compress_exits  # noqa: E402
from vee_jax.int8 import quantize_encoder  # noqa: E402
from vee_jax.metrics import span_prf  # noqa: E402
from vee_jax.offline import exit_probs, layer_distances, vee_exit_layers  # noqa: E402
from vee_jax.policies import FullPolicy, VeePolicy, vote_step  # noqa: E402

TARGETS = (2.0, 2.5, 3.0, 4.0, 5.0)


# --- setup -------------------------------------------------------------------------------------
def pick_workdir(arg: str | None) -> Path:
    for cand in ([arg] if arg else ["~/vee_runs/genia", "~/vee_runs/demo", "runs/demo"]):
        p = Path(cand).expanduser()
        if (p / "config.json").exists() and (p / "checkpoints" / "best").exists():
            return p
    raise SystemExit("no trained workdir: train the demo first (python train.py --config configs/demo.py "
                     "--workdir runs/demo) or pass --workdir")


def pick_data(arg: str | None, config) -> Path:
    if arg:
        return Path(arg)
    genia = ROOT.parent / "shared" / "data" / "genia" / "test.json"
    return genia if genia.exists() else Path(config.data.test)


def pick_dev(arg: str | None, config, test: Path):
    """``(sentences, name)`` of the split the operating points are chosen on: ``--dev-data``;
    else the ``dev.json`` beside the test file when that is not the config's test split (the
    GENIA default); else the workdir's dev split (``config.data.dev`` or its held-out part)."""
    from vee_jax.data.splits import load_split, read_file
    if arg:
        return read_file(config.data, arg), str(arg)
    beside = test.parent / "dev.json"
    if config.data.get("test") and test.resolve() != Path(config.data.test).resolve() and beside.exists():
        return read_file(config.data, beside), str(beside)
    name = config.data.dev or f"dev_fraction {config.data.dev_fraction} of {config.data.train}"
    return load_split(config.data, "dev"), str(name)


def machine() -> str:
    cpu = cpu_name()
    dev = jax.devices()[0]
    return f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__} on {dev.platform} ({dev.device_kind})"


def one_batch(e, pooling: str, padded: bool = True) -> dict:
    """Sentence ``e`` alone, padded to its bucket shape (T from subwords, L from words: the buckets
    of a batch of one row, ``FINE_*_BUCKETS``), or at its own shape with ``padded=False``."""
    T, L = len(e.input_ids), max(e.length, 1)
    shape = (bucket(T, FINE_SUBWORD_BUCKETS), bucket(L, FINE_WORD_BUCKETS)) if padded else (T, L)
    return engine.infer_inputs(collate([e], shape, 1), pooling)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - t, out


# --- choosing operating points offline -------------------------------------------------------
def offline_tables(spec, encoder, exits, encoded, pooling):
    """Per sentence [M, n, n, K] tables and the KL distance matrices D [M, M, N]."""
    N, M = len(encoded), spec.num_exits
    tables, D = [None] * N, np.zeros((M, M, N), np.float32)
    for idx, b in iterate_batches(encoded, 32):
        probs = np.asarray(exit_probs(spec.bert, encoder, exits, b, pooling=pooling))
        d = layer_distances("kl", probs, b["lengths"])
        for r, i in enumerate(idx):
            n = int(b["lengths"][r])
            tables[i] = probs[:, r, :n, :n]
            D[:, :, i] = d[:, :, r]
    return tables, D


def f1_of(sentences, tables_at_exit, labels, nested):
    pred = [{(s, e, labels[c - 1]) for s, e, c, _ in decode_table(t, t.shape[0], nested)} for t in tables_at_exit]
    return span_prf([s.span_set() for s in sentences], pred, labels)["f1"]


def choose_points(sentences, tables, D, labels, nested, M):
    """For each target average exit layer, the (tau, patience) with the best F1 among the points
    within 0.3 layers of it (each patience's closest tau), on ``sentences`` (the dev sentences:
    the chosen points are then measured on the test sentences). Each point carries the F1 and
    average exit layer it was chosen with (``dev_f1``, ``dev_avg_exit``)."""
    taus = np.logspace(-6, 0, 61)
    pats = np.arange(1, M)
    exits, _ = vee_exit_layers(D, taus, pats)  # [T, P, N]
    avg = exits.mean(-1)
    points = []
    for target in TARGETS:
        best = None
        for j, p in enumerate(pats):
            t = int(np.argmin(np.abs(avg[:, j] - target)))
            if abs(avg[t, j] - target) > 0.3:
                continue
            at_exit = [tab[x - 1] for tab, x in zip(tables, exits[t, j])]
            f1 = f1_of(sentences, at_exit, labels, nested)
            if best is None or f1 > best[0]:
                best = (f1, float(taus[t]), int(p), float(avg[t, j]))
        if best and all(abs(best[3] - q["offline_avg_exit"]) > 0.1 for q in points):
            points.append({"tau": best[1], "patience": best[2], "offline_avg_exit": best[3],
                           "dev_f1": best[0], "dev_avg_exit": best[3]})
    return points


# --- the Python-loop variant (3) -----------------------------------------------------------------
def python_loop(config, model, inputs, policy):
    """Early exit the PyTorch-repo way: a jitted call per layer, the vote read back every layer."""
    static, knobs = engine.traced_policy(policy)
    M = config.num_layers
    B, L = inputs["word_index"].shape
    K = model["exits"][0]["b"].shape[-1]
    h = engine.embed_step(config, model["encoder"], inputs)
    history = engine.empty_history(static, M, B, L, K)
    for m in range(M):
        h, probs, history, stop, _ = engine.layer_vote_step(config, model["encoder"], model["exits"], m, h, history,
                                                            inputs, knobs, static)
        if bool(stop[0]):  # the host round trip each layer
            return probs, m + 1
    return probs, M


# --- peers: PyTorch eager and ONNX Runtime -------------------------------------------------------
def torch_model(config, backbone_dir, encoder, exit_params):
    import torch
    from transformers import BertConfig as HFConfig, BertModel

    from vee_jax.weights import state_from_params

    hf = HFConfig.from_pretrained(str(backbone_dir))
    bert = BertModel(hf, add_pooling_layer=False).eval()
    bert.load_state_dict({k: torch.from_numpy(v) for k, v in state_from_params(config, encoder).items()}, strict=True)
    last = {k: torch.from_numpy(np.asarray(v[-1], np.float32)) for k, v in exit_params.items() if k != "ffnn"}
    if "ffnn" in exit_params:  # Yu et al.'s start/end projections (model.ffnn_size)
        for side in ("start", "end"):
            for k in ("kernel", "bias"):
                last[f"ffnn_{side}_{k}"] = torch.from_numpy(np.asarray(exit_params["ffnn"][side][k][-1], np.float32))

    class WithExit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert
            for k, v in last.items():
                self.register_buffer(k, v)

        def forward(self, input_ids, attention_mask, word_index):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[0]
            w = h[word_index]  # [n, d]
            ws = we = w
            if hasattr(self, "ffnn_start_kernel"):
                ws = torch.relu(w @ self.ffnn_start_kernel + self.ffnn_start_bias)
                we = torch.relu(w @ self.ffnn_end_kernel + self.ffnn_end_bias)
            bil = torch.einsum("si,ikj,ej->sek", ws, self.U, we)
            lin = (ws @ self.W_start)[:, None, :] + (we @ self.W_end)[None, :, :]
            return torch.softmax(bil + lin + self.b, dim=-1)

    return WithExit().eval()


def onnx_export(module, example, path: Path) -> Path:
    """``torch_model``'s module as an ONNX file (the encoder under ``/bert/``, the exit outside)."""
    import torch

    ids, mask, widx = example
    kw = dict(input_names=["input_ids", "attention_mask", "word_index"], output_names=["probs"],
              dynamic_axes={"input_ids": {1: "T"}, "attention_mask": {1: "T"}, "word_index": {0: "L"},
                            "probs": {0: "L", 1: "L"}}, opset_version=17)
    try:
        torch.onnx.export(module, (ids, mask, widx), str(path), dynamo=False, **kw)
    except TypeError:
        torch.onnx.export(module, (ids, mask, widx), str(path), **kw)
    return path


def onnx_int8(path: Path, out: Path, *, per_channel: bool, fp32_exit: bool) -> tuple[Path, dict]:
    """ORT's dynamic quantisation of the ONNX file at ``path``: int8 weights (per output channel
    with ``per_channel``, else one scale per tensor), activations quantised to uint8 at run time.
    ``fp32_exit``: the exit's nodes (every node outside the ``BertModel``'s ``/bert/`` scope) stay
    float32. Returns the file and what was quantised: the node counts by op type before and after."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(path)).graph
    exit_nodes = [n.name for n in graph.node if not n.name.startswith("/bert/")]
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, per_channel=per_channel,
                     nodes_to_exclude=exit_nodes if fp32_exit else None)

    def ops(g, exit_part):
        counts: dict[str, int] = {}
        for n in g.node:
            if (not n.name.startswith("/bert/")) == exit_part:
                counts[n.op_type] = counts.get(n.op_type, 0) + 1
        return counts
    q = onnx.load(str(out)).graph
    return out, {"exit_nodes": len(exit_nodes), "exit_ops_before": ops(graph, True), "exit_ops_after": ops(q, True),
                 "integer_matmuls": sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in q.node)}


def onnx_session(module, example, path: Path):
    """An ORT session of ``module`` exported to ``path`` (``ort_session``)."""
    return ort_session(onnx_export(module, example, path))


def ort_session(path: Path):
    """ONNX Runtime on the CPU: one intra-op thread per core, every graph optimisation, no spinning."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 2
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # do not starve the others
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# --- micro-benchmarks: the vote's and the exit's share of a layer --------------------------------
def component_costs(config, model, low, K, reps=200):
    """Median ms of one layer, one exit (exact and low-rank) and the vote at the last layer (M-1
    comparisons, the most it ever does) per length L; ratios over the layer."""
    M = config.num_layers
    rows = []
    layer_fn = jax.jit(lambda lp, h, mask: transformer_layer(config, lp, h, attention_bias(mask, h.dtype)))
    exit_fn = jax.jit(lambda ep, w: jax.nn.softmax(biaffine(ep, w), -1))
    vote_fns = {ms: jax.jit(lambda hist, p, n, ms=ms: vote_step(VeePolicy(ms, 0.01, 2), hist, p, M - 1, n))
                for ms in ("kl", "euclidean", "cosine", "edit")}
    rng = np.random.default_rng(0)
    for L in (8, 16, 24, 32, 48, 64):
        T = bucket(int(L * 1.3) + 2, SUBWORD_BUCKETS)
        h = jnp.asarray(rng.normal(size=(1, T, config.hidden_size)), jnp.float32)
        mask = jnp.ones((1, T), jnp.int32)
        w = h[:, :L]
        hist = jax.nn.softmax(jnp.asarray(rng.normal(size=(M, 1, L, L, K)), jnp.float32) * 3, -1)
        n = jnp.asarray([L], jnp.int32)
        fns = {"layer": lambda: layer_fn(model["encoder"]["layers"][0], h, mask),
               "exit": lambda: exit_fn(model["exits"][0], w),
               "exit_lowrank": lambda: exit_fn(low["exits"][0], w)}
        fns.update({f"vote_{ms}": (lambda f=f: f(hist, hist[-1], n)) for ms, f in vote_fns.items()})
        for f in fns.values():
            jax.block_until_ready(f())
        t = {k: [] for k in fns}
        for _ in range(reps if L <= 32 else reps // 2):
            for k, f in fns.items():
                t[k].append(timed(f)[0])
        med = {k: float(np.median(v)) * 1e3 for k, v in t.items()}
        row = {"words": L, "subwords": T, "layer_ms": med["layer"]}
        for k, v in med.items():
            if k != "layer":
                row[f"{k}_fraction"] = v / med["layer"]
        rows.append(row)
        print(f"  L={L:3d} T={T:3d} layer {med['layer']:.3f} ms  " + "  ".join(
            f"{k} {v / med['layer']:.3f}" for k, v in med.items() if k != "layer"), flush=True)
    return rows


# --- main ----------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--data", default=None, help="default: GENIA test from ../shared/data, else the config's test")
    ap.add_argument("--dev-data", default=None, help="the sentences the operating points are chosen on (default: "
                    "dev.json beside --data's file when that is not the config's test, else the config's dev split)")
    ap.add_argument("--sentences", type=int, default=300)
    ap.add_argument("--dev-sentences", type=int, default=None, help="dev sentences to choose on (default --sentences)")
    ap.add_argument("--rounds", type=int, default=3, help="timed passes over the sentences at batch 1")
    ap.add_argument("--exit-rank", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=None, help="default bench/results/cpu.json (gpu-<name>.json on a GPU)")
    ap.add_argument("--skip-peers", action="store_true", help="no PyTorch / ONNX Runtime")
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the JAX int8 layout (engine.prepare(weights='int8')): full model and VEE points")
    ap.add_argument("--ort-int8-per-channel", action=argparse.BooleanOptionalAction, default=True,
                    help="ORT int8: one weight scale per output channel (the default: 1.2-1.4 F1 points above one per "
                         "tensor on the demo test set) or, with --no-ort-int8-per-channel, one per tensor")
    args = ap.parse_args(argv)
    keep_freed_memory()  # as eval.py and predict.py do (vee_jax/allocator.py)

    workdir = pick_workdir(args.workdir)
    model = TrainedModel.load(workdir)
    config, info, spec, state, tokenizer = model.config, model.info, model.spec, model.state, model.tokenizer
    labels, nested, pooling = info["labels"], info["nested"], spec.pooling
    data = pick_data(args.data, config)
    from vee_jax.data.splits import reader_options
    sentences = read_split(data, config.data.format, **reader_options(config.data))[: args.sentences]
    encoded, _ = encode_sentences(sentences, tokenizer, labels, min(config.data.max_subwords, spec.bert.max_position),
                                  casing=spec.casing)
    dev_sentences, dev_name = pick_dev(args.dev_data, config, data)
    dev_sentences = dev_sentences[: args.dev_sentences or args.sentences]
    dev_encoded, _ = encode_sentences(dev_sentences, tokenizer, labels,
                                      min(config.data.max_subwords, spec.bert.max_position), casing=spec.casing)
    M, N = spec.num_exits, len(encoded)
    cfg = spec.bert
    enc, ex = state["params"]["encoder"], state["params"]["exits"]
    K = ex["b"].shape[-1]
    print(f"{workdir} on {N} sentences of {data}; operating points chosen on {len(dev_encoded)} sentences of "
          f"{dev_name}; {machine()}", flush=True)

    exact = engine.prepare(cfg, enc, ex)
    low = engine.prepare(cfg, enc, ex, exit_rank=args.exit_rank)
    low_exits = compress_exits(ex, args.exit_rank)

    # Operating points, chosen on the dev sentences from offline tables (what the engine would
    # decide there); measured below on the test sentences.
    tables_x, D_x = offline_tables(spec, enc, ex, dev_encoded, pooling)
    tables_l, D_l = offline_tables(spec, enc, low_exits, dev_encoded, pooling)
    dev_full_f1_exact = f1_of(dev_sentences, [t[-1] for t in tables_x], labels, nested)
    dev_full_f1 = f1_of(dev_sentences, [t[-1] for t in tables_l], labels, nested)
    pts_low = choose_points(dev_sentences, tables_l, D_l, labels, nested, M)
    pts_exact = choose_points(dev_sentences, tables_x, D_x, labels, nested, M)
    del tables_x, tables_l
    print(f"points (rank {args.exit_rank}): {pts_low}\npoints (exact exits): {pts_exact}", flush=True)
    pts_int8, low8 = [], None
    if args.int8:  # the int8 layout's own points, chosen on dev tables of the same int8 weights
        low8 = engine.prepare(cfg, enc, ex, exit_rank=args.exit_rank, weights="int8")
        tables_8, D_8 = offline_tables(spec, quantize_encoder(enc), low_exits, dev_encoded, pooling)
        dev_full_f1_int8 = f1_of(dev_sentences, [t[-1] for t in tables_8], labels, nested)
        pts_int8 = choose_points(dev_sentences, tables_8, D_8, labels, nested, M)
        del tables_8
        print(f"points (int8 weights, rank {args.exit_rank}): {pts_int8}", flush=True)

    inputs = [one_batch(e, pooling) for e in encoded]
    # Each full model runs the exits of the variants it is the base of (the same work but the exiting).
    variants = {"jax_full": lambda i: engine.vee_infer(cfg, low["encoder"], low["exits"], inputs[i], FullPolicy())}
    if args.exit_rank:
        variants["jax_full_exact_exits"] = lambda i: engine.vee_infer(cfg, exact["encoder"], exact["exits"], inputs[i],
                                                                      FullPolicy())
    full_exact = "jax_full_exact_exits" if args.exit_rank else "jax_full"  # rank 0: the same program
    unpadded = [one_batch(e, pooling, padded=False) for e in encoded]
    variants["jax_full_unpadded"] = lambda i: engine.vee_infer(cfg, exact["encoder"], exact["exits"], unpadded[i],
                                                               FullPolicy())
    for k, p in enumerate(pts_low):
        pol = VeePolicy("kl", p["tau"], p["patience"])
        variants[f"vee{k}"] = lambda i, pol=pol: engine.vee_infer(cfg, low["encoder"], low["exits"], inputs[i], pol)
        variants[f"loop{k}"] = lambda i, pol=pol: python_loop(cfg, low, inputs[i], pol)
    for k, p in enumerate(pts_exact):
        pol = VeePolicy("kl", p["tau"], p["patience"])
        variants[f"exact{k}"] = lambda i, pol=pol: engine.vee_infer(cfg, exact["encoder"], exact["exits"], inputs[i], pol)
    if args.int8:
        variants["jax_full_int8"] = lambda i: engine.vee_infer(cfg, low8["encoder"], low8["exits"], inputs[i],
                                                               FullPolicy())
        for k, p in enumerate(pts_int8):
            pol = VeePolicy("kl", p["tau"], p["patience"])
            variants[f"int8{k}"] = lambda i, pol=pol: engine.vee_infer(cfg, low8["encoder"], low8["exits"], inputs[i],
                                                                      pol)

    peers_note = None
    int8_notes: dict[str, dict] = {}
    if not args.skip_peers:
        import torch

        from vee_jax.weights import resolve_backbone
        torch.set_num_threads(os.cpu_count() or 2)
        tm = torch_model(cfg, resolve_backbone(info["backbone"]), enc, ex)
        tin = [(torch.tensor(e.input_ids[None], dtype=torch.long), torch.ones((1, len(e.input_ids)), dtype=torch.long),
                torch.tensor(e.word_index, dtype=torch.long)) for e in encoded]

        def torch_call(i):
            with torch.inference_mode():
                return tm(*tin[i]).numpy()
        variants["torch_eager"] = torch_call
        oin = [{"input_ids": a.numpy(), "attention_mask": b.numpy(), "word_index": c.numpy()} for a, b, c in tin]
        try:
            onnx_path = onnx_export(tm, tin[0], Path("/tmp/vee_bench_model.onnx"))
            sess = ort_session(onnx_path)
            variants["onnxruntime"] = lambda i: sess.run(None, oin[i])[0]
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            peers_note = f"ONNX export/ORT failed: {type(e).__name__}: {e}"
            print(peers_note, flush=True)
        else:
            # The same file, quantised: everything, then with the exit left in float32.
            for name, fp32_exit in (("onnxruntime_int8", False), ("onnxruntime_int8_fp32_exit", True)):
                try:
                    qpath, what = onnx_int8(onnx_path, Path(f"/tmp/vee_bench_model_{name}.onnx"),
                                            per_channel=args.ort_int8_per_channel, fp32_exit=fp32_exit)
                    qsess = ort_session(qpath)
                    variants[name] = lambda i, qsess=qsess: qsess.run(None, oin[i])[0]
                    int8_notes[name] = what
                    print(f"{name}: {what}", flush=True)
                except Exception as e:  # noqa: BLE001 - reported, not hidden
                    peers_note = f"ORT int8 ({name}) failed: {type(e).__name__}: {e}"
                    print(peers_note, flush=True)

    # Warm up: compile every (variant, shape) once; count what compiles later.
    def cache_sizes():
        return (engine._infer._cache_size() + engine.layer_vote_step._cache_size()
                + engine.embed_step._cache_size())
    t0 = time.perf_counter()
    outs = {k: [None] * N for k in variants}
    for i in range(N):
        for k, f in variants.items():
            outs[k][i] = f(i)
    jax.block_until_ready([o for k, v in outs.items() if not k.startswith(("torch", "onnx")) for o in v])
    compile_s = time.perf_counter() - t0
    before = cache_sizes()

    # Each round times every variant over all sentences in turn (a whole block per variant: thread
    # pools of different frameworks spinning after their own calls would slow each other's if
    # calls alternated), in reversed order every other round so that drift hits all alike.
    times = {k: np.zeros((args.rounds, N)) for k in variants}
    names = list(variants)
    for r in range(args.rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            f = variants[k]
            f(0)
            for i in range(N):
                times[k][r, i] = timed(lambda: f(i))[0]
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    recompiles = cache_sizes() - before

    ms = {k: v.min(0) * 1e3 for k, v in times.items()}  # per sentence: best of the rounds
    total = {k: float(v.sum()) for k, v in ms.items()}

    def decode_out(k):
        tabs, layers = [], []
        for i, o in enumerate(outs[k]):
            n = encoded[i].length
            if k.startswith("loop"):
                probs, layer = o
                tabs.append(np.asarray(probs)[0, :n, :n]); layers.append(layer)
            else:
                tabs.append(np.asarray(o["probs"])[0, :n, :n]); layers.append(int(o["exit_layer"][0]))
        return f1_of(sentences, tabs, labels, nested), np.asarray(layers)

    full_f1, _ = decode_out("jax_full")
    full_f1_exact, _ = decode_out(full_exact)

    def point_rows(prefix, pts, exits_name, base):
        rows = []
        for k, p in enumerate(pts):
            f1, layers = decode_out(f"{prefix}{k}")
            avg = float(layers.mean())
            rows.append({"strategy": "vee", "measure": "kl", "exits": exits_name, "tau": p["tau"],
                         "patience": p["patience"], "dev_f1": p["dev_f1"], "dev_avg_exit_layer": p["dev_avg_exit"],
                         "f1": f1, "test_f1": f1, "avg_exit_layer": avg, "test_avg_exit_layer": avg,
                         "layer_speedup": M / avg, "wall_speedup_over": base,
                         "wall_speedup": total[base] / total[f"{prefix}{k}"],
                         "ms_p50": float(np.median(ms[f"{prefix}{k}"])),
                         "ms_p90": float(np.percentile(ms[f"{prefix}{k}"], 90)), "exit_layers": layers})
            rows[-1]["wall_over_layer_speedup"] = rows[-1]["wall_speedup"] / rows[-1]["layer_speedup"]
        return rows

    low_name = f"rank {args.exit_rank}" if args.exit_rank else "exits as trained"
    points = point_rows("vee", pts_low, low_name, "jax_full")
    loop_points = point_rows("loop", pts_low, low_name, "jax_full")
    for a, b in zip(points, loop_points):
        assert (a["exit_layers"] == b["exit_layers"]).all(), "the Python loop must make the engine's decisions"
    exact_points = point_rows("exact", pts_exact, "exact", full_exact)
    int8_points = point_rows("int8", pts_int8, f"{low_name}, int8 weights", "jax_full")
    for rows in (points, loop_points, exact_points, int8_points):
        for r in rows:
            r.pop("exit_layers")

    # Batched (6): per-sentence exit at batch 32 against the full model at batch 32.
    print("batched ...", flush=True)
    # The full model gets the same batching (groups by shape, padded to a power of two <= 32) and
    # the same (--exit-rank) exits.
    # vee_infer on whole batches: the same groups and shapes as batched_infer (word bucket fitted
    # to each group's longest sentence), padded to a power of two as there.
    batches = [engine.infer_inputs(b, pooling) for _, b in whole_batches(encoded, args.batch_size)]
    full_b = lambda: batched_infer(cfg, low, encoded, FullPolicy(), batch_size=args.batch_size, pooling=pooling)[0]
    batched_rows = []
    full_b()
    t_full = min(timed(full_b)[0] for _ in range(2))
    for p in pts_low:
        pol = VeePolicy("kl", p["tau"], p["patience"])
        run = lambda: batched_infer(cfg, low, encoded, pol, batch_size=args.batch_size, pooling=pooling)
        wait = lambda: [engine.vee_infer(cfg, low["encoder"], low["exits"], b, pol) for b in batches]
        run(); wait()  # noqa: E702 - warm up
        t_run = min(timed(lambda: run()[0])[0] for _ in range(2))
        t_wait = min(timed(wait)[0] for _ in range(2))
        res, stats = run()
        avg = float(np.mean([r["exit_layer"] for r in res]))
        batched_rows.append({"batch_size": args.batch_size, "tau": p["tau"], "patience": p["patience"],
                             "avg_exit_layer": avg, "ideal_ratio": M / avg, "throughput_ratio": t_full / t_run,
                             "throughput_ratio_whole_batch_loop": t_full / t_wait,
                             "padded_sentence_layers": stats.padded_sentence_layers,
                             "sentence_layers": stats.sentence_layers})
        print(f"  {batched_rows[-1]}", flush=True)

    print("component costs (fraction of one layer):", flush=True)
    comp = component_costs(cfg, exact, low, K)

    dev = jax.devices()[0]
    result = {
        "machine": machine(), "command": "python bench/latency.py " + " ".join(argv or sys.argv[1:]),
        "workdir": display_path(workdir), "data": display_path(data), "sentences": N, "rounds": args.rounds,
        "points_chosen_on": "dev", "dev_data": dev_name, "dev_sentences": len(dev_encoded),
        "choice": "per target average exit layer, the (tau, patience) with the best dev F1 within 0.3 layers of it "
                  "(offline tables of the dev sentences); dev_f1 / dev_avg_exit_layer: what it was chosen with; "
                  "f1 (= test_f1) / avg_exit_layer (= test_avg_exit_layer): the engine on the test sentences",
        "num_layers": M, "exit_rank": args.exit_rank,
        "timing": "per sentence the best of the rounds; p50/p90 over sentences; wall_speedup = total time ratio "
                  "over the full model with the same exits (wall_speedup_over)",
        "jax_full_exits": low_name,
        "jax_full_ms_p50": float(np.median(ms["jax_full"])), "jax_full_ms_p90": float(np.percentile(ms["jax_full"], 90)),
        "jax_full_exact_exits_ms_p50": float(np.median(ms[full_exact])),
        "jax_full_exact_exits_ms_p90": float(np.percentile(ms[full_exact], 90)),
        "jax_full_unpadded_ms_p50": float(np.median(ms["jax_full_unpadded"])),
        "jax_full_unpadded_ms_p90": float(np.percentile(ms["jax_full_unpadded"], 90)),
        "jax_full_unpadded_over_jax_full_exact_exits": total["jax_full_unpadded"] / total[full_exact],
        "full_f1_unpadded": decode_out("jax_full_unpadded")[0],
        "full_f1": full_f1, "full_f1_exact_exits": full_f1_exact,
        "dev_full_f1": dev_full_f1, "dev_full_f1_exact_exits": dev_full_f1_exact,
        "points": points, "python_loop_points": loop_points, "points_exact_exits": exact_points,
        "points_int8": int8_points,
        "batched": batched_rows, "vote_fraction_of_layer": comp,
        "compile_s": compile_s, "recompiles_after_warmup": int(recompiles),
    }
    if args.int8:
        result.update({"jax_full_int8_ms_p50": float(np.median(ms["jax_full_int8"])),
                       "jax_full_int8_ms_p90": float(np.percentile(ms["jax_full_int8"], 90)),
                       "full_f1_int8": decode_out("jax_full_int8")[0], "dev_full_f1_int8": dev_full_f1_int8,
                       "jax_full_int8_over_jax_full": total["jax_full_int8"] / total["jax_full"]})
    # The peers run the exact last exit: compared with the JAX full model on the exact exits.
    if "torch_eager" in ms:
        result["torch_eager_ms_p50"] = float(np.median(ms["torch_eager"]))
        result["jax_full_over_torch_eager"] = total[full_exact] / total["torch_eager"]
    if "onnxruntime" in ms:
        result["onnxruntime_ms_p50"] = float(np.median(ms["onnxruntime"]))
        result["jax_full_over_onnxruntime"] = total[full_exact] / total["onnxruntime"]
        result["jax_full_unpadded_over_onnxruntime"] = total["jax_full_unpadded"] / total["onnxruntime"]
        result["by_length"] = by_length([len(e.input_ids) for e in encoded], ms, full_exact)
        for row in points + exact_points + int8_points:
            row["over_onnxruntime"] = row["ms_p50"] / result["onnxruntime_ms_p50"]
        if args.int8:
            result["jax_full_int8_over_onnxruntime"] = total["jax_full_int8"] / total["onnxruntime"]
    # ONNX Runtime's tables decoded as the JAX variants' (the exact last exit on the same sentences).
    ort_f1 = {k: f1_of(sentences, outs[k], labels, nested) for k in ms if k.startswith("onnxruntime")}
    if "onnxruntime" in ort_f1:
        result["onnxruntime_f1"] = ort_f1["onnxruntime"]
    for name in ("onnxruntime_int8", "onnxruntime_int8_fp32_exit"):
        if name not in ms:
            continue
        base = float(np.median(ms[name]))
        result[f"{name}_ms_p50"] = base
        result[f"{name}_ms_p90"] = float(np.percentile(ms[name], 90))
        result[f"{name}_f1"] = ort_f1[name]
        result[f"{name}_quantised"] = int8_notes[name]
        result[f"jax_full_over_{name}"] = total[full_exact] / total[name]
        if args.exit_rank:  # the base of the engine's speed-ups, on rank-r exits
            result[f"jax_full_rank_exits_over_{name}"] = total["jax_full"] / total[name]
        for row in points + exact_points + loop_points + int8_points:
            row[f"over_{name}"] = row["ms_p50"] / base
        if args.int8:
            result[f"jax_full_int8_over_{name}"] = total["jax_full_int8"] / total[name]
    if int8_notes:
        result["onnxruntime_int8_weights"] = (
            "QInt8, " + ("per channel" if args.ort_int8_per_channel else "per tensor")
            + "; activations uint8, quantised per tensor at run time (quantize_dynamic)")
        for name in int8_notes:
            print(f"{name}: p50 {result[f'{name}_ms_p50']:.2f} ms, F1 {result[f'{name}_f1']:.4f} "
                  f"(ORT fp32 {result.get('onnxruntime_ms_p50', float('nan')):.2f} ms, "
                  f"F1 {result.get('onnxruntime_f1', float('nan')):.4f}); JAX full (exact exits) / {name}: "
                  f"{result[f'jax_full_over_{name}']:.2f}", flush=True)
            if args.int8:
                print(f"  JAX full, int8 weights (F1 {result['full_f1_int8']:.4f}): / {name} "
                      f"{result[f'jax_full_int8_over_{name}']:.2f}", flush=True)
            for label, rows in (("VEE engine", points), ("VEE engine, exact exits", exact_points),
                                ("Python loop", loop_points), ("VEE engine, int8 weights", int8_points)):
                for row in rows:
                    print(f"  {label} tau {row['tau']:.2g} patience {row['patience']} (avg exit "
                          f"{row['avg_exit_layer']:.2f}): p50 / {name} p50 = {row[f'over_{name}']:.2f}", flush=True)
    if peers_note:
        result["peers_note"] = peers_note
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / (
        "cpu.json" if dev.platform == "cpu" else f"gpu-{dev.device_kind.replace(' ', '_')}.json")
    write_results(out, result, markdown(result))


LENGTH_BINS = ((1, 24), (25, 48), (49, 96), (97, 512))


def by_length(subwords: list[int], ms: dict, full: str) -> list[dict]:
    """The full model's time over ONNX Runtime's per sentence-length bin (subwords): the JAX
    full model on exact exits padded to its bucket, and unpadded; total time over the bin's sentences."""
    n = np.asarray(subwords)
    rows = []
    for lo, hi in LENGTH_BINS:
        sel = (n >= lo) & (n <= hi)
        if sel.any():
            ort = ms["onnxruntime"][sel].sum()
            rows.append({"subwords": f"{lo}-{hi}", "sentences": int(sel.sum()),
                         "onnxruntime_ms_p50": float(np.median(ms["onnxruntime"][sel])),
                         "jax_full_over_onnxruntime": float(ms[full][sel].sum() / ort),
                         "jax_full_unpadded_over_onnxruntime": float(ms["jax_full_unpadded"][sel].sum() / ort)})
    return rows


def markdown(r: dict) -> str:
    int8 = "onnxruntime_int8_ms_p50" in r  # older runs have no ORT int8: no column for it
    col = lambda x: [f"{x:.2f}" if x is not None else ""] if int8 else []  # noqa: E731

    def row(cells, over=None):
        return ("| " + " | ".join(c or "\0" for c in cells + col(over)) + " |").replace(" \0 ", " ")  # empty: "| |"
    L = [f"Machine: {r['machine']}  ", f"Command: `{r['command']}`  ",
         f"Model: {r['workdir']}, {r['sentences']} test sentences of {r['data']}, batch 1 unless stated; "
         f"per sentence the best of {r['rounds']} interleaved rounds.  ",
         f"Operating points (tau, patience) chosen on {r['points_chosen_on']}: {r['dev_sentences']} sentences of "
         f"{r['dev_data']} (best dev F1 near each target average exit layer); F1, exit layers and times below are "
         f"measured on the test sentences.  ",
         f"Every wall speed-up is over the JAX full model with the same exits: `{r['jax_full_exits']}` for the engine "
         f"and the Python loop, exact for the exact-exit rows"
         + (" (the same program with `--exit-rank 0`)" if not r["exit_rank"] else "")
         + ". The peers (PyTorch, ONNX Runtime) run the last exit as trained, never truncated."
         + (f" ONNX Runtime int8: {r['onnxruntime_int8_weights']}; the last column is each p50 over ORT int8's "
            "(everything quantised)." if int8 else ""), ""]
    full_name = r["jax_full_exits"] + ("" if "exits" in r["jax_full_exits"] else " exits")
    o8 = r.get("onnxruntime_int8_ms_p50")
    over8 = lambda ms: ms / o8 if int8 else None  # noqa: E731
    L += ["| variant | dev F1 (chosen on) | dev avg exit | test F1 | test avg exit layer | layer speed-up | "
          "wall speed-up | wall / layer | p50 ms | p90 ms |" + (" p50 / ORT int8 p50 |" if int8 else ""),
          "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if int8 else ""),
          row([f"JAX full model (jitted, {full_name})", f"{r['dev_full_f1']:.4f}", f"{r['num_layers']}",
               f"{r['full_f1']:.4f}", f"{r['num_layers']}", "1.00", "1.00", "1.00",
               f"{r['jax_full_ms_p50']:.2f}", f"{r['jax_full_ms_p90']:.2f}"], over8(r["jax_full_ms_p50"]))]
    if r["exit_rank"]:
        L.append(row(["JAX full model (jitted, exact exits)", f"{r['dev_full_f1_exact_exits']:.4f}",
                      f"{r['num_layers']}", f"{r['full_f1_exact_exits']:.4f}", f"{r['num_layers']}", "1.00", "1.00",
                      "1.00", f"{r['jax_full_exact_exits_ms_p50']:.2f}", f"{r['jax_full_exact_exits_ms_p90']:.2f}"],
                     over8(r["jax_full_exact_exits_ms_p50"])))
    if "jax_full_unpadded_ms_p50" in r:
        L.append(row(["JAX full model (jitted, exact exits, each sentence at its own shape: unpadded)",
                      "", "", f"{r['full_f1_unpadded']:.4f}", f"{r['num_layers']}", "", "", "", f"{r['jax_full_unpadded_ms_p50']:.2f}",
                      f"{r['jax_full_unpadded_ms_p90']:.2f}"], over8(r["jax_full_unpadded_ms_p50"])))
    if "jax_full_int8_ms_p50" in r:
        L.append(row([f"JAX full model (jitted, {full_name}, int8 weights)", f"{r['dev_full_f1_int8']:.4f}",
                      f"{r['num_layers']}", f"{r['full_f1_int8']:.4f}", f"{r['num_layers']}", "1.00",
                      f"{1 / r['jax_full_int8_over_jax_full']:.2f}", f"{1 / r['jax_full_int8_over_jax_full']:.2f}",
                      f"{r['jax_full_int8_ms_p50']:.2f}", f"{r['jax_full_int8_ms_p90']:.2f}"],
                     over8(r["jax_full_int8_ms_p50"])))
    for name, rows in (("VEE engine", r["points"]), ("Python loop", r["python_loop_points"]),
                       ("VEE engine, exact exits", r["points_exact_exits"]),
                       ("VEE engine", r.get("points_int8", []))):  # their exits name says "int8 weights"
        for p in rows:
            L.append(row([f"{name} ({p['exits']}), tau {p['tau']:.2g}, patience {p['patience']}", f"{p['dev_f1']:.4f}",
                          f"{p['dev_avg_exit_layer']:.2f}", f"{p['f1']:.4f}", f"{p['avg_exit_layer']:.2f}",
                          f"{p['layer_speedup']:.2f}", f"{p['wall_speedup']:.2f}", f"{p['wall_over_layer_speedup']:.2f}",
                          f"{p['ms_p50']:.2f}", f"{p['ms_p90']:.2f}"], p.get("over_onnxruntime_int8")))
    peers = [("torch_eager", "PyTorch eager, all layers, exit as trained"),
             ("onnxruntime", "ONNX Runtime, all layers, exit as trained"),
             ("onnxruntime_int8", "ONNX Runtime int8 (dynamic quantisation, the exit's MatMuls too)"),
             ("onnxruntime_int8_fp32_exit", "ONNX Runtime int8, the exit in float32")]
    for key, label in peers:
        if f"{key}_ms_p50" in r:
            f1 = r.get(f"{key}_f1")
            L.append(row([label, "", "", f"{f1:.4f}" if f1 is not None else "", f"{r['num_layers']}", "", "", "",
                          f"{r[f'{key}_ms_p50']:.2f}", f"{r[f'{key}_ms_p90']:.2f}" if f"{key}_ms_p90" in r else ""],
                         over8(r[f"{key}_ms_p50"])))
    L.append("")
    if "jax_full_over_torch_eager" in r:
        L.append(f"JAX full (exact exits) / PyTorch eager time: {r['jax_full_over_torch_eager']:.2f}.  ")
    if "jax_full_over_onnxruntime" in r:
        L.append(f"JAX full (exact exits) / ONNX Runtime time: {r['jax_full_over_onnxruntime']:.2f}"
                 + (f"; unpadded: {r['jax_full_unpadded_over_onnxruntime']:.2f} (unpadded / padded "
                    f"{r['jax_full_unpadded_over_jax_full_exact_exits']:.2f})"
                    if "jax_full_unpadded_over_onnxruntime" in r else "") + ".  ")
    if "jax_full_int8_over_onnxruntime_int8" in r:
        L.append(f"JAX full, int8 weights ({full_name}) / ONNX Runtime int8 time: "
                 f"{r['jax_full_int8_over_onnxruntime_int8']:.2f}; / ONNX Runtime float32: "
                 f"{r['jax_full_int8_over_onnxruntime']:.2f}; / JAX full float32: {r['jax_full_int8_over_jax_full']:.2f}.  ")
    for key, label in peers[2:]:
        if f"jax_full_over_{key}" in r:
            L.append(f"JAX full (exact exits) / {label} time: {r[f'jax_full_over_{key}']:.2f}"
                     + (f"; on `{r['jax_full_exits']}` exits: {r[f'jax_full_rank_exits_over_{key}']:.2f}"
                        if f"jax_full_rank_exits_over_{key}" in r else "") + ".  ")
    if r.get("by_length"):
        L += ["", "| subwords | sentences | ORT float32 p50 ms | JAX full / ORT (padded) | JAX full / ORT (unpadded) |",
              "|---|---|---|---|---|"]
        L += [f"| {b['subwords']} | {b['sentences']} | {b['onnxruntime_ms_p50']:.2f} | {b['jax_full_over_onnxruntime']:.2f} | "
              f"{b['jax_full_unpadded_over_onnxruntime']:.2f} |" for b in r["by_length"]]
        L.append("")
    L.append(f"Compile time {r['compile_s']:.1f} s; recompilations after warm-up: {r['recompiles_after_warmup']}.")
    L += ["", f"Batched: the full model, `batched_infer` and the whole-batch loop all on `{r['jax_full_exits']}` exits; "
          "test sentences, points chosen on dev.", "",
          "| batch | tau | patience | avg exit layer | ideal ratio | throughput ratio (batched_infer) | "
          "ratio / ideal | whole-batch loop ratio |", "|---|---|---|---|---|---|---|---|"]
    for b in r["batched"]:
        L.append(f"| {b['batch_size']} | {b['tau']:.2g} | {b['patience']} | {b['avg_exit_layer']:.2f} | "
                 f"{b['ideal_ratio']:.2f} | {b['throughput_ratio']:.2f} | {b['throughput_ratio'] / b['ideal_ratio']:.2f} | "
                 f"{b['throughput_ratio_whole_batch_loop']:.2f} |")
    L += ["", "Cost over one layer at batch 1 (vote at the last layer: M-1 comparisons):", "",
          "| words | subwords | layer ms | exit | exit low-rank | vote kl | vote euclidean | vote cosine | vote edit |",
          "|---|---|---|---|---|---|---|---|---|"]
    for c in r["vote_fraction_of_layer"]:
        L.append(f"| {c['words']} | {c['subwords']} | {c['layer_ms']:.3f} | {c['exit_fraction']:.3f} | "
                 f"{c['exit_lowrank_fraction']:.3f} | {c['vote_kl_fraction']:.3f} | {c['vote_euclidean_fraction']:.3f} | "
                 f"{c['vote_cosine_fraction']:.3f} | {c['vote_edit_fraction']:.3f} |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
