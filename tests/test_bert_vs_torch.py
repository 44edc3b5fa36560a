"""The Flax/JAX BERT against transformers' PyTorch models, layer by layer (maxtext style)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from transformers import AlbertModel, BertModel  # noqa: E402

from vee_jax import BackboneError, encode_layers, layer_step, embed, load_backbone  # noqa: E402

SENTENCES = [
    "IL-2 gene expression and NF-kappa B activation through CD28 requires reactive oxygen production by 5-lipoxygenase .",
    "Peter Blackburn",
    "In primary T lymphocytes we show that CD28 ligation leads to the rapid intracellular formation of reactive oxygen intermediates ( ROIs ) which are required for CD28 -mediated activation of the NF-kappa B / CD28 -responsive complex and IL-2 expression .",
    "",
]


def torch_hidden_states(model, input_ids, attention_mask, token_type_ids=None):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(input_ids),
            attention_mask=torch.tensor(attention_mask),
            token_type_ids=None if token_type_ids is None else torch.tensor(token_type_ids),
            output_hidden_states=True,
        )
    return np.stack([h.numpy() for h in out.hidden_states])


def assert_layers_close(ours, ref, mask, atol=1e-4):
    """Every layer within ``atol`` at real tokens (what the exits read).

    Padded positions hold meaningless states that nothing reads; rounding differences grow
    there (seen: 4e-4 after 4 layers in a sentence of 2 real tokens), so they get 1e-2.
    """
    assert ours.shape == ref.shape
    for m in range(ref.shape[0]):
        diff = np.abs(ours[m] - ref[m])
        assert diff[mask].max() < atol, f"layer {m}: max |diff| at real tokens {diff[mask].max():.2e}"
        assert diff.max() < 1e-2, f"layer {m}: max |diff| at padding {diff.max():.2e}"


def test_minilm_matches_pytorch_every_layer(minilm):
    config, params, tok = minilm
    enc = tok(SENTENCES, padding=True, return_tensors="np")
    ours = np.asarray(encode_layers(config, params, jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]),
                                    jnp.asarray(enc["token_type_ids"])))
    model = BertModel.from_pretrained(tok.name_or_path).eval()
    ref = torch_hidden_states(model, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    assert ours.shape == (config.num_layers + 1, len(SENTENCES), enc["input_ids"].shape[1], 384)
    assert_layers_close(ours, ref, enc["attention_mask"].astype(bool))


def _random_batch(vocab, B=3, T=17, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(B, T))
    lengths = np.array([T, 9, 3])[:B]
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int64)
    types = (np.arange(T)[None] >= lengths[:, None] // 2).astype(np.int64) * mask
    return ids * mask, mask, types


@pytest.mark.parametrize("kind", ["bert", "albert"])
def test_random_model_matches_pytorch(kind, tiny_bert_dir, tiny_albert_dir):
    folder = tiny_bert_dir if kind == "bert" else tiny_albert_dir
    config, params, tok = load_backbone(folder)
    assert tok.name_or_path == str(folder)
    ids, mask, types = _random_batch(config.vocab_size)
    ours = np.asarray(encode_layers(config, params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)))
    model = (BertModel if kind == "bert" else AlbertModel).from_pretrained(str(folder)).eval()
    ref = torch_hidden_states(model, ids, mask, types)
    assert_layers_close(ours, ref, mask.astype(bool))


def test_albert_keeps_one_shared_layer(tiny_albert_dir):
    config, params, _ = load_backbone(tiny_albert_dir)
    assert config.num_layers == 3 and config.stacked == 1
    assert params["layers"]["query"]["kernel"].shape == (1, 64, 64)
    assert params["embeddings"]["word"].shape == (1000, 32)  # factorised embeddings, E = 32


def test_layer_step_with_traced_index_equals_encode_layers(tiny_bert_dir):
    import jax

    config, params, _ = load_backbone(tiny_bert_dir)
    ids, mask, _ = _random_batch(config.vocab_size)
    ids, mask = jnp.asarray(ids), jnp.asarray(mask)
    all_h = encode_layers(config, params, ids, mask)
    step = jax.jit(lambda m, h: layer_step(config, params, m, h, mask))
    h = embed(config, params, ids, mask)
    for m in range(config.num_layers):
        h = step(jnp.int32(m), h)
        np.testing.assert_allclose(np.asarray(h), np.asarray(all_h[m + 1]), atol=1e-5)


def test_bad_folders_say_what_was_found(tmp_path, tiny_bert_dir):
    with pytest.raises(BackboneError, match="neither a shipped alias"):
        load_backbone(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="no config.json"):
        load_backbone(tmp_path / "empty")
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text('{"model_type": "gpt2", "vocab_size": 5, "hidden_size": 4, '
                                     '"num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 4}')
    with pytest.raises(BackboneError, match="model_type 'gpt2'; expected 'bert' or 'albert'"):
        load_backbone(gpt)
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    (noweights / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    with pytest.raises(BackboneError, match="no weights found; expected model.safetensors"):
        load_backbone(noweights)


def test_pytorch_model_bin_folder_loads_the_same(tmp_path, tiny_bert_dir):
    """A folder with pytorch_model.bin (no safetensors) loads, read through torch."""
    import shutil

    folder = tmp_path / "bin"
    shutil.copytree(tiny_bert_dir, folder)
    model = BertModel.from_pretrained(str(folder))
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    _, a, _ = load_backbone(tiny_bert_dir)
    _, b, _ = load_backbone(folder)
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bfloat16_option(tiny_bert_dir):
    config, params, _ = load_backbone(tiny_bert_dir, dtype=jnp.bfloat16)
    assert config.dtype == "bfloat16" and params["layers"]["query"]["kernel"].dtype == jnp.bfloat16
    ids, mask, _ = _random_batch(config.vocab_size)
    h32 = encode_layers(load_backbone(tiny_bert_dir)[0], load_backbone(tiny_bert_dir)[1], jnp.asarray(ids), jnp.asarray(mask))
    h16 = encode_layers(config, params, jnp.asarray(ids), jnp.asarray(mask))
    assert h16.dtype == jnp.bfloat16
    real = mask.astype(bool)
    # bf16 keeps about 3 significant digits: close to float32, not equal.
    assert np.abs(np.asarray(h16[-1], np.float32) - np.asarray(h32[-1]))[real].max() < 0.2


def test_albert_with_several_layer_groups(tmp_path):
    """num_hidden_groups=2 over 4 layers: layers 1-2 share group 0, layers 3-4 group 1 (as HF maps them)."""
    from conftest import make_random_hf

    folder = make_random_hf(tmp_path / "albert_groups", "albert", num_hidden_layers=4, num_hidden_groups=2)
    config, params, _ = load_backbone(folder)
    assert config.stacked == 2 and params["layers"]["query"]["kernel"].shape[0] == 2
    ids, mask, types = _random_batch(config.vocab_size)
    ours = np.asarray(encode_layers(config, params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)))
    ref = torch_hidden_states(AlbertModel.from_pretrained(str(folder)).eval(), ids, mask, types)
    assert_layers_close(ours, ref, mask.astype(bool))


def test_state_from_params_round_trips_and_runs_in_torch():
    """Our stacked pytree -> a BertModel state dict that torch accepts strictly and that
    params_from_state maps back to the same arrays."""
    import torch
    from transformers import BertConfig as HFConfig, BertModel

    import jax

    from helpers import random_params
    from vee_jax import BertConfig
    from vee_jax.weights import params_from_state, state_from_params

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                     max_position=40, model_type="bert")
    params = random_params(cfg)
    sd = state_from_params(cfg, params)
    model = BertModel(HFConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=40), add_pooling_layer=False)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    back = params_from_state(cfg, sd)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
