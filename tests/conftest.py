"""Shared fixtures: tiny random Hugging Face folders (BERT, ALBERT) and the shipped MiniLM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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
