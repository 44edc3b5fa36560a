"""Run in a subprocess by tests/test_sharding.py with ``JAX_NUM_CPU_DEVICES=8`` (the other tests
keep one device). Prints one JSON object on the last line of stdout.

    python tests/sharding_worker.py steps       # N train steps on several meshes, losses + params
    python tests/sharding_worker.py checkpoint DIR   # save on one mesh, restore on another, and back
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import random_params  # noqa: E402

from vee_jax import BertConfig  # noqa: E402
from vee_jax import distributed  # noqa: E402
from vee_jax.training import ModelSpec, init_state, make_optimizer  # noqa: E402

CFG = BertConfig(vocab_size=100, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=64, max_position=32)
SPEC = ModelSpec(bert=CFG, num_labels=4)
B, T, L, STEPS = 16, 12, 8, 5


def batches(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random batches with ragged lengths and a couple of empty padding rows each."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = rng.integers(0, L + 1, B)
        words[-2:] = 0  # padding rows, as data.collate makes them
        b = {k: np.zeros(s, np.int32) for k, s in
             {"input_ids": (B, T), "attention_mask": (B, T), "token_type_ids": (B, T), "word_index": (B, L),
              "word_end": (B, L), "word_mask": (B, L), "lengths": (B,), "gold": (B, L, L)}.items()}
        for r, w in enumerate(words):
            n_sub = w + 2 if w else 0
            b["input_ids"][r, :n_sub] = rng.integers(5, CFG.vocab_size, n_sub)
            b["attention_mask"][r, :n_sub] = 1
            b["word_index"][r, :w] = np.arange(1, w + 1)
            b["word_end"][r, :w] = np.arange(1, w + 1)
            b["word_mask"][r, :w] = 1
            b["lengths"][r] = w
            for _ in range(2):
                if w:
                    s = rng.integers(0, w)
                    b["gold"][r, s, rng.integers(s, w)] = rng.integers(1, SPEC.num_labels)
        out.append(b)
    return out


def mesh_config(data: int, fsdp: int, min_size: int = 256) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "fsdp_min_size": min_size})


def fresh_state(mesh, min_size=256):
    opt = make_optimizer(100, lr=1e-3, exit_lr=1e-2)
    state = init_state(SPEC, random_params(CFG), opt, seed=3)
    sh = distributed.state_shardings(state, mesh, min_size)
    return distributed.place(state, sh), sh, opt


def train(data: int, fsdp: int) -> dict:
    devices = jax.devices()[: data * fsdp]
    mesh = distributed.make_mesh(mesh_config(data, fsdp), devices)
    state, sh, opt = fresh_state(mesh)
    step = distributed.make_train_step(SPEC, opt, mesh, sh)
    losses = []
    for b in batches(STEPS):
        state, metrics = step(state, distributed.shard_batch(b, mesh))
        losses.append(float(metrics["loss"]))
    params = jax.tree.map(np.asarray, state["params"])
    sharded = sum(1 for s in jax.tree.leaves(jax.tree.map(lambda x: x.sharding.spec, state["params"]),
                                             is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
                  if "fsdp" in s)
    return {"losses": losses, "params": params, "sharded_leaves": sharded,
            "devices": len(state["params"]["exits"]["U"].sharding.device_set)}


def steps() -> dict:
    runs = {f"{d}x{f}": train(d, f) for d, f in ((1, 1), (8, 1), (4, 2))}
    ref = runs["1x1"]["params"]
    ref_norm = np.sqrt(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in jax.tree.leaves(ref)))
    out = {}
    for name, r in runs.items():
        diff = np.sqrt(sum(float(np.sum((a.astype(np.float64) - b) ** 2))
                           for a, b in zip(jax.tree.leaves(r["params"]), jax.tree.leaves(ref))))
        out[name] = {"losses": r["losses"], "param_diff": diff / ref_norm, "sharded_leaves": r["sharded_leaves"],
                     "devices": r["devices"]}
    return {"device_count": jax.device_count(), "runs": out}


def checkpoint(folder: str) -> dict:
    from vee_jax.trained import checkpoint_manager, restore_checkpoint, save_checkpoint

    one = distributed.make_mesh(mesh_config(1, 1), jax.devices()[:1])
    eight = distributed.make_mesh(mesh_config(4, 2), jax.devices())
    state1, _, opt = fresh_state(one)
    step1 = distributed.make_train_step(SPEC, opt, one, distributed.state_shardings(state1, one, 256))
    state1, _ = step1(state1, distributed.shard_batch(batches(1)[0], one))  # moments non-zero
    want = jax.tree.map(np.asarray, state1)
    meta = {"epoch": 0, "batch": 1, "step": 1}
    save_checkpoint(checkpoint_manager(Path(folder), "latest"), 1, state1, meta)

    # 1 device -> 8 devices (data=4, fsdp=2): values equal, laid out for the new mesh.
    like8, sh8, _ = fresh_state(eight)
    got8, meta8 = restore_checkpoint(checkpoint_manager(Path(folder), "latest"), like8)
    equal8 = all(np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got8)))
    same_layout = all(a.sharding == s for a, s in zip(jax.tree.leaves(got8), jax.tree.leaves(sh8)))
    fsdp_leaves = sum(1 for s in jax.tree.leaves(sh8) if "fsdp" in s.spec)

    # Train one step on 8 devices, save, restore on one device: equal again.
    step8 = distributed.make_train_step(SPEC, opt, eight, sh8)
    got8, _ = step8(got8, distributed.shard_batch(batches(2)[1], eight))
    want8 = jax.tree.map(np.asarray, got8)
    save_checkpoint(checkpoint_manager(Path(folder), "latest"), 2, got8, {**meta8, "step": 2})
    like1, sh1, _ = fresh_state(one)
    got1, meta1 = restore_checkpoint(checkpoint_manager(Path(folder), "latest"), like1)
    equal1 = all(np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(want8), jax.tree.leaves(got1)))
    on_one = all(len(a.sharding.device_set) == 1 for a in jax.tree.leaves(got1))
    return {"equal_8": equal8, "layout_8": same_layout, "fsdp_leaves_8": fsdp_leaves, "meta_8": meta8,
            "equal_1": equal1, "on_one_device": on_one, "meta_1": meta1}


if __name__ == "__main__":
    result = steps() if sys.argv[1] == "steps" else checkpoint(sys.argv[2])
    print(json.dumps(result))
