"""Training throughput: vee_jax's jitted ``train_step`` against a plain PyTorch loop, one process.

    python bench/train_speed.py                                   # shipped MiniLM, fresh exits
    python bench/train_speed.py --workdir ~/vee_runs/genia --batch-size 16 --steps 20

Both sides train the same model on the same synthetic batch: BERT (transformers' ``BertModel``
with the same weights in torch) with dropout on, a biaffine exit after every layer (M exits,
initialised from the same arrays), the loss of ``vee_jax.loss.exit_losses`` (per exit the
cross-entropy over valid cells s <= e < length over the number of valid cells, then the
m-weighted average over exits), AdamW with global-norm clipping 1.0.

Differences that do not matter for speed: torch uses one parameter group (lr 1e-4, weight decay
0.01 on every tensor, constant rate) where vee_jax's ``make_optimizer`` gives the exits their own
rate, decays only matrices and schedules the rate; the dropout masks differ (different RNGs).

Warm-up (compilation, first steps) is excluded; then blocks of ``--steps`` steps alternate
(JAX, torch, JAX, torch, ...). Sentences/s per side are total sentences over total time of its
blocks. A sanity line compares the two losses on the first batch with dropout off.
Writes ``--out`` (JSON) and the Markdown table beside it (``.md``).
"""

from __future__ import annotations

import argparse
import os
import shlex
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

from vee_jax.loss import exit_losses  # noqa: E402
from vee_jax.training import ModelSpec, forward_logits, init_state, make_optimizer, train_step  # noqa: E402
from vee_jax.weights import load_backbone, resolve_backbone, state_from_params  # noqa: E402

LR, WEIGHT_DECAY, CLIP = 1e-4, 0.01, 1.0


# --- setup -------------------------------------------------------------------------------------
def machine() -> dict:
    import torch

    cpu = cpu_name()
    dev = jax.devices()[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "jax": jax.__version__, "jax_device": f"{dev.platform} ({dev.device_kind})",
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def synthetic_batch(vocab_size: int, B: int, T: int, K: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A full batch in the format of ``vee_jax.data.features.collate``: B sentences of T subwords
    ([CLS] + T-2 random ids + [SEP]), L = T-2 one-subword words (word i = subword i+1), a few
    random gold spans per sentence (class 1..K-1, up to 4 words long)."""
    rng = np.random.default_rng(seed)
    L = T - 2
    ids = rng.integers(1000, vocab_size, size=(B, T)).astype(np.int32)  # past the special/unused ids
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS], [SEP] in BERT vocabularies (values only matter as ids)
    gold = np.zeros((B, L, L), np.int32)
    for r in range(B):
        for _ in range(max(1, L // 6)):
            s = int(rng.integers(0, L))
            e = min(L - 1, s + int(rng.integers(0, 4)))
            gold[r, s, e] = int(rng.integers(1, K))
    pos = np.arange(L, dtype=np.int32)
    return {
        "input_ids": ids,
        "attention_mask": np.ones((B, T), np.int32),
        "token_type_ids": np.zeros((B, T), np.int32),
        "word_index": np.tile(pos + 1, (B, 1)),
        "word_end": np.tile(pos + 2, (B, 1)),
        "word_mask": np.ones((B, L), np.int32),
        "lengths": np.full((B,), L, np.int32),
        "gold": gold,
    }


def load_model(args):
    """(spec, encoder params, exit params or None, backbone folder)."""
    if args.workdir:
        from vee_jax.trained import TrainedModel

        model = TrainedModel.load(args.workdir)
        info, spec, state = model.info, model.spec, model.state
        if spec.ffnn_size or spec.pooling != "first" or spec.exits != "all":
            raise SystemExit(f"{args.workdir}: the torch side implements the paper's exits only "
                             f"(no ffnn, first-subword pooling, exits='all'); got ffnn_size={spec.ffnn_size}, "
                             f"pooling={spec.pooling!r}, exits={spec.exits!r}")
        return spec, state["params"]["encoder"], state["params"]["exits"], resolve_backbone(info["backbone"])
    config, params, _ = load_backbone(args.backbone)
    return ModelSpec(bert=config, num_labels=args.num_labels), params, None, resolve_backbone(args.backbone)


# --- the torch side ----------------------------------------------------------------------------
def torch_model(spec: ModelSpec, backbone_dir: Path, encoder, exits):
    """``BertModel`` with the same weights plus M stacked biaffine exits (U [M, d, K, d],
    W_start, W_end [M, d, K], b [M, K]) as trainable parameters, the same layout as vee_jax."""
    import torch
    from transformers import BertConfig as HFConfig, BertModel

    hf = HFConfig.from_pretrained(str(backbone_dir))
    bert = BertModel(hf, add_pooling_layer=False)
    bert.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in state_from_params(spec.bert, encoder).items()},
                         strict=True)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert
            self.exits = torch.nn.ParameterDict(
                {k: torch.nn.Parameter(torch.from_numpy(np.array(exits[k], np.float32)))
                 for k in ("U", "W_start", "W_end", "b")})

        def forward(self, b):
            out = self.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                            token_type_ids=b["token_type_ids"], output_hidden_states=True)
            hidden = torch.stack(out.hidden_states[1:])  # [M, B, T, d]: exit m reads layer m
            M, _, _, d = hidden.shape
            idx = b["word_index"][None, :, :, None].expand(M, -1, -1, d)
            words = torch.gather(hidden, 2, idx) * b["word_mask"][None, :, :, None].to(hidden.dtype)  # [M, B, L, d]
            p = self.exits
            hu = torch.einsum("mbsi,mikj->mbskj", words, p["U"])  # H_s U
            bil = torch.einsum("mbskj,mbej->mbsek", hu, words)  # (H_s U) H_e^T
            lin = (torch.einsum("mbsi,mik->mbsk", words, p["W_start"])[:, :, :, None]
                   + torch.einsum("mbei,mik->mbek", words, p["W_end"])[:, :, None])
            return bil + lin + p["b"][:, None, None, None]  # [M, B, L, L, K]

    return Model(), hf


def torch_loss(logits, gold, lengths):
    """vee_jax.loss.exit_losses in torch: (loss, per_exit [M])."""
    import torch

    M, _, L = logits.shape[:3]
    s = torch.arange(L)[:, None]
    e = torch.arange(L)[None, :]
    mask = ((s <= e) & (e < lengths[:, None, None])).float()  # [B, L, L]
    logp = torch.log_softmax(logits.float(), dim=-1)
    nll = -torch.gather(logp, -1, gold[None, ..., None].expand(M, -1, -1, -1, 1))[..., 0]
    n = mask.sum().clamp(min=1.0)
    per_exit = (nll * mask[None]).sum(dim=(1, 2, 3)) / n
    w = torch.arange(1, M + 1, dtype=torch.float32)
    return (w * per_exit).sum() / w.sum(), per_exit


# --- main --------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--workdir", help="a trained workdir: its encoder, exits and classes")
    src.add_argument("--backbone", default="minilm", help="backbone alias or folder (fresh exits)")
    ap.add_argument("--num-labels", type=int, default=6, help="K classes with --backbone (0 = no entity)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--subwords", type=int, default=48, help="T; words L = T - 2")
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=2, help="timed blocks per side, alternating")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side after compilation")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_speed_cpu.json"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(os.cpu_count() or 2)
    torch.manual_seed(0)

    spec, encoder, exits, backbone_dir = load_model(args)
    optimizer = make_optimizer(100_000, lr=LR, weight_decay=WEIGHT_DECAY, clip_norm=CLIP)
    state = init_state(spec, encoder, optimizer, seed=0)
    if exits is not None:  # a trained workdir: its exits instead of fresh ones (optimiser state shapes agree)
        state["params"]["exits"] = jax.tree.map(jnp.copy, exits)
    K, M = spec.num_labels, spec.num_exits
    B, T = args.batch_size, args.subwords
    np_batch = synthetic_batch(spec.bert.vocab_size, B, T, K)
    jb = {k: jnp.asarray(v) for k, v in np_batch.items()}
    tb = {k: torch.from_numpy(v.astype(np.int64)) for k, v in np_batch.items()}

    model, hf = torch_model(spec, backbone_dir, state["params"]["encoder"], state["params"]["exits"])

    # Sanity: dropout off, the same initial weights, the same batch -> the same loss.
    jl, jpe = jax.jit(lambda p, b: exit_losses(forward_logits(spec, p, b, rng=None), b["gold"], b["lengths"],
                                               spec.exit_weights()))(state["params"], jb)
    model.eval()
    with torch.no_grad():
        tl, tpe = torch_loss(model(tb), tb["gold"], tb["lengths"])
    sanity = {"jax_loss_eval": float(jl), "torch_loss_eval": float(tl), "abs_diff": abs(float(jl) - float(tl)),
              "per_exit_max_abs_diff": float(np.max(np.abs(np.asarray(jpe) - tpe.numpy())))}
    print(f"sanity (dropout off, step 0): jax loss {sanity['jax_loss_eval']:.6f}, torch loss "
          f"{sanity['torch_loss_eval']:.6f}, |diff| {sanity['abs_diff']:.2e} (per exit max {sanity['per_exit_max_abs_diff']:.2e})",
          flush=True)

    # JAX: compile (timed separately), then warm-up steps.
    t0 = time.perf_counter()
    step = train_step.lower(state, jb, spec=spec, optimizer=optimizer).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, metrics = step(state, jb)
    jax.block_until_ready(metrics)
    first_step_s = time.perf_counter() - t0
    first_losses = {"jax_train_loss_step1": float(metrics["loss"])}
    for _ in range(args.warmup - 1):
        state, metrics = step(state, jb)
    jax.block_until_ready(state)

    # torch: train mode, AdamW (one parameter group), clipping, warm-up steps.
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY, betas=(0.9, 0.999), eps=1e-8)

    def torch_step():
        loss, _ = torch_loss(model(tb), tb["gold"], tb["lengths"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    first_losses["torch_train_loss_step1"] = torch_step().item()
    for _ in range(args.warmup - 1):
        torch_step()

    def jax_block():
        nonlocal state
        t = time.perf_counter()
        for _ in range(args.steps):
            state, m = step(state, jb)
        jax.block_until_ready(state)
        return time.perf_counter() - t, float(m["loss"])

    def torch_block():
        t = time.perf_counter()
        for _ in range(args.steps):
            loss = torch_step()
        return time.perf_counter() - t, loss.item()

    blocks = {"jax": [], "torch": []}
    last_loss = {}
    for r in range(args.rounds):
        for name, fn in (("jax", jax_block), ("torch", torch_block)):
            dt, last_loss[name] = fn()
            blocks[name].append(dt)
            print(f"round {r + 1} {name}: {args.steps} steps in {dt:.3f} s = {B * args.steps / dt:.1f} sentences/s",
                  flush=True)

    sps = {k: B * args.steps * len(v) / sum(v) for k, v in blocks.items()}
    best = {k: B * args.steps / min(v) for k, v in blocks.items()}
    result = {
        "machine": machine(),
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *(argv or sys.argv[1:])]),
        "model": str(args.workdir or args.backbone),
        "shape": {"batch": B, "subwords": T, "words": T - 2, "exits": M, "classes": K},
        "steps_per_block": args.steps, "rounds": args.rounds, "warmup_steps": args.warmup,
        "torch_attn_implementation": getattr(hf, "_attn_implementation", None),
        "jax_compile_s": compile_s, "jax_first_step_s": first_step_s,
        "block_seconds": blocks,
        "sentences_per_s": sps, "sentences_per_s_best_block": best,
        "ms_per_step": {k: 1000 * sum(v) / (args.steps * len(v)) for k, v in blocks.items()},
        "jax_over_torch_throughput": sps["jax"] / sps["torch"],
        "sanity_dropout_off": sanity,
        "train_losses": {**first_losses, "jax_last": last_loss.get("jax"), "torch_last": last_loss.get("torch")},
        "notes": ("torch: one AdamW parameter group (lr 1e-4, wd 0.01 on all tensors, constant lr); vee_jax: "
                  "make_optimizer (exit lr 1e-3, decay on matrices only, warmup schedule). Neither matters for speed."),
    }
    out = Path(args.out)
    write_results(out, result, markdown(result))


def markdown(r: dict) -> str:
    m, s = r["machine"], r["shape"]
    L = [f"Machine: {m['cpu']}, {m['cores']} cores, jax {m['jax']} on {m['jax_device']}, torch {m['torch']} "
         f"({m['torch_threads']} threads)  ",
         f"Command: `{r['command']}`  ",
         f"Model: {r['model']}, {s['exits']} exits, K = {s['classes']}; batch {s['batch']} x {s['subwords']} subwords "
         f"({s['words']} words), dropout on; {r['rounds']} alternating blocks of {r['steps_per_block']} steps per side "
         f"after {r['warmup_steps']} warm-up steps.", "",
         "| trainer | sentences/s | best block | ms/step |", "|---|---|---|---|"]
    names = {"jax": "vee_jax `train_step` (jitted)", "torch": f"PyTorch eager (`BertModel`, {r['torch_attn_implementation']} attention)"}
    for k in ("jax", "torch"):
        L.append(f"| {names[k]} | {r['sentences_per_s'][k]:.1f} | {r['sentences_per_s_best_block'][k]:.1f} | "
                 f"{r['ms_per_step'][k]:.1f} |")
    sn = r["sanity_dropout_off"]
    L += ["", f"JAX / PyTorch throughput: {r['jax_over_torch_throughput']:.2f}.  ",
          f"Compile time of train_step: {r['jax_compile_s']:.1f} s (first step after it {r['jax_first_step_s']:.2f} s).  ",
          f"Sanity, dropout off, step 0: JAX loss {sn['jax_loss_eval']:.6f}, PyTorch loss {sn['torch_loss_eval']:.6f} "
          f"(|diff| {sn['abs_diff']:.1e}).  ",
          f"Note: {r['notes']}"]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
