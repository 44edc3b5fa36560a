"""Fingerprints of the engine's compiled programs: did a refactor change what XLA runs?

    python bench/hlo_fingerprint.py > after.txt      # in each checkout, then diff the two files

Compiles, for a MiniLM-shaped random model at batch 32, 48 subwords: one transformer layer, one
biaffine exit, and ``vee_infer``'s whole program for the full model and VEE-KL (patience 2),
and prints a hash of each optimised HLO module with names, ids and metadata stripped. Equal
hashes mean the same compiled program, so any speed difference between two checkouts is
machine noise (used to check the Flax modules against the functions they replaced).
"""
import sys, re, functools, hashlib
from pathlib import Path
import jax, jax.numpy as jnp, numpy as np
from vee_jax import BertConfig, init_exits
from vee_jax.bert import transformer_layer, attention_bias
from vee_jax.exits import biaffine
from vee_jax.engine import prepare, _infer, traced_policy, infer_inputs
from vee_jax.policies import FullPolicy, VeePolicy
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from helpers import random_params
cfg = BertConfig(vocab_size=1000, hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, max_position=512)
params = random_params(cfg); exits = init_exits(jax.random.PRNGKey(1), cfg, 6)
model = prepare(cfg, params, exits)
B, T, L = 32, 48, 32
batch = {"input_ids": np.ones((B, T), np.int32), "attention_mask": np.ones((B, T), np.int32),
         "word_index": np.tile(np.arange(1, L + 1, dtype=np.int32), (B, 1)), "word_mask": np.ones((B, L), np.int32)}
def normalised(txt: str) -> str:
    """The instruction lines, without metadata, stack frames and numeric name suffixes."""
    lines = [l for l in txt.splitlines() if re.match(r"^\s*(ROOT )?%?[\w.\-]+ = ", l)]
    out = []
    for l in lines:
        l = re.sub(r", metadata=\{[^}]*\}", "", l)
        l = re.sub(r"stack_frame_id=\d+", "", l)
        out.append(re.sub(r"_\d+", "_N", re.sub(r"\.\d+", ".N", l)))
    return "\n".join(out)
progs = {}
h = jnp.ones((B, T, 384)); bias = attention_bias(jnp.ones((B, T), jnp.int32), jnp.float32)
lp = model["encoder"]["layers"][0]
progs["transformer_layer"] = jax.jit(functools.partial(transformer_layer, cfg)).lower(lp, h, bias).compile().as_text()
w = jnp.ones((B, L, 384))
progs["biaffine"] = jax.jit(biaffine).lower(model["exits"][0], w).compile().as_text()
for pol in (FullPolicy(), VeePolicy("kl", 0.1, 2)):
    static, knobs = traced_policy(pol)
    progs[f"vee_infer {pol.name}"] = _infer.lower(cfg, model["encoder"], model["exits"], infer_inputs(batch), knobs,
                                                static, "first").compile().as_text()
for name, txt in progs.items():
    norm = normalised(txt)
    print(f"{name}: {hashlib.sha256(norm.encode()).hexdigest()[:16]} ({len(norm.splitlines())} instructions)")
