"""Shared fixtures: tiny random Hugging Face folders (BERT, ALBERT) and the shipped MiniLM."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # tests build their datasets (test_hf_data.py)
# Commands (in-process and in subprocesses) keep compiled programs in a cache of this run's own,
# as they would in ~/.cache/vee_jax/xla: later runs of the same programs read it, the user's is untouched.
os.environ.setdefault("VEE_JAX_XLA_CACHE", tempfile.mkdtemp(prefix="vee_jax_xla_"))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_tiny_tokenizer(folder: Path, vocab_size: int) -> None:
    """A BERT WordPiece tokenizer with ``vocab_size`` entries: specials, then w0, w1, ..."""
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + [f"w{i}" for i in range(vocab_size - len(specials))]
    folder.mkdir(parents=True, exist_ok=True)
    # vocab= (a dict): transformers 5 ignores vocab_file= and would build a 5-entry tokenizer.
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    assert len(tok) == vocab_size, (len(tok), vocab_size)
    tok.save_pretrained(str(folder))


def make_random_hf(folder: Path, kind: str = "bert", seed: int = 0, **shape) -> Path:
    """Save a randomly initialised HF BertModel/AlbertModel as safetensors into ``folder``."""
    import torch
    from transformers import AlbertConfig, AlbertModel, BertConfig, BertModel

    torch.manual_seed(seed)
    dims = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                intermediate_size=128, max_position_embeddings=128)
    dims.update(shape)
    if kind == "bert":
        model = BertModel(BertConfig(**dims))
    else:
        dims.setdefault("embedding_size", 32)
        model = AlbertModel(AlbertConfig(**dims))
    # Random LayerNorm and bias values too, so that a swapped tensor cannot go unnoticed.
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
                prm.add_(0.1 * torch.randn_like(prm))
    model.eval().save_pretrained(str(folder), safe_serialization=True)
    write_tiny_tokenizer(folder, dims["vocab_size"])
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return make_random_hf(tmp_path_factory.mktemp("tiny_bert"), "bert")


@pytest.fixture(scope="session")
def tiny_albert_dir(tmp_path_factory) -> Path:
    return make_random_hf(tmp_path_factory.mktemp("tiny_albert"), "albert")


@pytest.fixture(scope="session")
def minilm():
    from vee_jax import load_backbone

    return load_backbone("minilm")


@pytest.fixture(scope="session")
def tiny_minilm_vocab_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT (hidden 32) with MiniLM's real tokenizer: real words, tiny compute."""
    import shutil

    from vee_jax.weights import shipped_model_dir

    folder = make_random_hf(tmp_path_factory.mktemp("tiny_minilm_vocab"), "bert", vocab_size=30522,
                            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=512)
    src = shipped_model_dir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(src / name, folder / name)
    return folder


def write_untrained_workdir(workdir: Path, backbone: Path, data: Path, labels: list[str], *,
                            exit_scale: float = 6.0, seed: int = 0) -> Path:
    """A workdir as train.py leaves it (config, format file, a "best" checkpoint), without training.

    The exits are random, scaled by ``exit_scale`` so that logits spread widely: argmax and
    decoding then rarely meet near-ties, and results do not hinge on float rounding.
    """
    import jax
    import jax.numpy as jnp

    from vee_jax.config import base_config
    from vee_jax.trainer import build_optimizer, build_spec
    from vee_jax.training import init_state
    from vee_jax.weights import load_backbone
    from vee_jax.trained import checkpoint_manager, save_checkpoint, save_run_info

    config = base_config()
    config.data.train = config.data.dev = config.data.test = str(data)
    config.data.labels = tuple(labels)
    config.model.backbone = str(backbone)
    bert_cfg, params, tokenizer = load_backbone(backbone, jnp.float32)
    spec = build_spec(config, bert_cfg, len(labels) + 1)
    state = init_state(spec, params, build_optimizer(config, 1), seed)
    state["params"]["exits"] = jax.tree.map(lambda x: x * exit_scale, state["params"]["exits"])
    save_run_info(workdir, config, {"labels": list(labels), "nested": True, "backbone": str(backbone),
                                    "tokenizer": str(tokenizer.name_or_path), "num_layers": bert_cfg.num_layers,
                                    "total_steps": 1})
    meta = {"epoch": 1, "batch": 0, "step": 1, "best_score": 0.0, "best_epoch": 0, "bad_epochs": 0, "done": True}
    save_checkpoint(checkpoint_manager(workdir, "best"), 1, state, meta)
    return workdir


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory) -> Path:
    """An untrained 4-layer workdir (hidden 32, MiniLM's tokenizer) over 8 shipped GENIA test sentences.

    ``workdir / "data.json"`` holds the sentences (25-32 subwords each); the model predicts nonsense, but
    deterministic nonsense: enough to compare code paths (Predictor against eval.py, HTTP).
    """
    import json
    import shutil

    from transformers import AutoTokenizer

    from vee_jax.config import DEMO
    from vee_jax.weights import shipped_model_dir

    root = tmp_path_factory.mktemp("tiny_workdir")
    backbone = make_random_hf(root / "backbone", "bert", vocab_size=30522, hidden_size=32, num_hidden_layers=4,
                              num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(shipped_model_dir() / name, backbone / name)
    tok = AutoTokenizer.from_pretrained(str(shipped_model_dir()))

    def subwords(words):  # with [CLS] and [SEP]
        return 2 + len(tok(list(words), is_split_into_words=True, add_special_tokens=False)["input_ids"])

    # Every sentence in one subword bucket (25..32): one batch shape, so few compilations.
    recs = [r for r in json.loads((DEMO / "test.json").read_text()) if 25 <= subwords(r["sentence"]) <= 32][:8]
    assert len(recs) == 8
    data = root / "data.json"
    data.write_text(json.dumps(recs))
    labels = ["DNA", "RNA", "cell_line", "cell_type", "protein"]
    wd = write_untrained_workdir(root / "wd", backbone, data, labels)
    shutil.copyfile(data, wd / "data.json")
    return wd


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """24 / 8 / 8 shipped GENIA sentences of 12-20 words: few length buckets, so few compilations."""
    import json

    from vee_jax.config import DEMO

    d = tmp_path_factory.mktemp("tiny_genia")
    for split, n in (("train", 24), ("dev", 8), ("test", 8)):
        recs = [r for r in json.loads((DEMO / f"{split}.json").read_text()) if 12 <= len(r["sentence"]) <= 20][:n]
        assert len(recs) == n
        (d / f"{split}.json").write_text(json.dumps(recs))
    return d
