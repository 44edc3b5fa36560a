"""Evaluation exit by exit (budgeted exiting, Sec. 2.3.2): P/R/F1 and the entropy of Eq. 6 per exit;
and evaluation of one exit policy (VEE or a baseline) with the online engine, timed."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

from .data.features import Encoded, iterate_batches
from .data.sentence import Sentence
from .decode import decode_table
from .distributed import to_host
from .measures import normalized_entropy
from .metrics import span_prf
from .training import ModelSpec, eval_step
from .windows import Gather, merge_tables, sentence_exit_layer

_entropy = jax.jit(normalized_entropy)


def exit_table_batches(state: Any, spec: ModelSpec, encoded: Sequence[Encoded], batch_size: int, *,
                       progress: bool = False, step=None):
    """Yield ``(sentence indices, lengths [B], probs [M, B, L, L, K] numpy, entropy [M, B])`` per batch.

    ``step(state, batch) -> probs``: default ``eval_step`` on one device; the trainer passes a
    mesh-sharded one (``distributed.make_eval_step``).
    """
    batches = iterate_batches(encoded, batch_size)
    if progress:
        batches = tqdm(list(batches), desc="eval", unit="batch", leave=False)
    for idx, batch in batches:
        probs = step(state, batch) if step is not None else eval_step(state, batch, spec=spec)
        ent = _entropy(probs, batch["lengths"])
        yield idx, batch["lengths"], np.asarray(probs), np.asarray(ent)


def predict_exits(
    state: Any, spec: ModelSpec, encoded: Sequence[Encoded], labels: Sequence[str], nested: bool,
    batch_size: int = 32, *, progress: bool = False, step=None,
) -> tuple[list[list[set]], np.ndarray]:
    """Decoded spans of every exit: ``(pred[m][i] = {(start, end, type)}, entropy [M, N])`` over sentences.

    ``encoded``: rows (``encode_sentences``); a windowed sentence's tables are merged exit by
    exit (``windows.merge_tables``) before decoding, and its entropy is the merged table's.
    """
    M = spec.num_exits
    gather = Gather([e.offset for e in encoded])
    N = len(gather.groups)
    pred: list[list[set]] = [[set() for _ in range(N)] for _ in range(M)]
    entropy = np.zeros((M, N), np.float32)
    for idx, lengths, probs, ent in exit_table_batches(state, spec, encoded, batch_size, progress=progress, step=step):
        for r, i in enumerate(idx):
            n = int(lengths[r])
            for s, tables in gather.add(i, (probs[:, r, :n, :n], ent[:, r])):
                rows = [encoded[j] for j in gather.groups[s]]
                table, entropy[:, s] = _sentence_tables(rows, tables)
                for m in range(M):
                    pred[m][s] = {(a, b, labels[c - 1]) for a, b, c, _ in decode_table(table[m], table.shape[1], nested)}
    return pred, entropy


def _words(rows: Sequence[Encoded]) -> int:
    """A sentence's words from its rows (one row: the row's words)."""
    return rows[0].num_words if len(rows) > 1 else rows[0].length


def _sentence_tables(rows: Sequence[Encoded], tables: Sequence[tuple[np.ndarray, np.ndarray]]):
    """``(every exit's table [M, n, n, K], entropy [M])`` of a sentence from its rows' ``(tables, entropy)``."""
    if len(rows) == 1:
        return tables[0]
    merged = merge_tables([t for t, _ in tables], [e.window for e in rows], _words(rows))
    return merged, np.asarray(_entropy(merged[:, None], np.asarray([merged.shape[1]])))[:, 0]


def evaluate_exits(
    state: Any, spec: ModelSpec, sentences: Sequence[Sentence], encoded: Sequence[Encoded],
    labels: Sequence[str], nested: bool, batch_size: int = 32, *, progress: bool = False, step=None,
) -> dict[str, Any]:
    """Per-exit micro P/R/F1 (with per-type scores) and mean normalised entropy.

    Gold spans come from ``sentences`` themselves, so entities that no window holds (longer
    than the windows' overlap, ``lost_spans``) count as missed rather than disappearing.
    """
    pred, entropy = predict_exits(state, spec, encoded, labels, nested, batch_size, progress=progress, step=step)
    gold = [s.span_set() for s in sentences]
    rows = []
    for m in range(spec.num_exits):
        r = span_prf(gold, pred[m], labels)
        rows.append({"exit": m + 1, "precision": r["precision"], "recall": r["recall"], "f1": r["f1"],
                     "entropy": float(entropy[m].mean()) if len(sentences) else 0.0,
                     "tp": r["tp"], "n_gold": r["n_gold"], "n_pred": r["n_pred"], "per_type": r["per_type"]})
    return {"per_exit": rows, "num_sentences": len(sentences),
            "lost_spans": sum(len(e.lost_spans) for e in encoded)}


def plot_per_exit(per_exit: Sequence[dict], path: str, title: str = "") -> None:
    """The paper's Figure 1: F1 and normalised entropy against the exit layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = [r["exit"] for r in per_exit]
    fig, ax1 = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    ax1.plot(m, [r["f1"] for r in per_exit], "o-", color="tab:blue", label="F1")
    ax1.set_xlabel("exit (layer)")
    ax1.set_ylabel("F1", color="tab:blue")
    ax1.set_xticks(m)
    ax2 = ax1.twinx()
    ax2.plot(m, [r["entropy"] for r in per_exit], "s--", color="tab:red", label="entropy")
    ax2.set_ylabel("normalised entropy (Eq. 6)", color="tab:red")
    ax1.set_title(title or "F1 and entropy per exit")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_table(per_exit: Sequence[dict]) -> str:
    lines = [f"{'exit':>4}  {'P':>7}  {'R':>7}  {'F1':>7}  {'entropy':>8}"]
    for r in per_exit:
        lines.append(f"{r['exit']:>4}  {r['precision']:7.4f}  {r['recall']:7.4f}  {r['f1']:7.4f}  {r['entropy']:8.4f}")
    return "\n".join(lines)


# --- one exit policy (Sec. 4.2, 5.2): the online engine, timed, checked against the offline replay ---
NO_ENTITY = "O"  # the name of class 0 in outputs


def _engine_pass(spec: ModelSpec, model: Any, batches: list, policy, *, keep: bool):
    """Run ``vee_infer`` over batches with ``engine.prepare``'s model; (seconds, numpy outputs when ``keep``).

    Batches already split over a mesh (``distributed.shard_batch``) run sharded: each device
    holds its rows, the loop stops when every row of every device has exited.
    """
    import time

    from .engine import vee_infer

    outs = []
    t0 = time.perf_counter()
    for _, batch in batches:
        out = vee_infer(spec.bert, model["encoder"], model["exits"], batch, policy, pooling=spec.pooling)
        jax.block_until_ready(out)
        if keep:
            outs.append(to_host(out))
    return time.perf_counter() - t0, outs


def _warm_up(spec: ModelSpec, model: Any, batches: list, policy) -> None:
    """Compile the engine for every batch shape before timing (one batch per shape)."""
    seen = set()
    first = []
    for idx, batch in batches:
        shape = batch["input_ids"].shape + batch["word_index"].shape
        if shape not in seen:
            seen.add(shape)
            first.append((idx, batch))
    _engine_pass(spec, model, first, policy, keep=False)


def evaluate_policy(
    state: Any, spec: ModelSpec, sentences: Sequence[Sentence], encoded: Sequence[Encoded],
    labels: Sequence[str], nested: bool, policy, batch_size: int = 32, *,
    dump_tables: str | None = None, progress: bool = False, exit_rank: int = 0, mesh=None,
) -> dict[str, Any]:
    """Evaluate one exit policy with the online engine; time it against the full model.

    ``mesh``: a ``(data, fsdp)`` mesh (``distributed.data_mesh``): the engine runs on batches
    split over its devices, the weights replicated (``eval.py --mesh-data``).

    ``exit_rank`` > 0: the policy runs on low-rank exits (``exits.compress_exits``; the
    offline replay uses the same exits), the full model on the exact ones.

    Runs ``vee_infer`` with ``policy`` and with ``FullPolicy`` over the same batches (each
    compiled first, then timed over one whole pass), decodes every sentence's table at its exit,
    and replays the policy offline on ``eval_step``'s tables to count disagreements and
    near-ties (NOTES item 11: average exit layer and wall-clock time side by side).
    ``dump_tables``: write every sentence's offline tables ``probs_<i>`` [M, n_i, n_i, K] here.

    Returns P/R/F1 (+ per type), ``avg_exit_layer``, ``layer_speedup`` (M / avg),
    ``ms_per_sentence``, ``full_ms_per_sentence``, ``time_speedup``, ``labels`` (class names,
    index 0 = no entity), ``exit_layers`` and ``predictions`` (data order), ``exit_histogram``,
    ``near_ties`` and ``offline_disagreements``.
    """
    from .engine import prepare
    from .exits import compress_exits
    from .policies import FullPolicy, check_policy

    M, N = spec.num_exits, len(sentences)
    check_policy(policy, M)
    params = state["params"]
    exits_used = compress_exits(params["exits"], exit_rank) if exit_rank else params["exits"]
    model = prepare(spec.bert, params["encoder"], exits_used)
    exact = prepare(spec.bert, params["encoder"], params["exits"]) if exit_rank else model
    host_batches = list(iterate_batches(encoded, batch_size))
    batches = host_batches
    if mesh is not None:
        from .distributed import place, replicated, shard_batch

        on_every_device = lambda m: place(m, jax.tree.map(lambda _: replicated(mesh), m))  # noqa: E731
        same = exact is model  # exit_rank 0: the policy runs the exact exits, one copy
        model = on_every_device(model)
        exact = model if same else on_every_device(exact)
        batches = [(idx, shard_batch(b, mesh)) for idx, b in host_batches]
    _warm_up(spec, model, batches, policy)
    _warm_up(spec, exact, batches, FullPolicy())
    # Both timed passes do the same work (no host copies); the outputs come from an untimed pass.
    seconds, _ = _engine_pass(spec, model, batches, policy, keep=False)
    full_seconds, _ = _engine_pass(spec, exact, batches, FullPolicy(), keep=False)
    _, outs = _engine_pass(spec, model, batches, policy, keep=True)

    exit_layers, pred, near_ties, disagree, tables = _decide_sentences(
        spec, params, exits_used, encoded, N, host_batches, outs, policy, labels, nested,
        keep_tables=bool(dump_tables), progress=progress)
    if dump_tables:
        from pathlib import Path

        Path(dump_tables).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(dump_tables, **tables)

    r = span_prf([s.span_set() for s in sentences], [set(p) for p in pred], labels)
    avg = float(exit_layers.mean()) if N else float(M)
    return {
        "strategy": policy.name, "policy": dataclasses.asdict(policy),
        "precision": r["precision"], "recall": r["recall"], "f1": r["f1"],
        "tp": r["tp"], "n_gold": r["n_gold"], "n_pred": r["n_pred"], "per_type": r["per_type"],
        "num_layers": M, "num_sentences": N,
        "avg_exit_layer": avg, "layer_speedup": M / avg if avg else float("nan"),
        "ms_per_sentence": 1000 * seconds / max(N, 1), "full_ms_per_sentence": 1000 * full_seconds / max(N, 1),
        "time_speedup": full_seconds / seconds if seconds else float("nan"), "batch_size": batch_size,
        "exit_rank": exit_rank,
        "exit_histogram": {str(m): int((exit_layers == m).sum()) for m in range(1, M + 1)},
        "near_ties": near_ties, "offline_disagreements": disagree,
        "labels": [NO_ENTITY, *labels], "exit_layers": exit_layers.tolist(),
        "predictions": [[[s, e, t] for s, e, t in sorted(p)] for p in pred],
        "lost_spans": sum(len(e.lost_spans) for e in encoded),
    }


def _decide_sentences(spec, params, exits_used, encoded, N, host_batches, outs, policy, labels, nested, *,
                      keep_tables: bool, progress: bool):
    """Per sentence: exit layer, decoded spans; near-ties and offline disagreements; offline tables.

    Each batch's engine outputs ``outs`` are checked against the offline ``replay`` of the same
    rows. A windowed sentence is decided once all its rows are in: its windows' tables at their
    own exits merged (``windows.merge_tables``), its exit layer the max over its windows, online
    and offline alike. Returns ``(exit_layers [N], pred, near_ties, disagreements, tables)``.
    """
    from .offline import exit_probs, replay

    exit_layers = np.zeros(N, np.int64)
    pred: list[list[tuple[int, int, str]]] = [[] for _ in range(N)]
    near_ties = disagree = 0
    tables = {}
    gather = Gather([e.offset for e in encoded])
    it = zip(host_batches, outs)
    if progress:
        it = tqdm(list(it), desc="decode + replay", unit="batch", leave=False)
    for (idx, batch), out in it:
        full = np.asarray(exit_probs(spec.bert, params["encoder"], exits_used, batch, pooling=spec.pooling))
        off = replay(policy, full, batch["lengths"])
        near_ties += int(off["near_ties"][:len(idx)].sum())
        for r, i in enumerate(idx):
            n = int(batch["lengths"][r])
            row = (out["probs"][r, :n, :n], int(out["exit_layer"][r]), int(off["exit_layer"][r]),
                   full[:, r, :n, :n] if keep_tables else None)
            for k, got in gather.add(i, row):
                rows = [encoded[j] for j in gather.groups[k]]
                windows, n_k = [e.window for e in rows], _words(rows)
                table = merge_tables([g[0] for g in got], windows, n_k)
                exit_layers[k] = sentence_exit_layer([g[1] for g in got])
                pred[k] = [(s, e, labels[c - 1]) for s, e, c, _ in decode_table(table, n_k, nested)]
                disagree += int(sentence_exit_layer([g[2] for g in got]) != exit_layers[k])
                if keep_tables:
                    tables[f"probs_{k}"] = merge_tables([g[3] for g in got], windows, n_k)
    return exit_layers, pred, near_ties, disagree, tables


def format_policy(result: dict) -> str:
    """A few lines: the policy, P/R/F1, exit layers, layer and wall-clock speed-ups."""
    pol = ", ".join(f"{k}={v}" for k, v in result["policy"].items())
    hist = " ".join(f"{m}:{c}" for m, c in result["exit_histogram"].items())
    return "\n".join([
        f"strategy {result['strategy']} ({pol}) on {result['num_sentences']} sentences, batch {result['batch_size']}",
        f"P {result['precision']:.4f}  R {result['recall']:.4f}  F1 {result['f1']:.4f}",
        f"avg exit layer {result['avg_exit_layer']:.3f} of {result['num_layers']} "
        f"(layer speed-up {result['layer_speedup']:.2f}x); exits per layer {hist}",
        f"{result['ms_per_sentence']:.2f} ms/sentence vs full model {result['full_ms_per_sentence']:.2f} ms/sentence "
        f"(measured speed-up {result['time_speedup']:.2f}x)",
        f"offline replay: {result['offline_disagreements']} exit-layer disagreements, {result['near_ties']} near-ties",
    ])
