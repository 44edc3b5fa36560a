"""vee_jax: span-based NER with a biaffine exit after every BERT layer and vote early exiting."""

from .bert import BertConfig, embed, encode_layers, layer_step, word_vectors
from .exits import all_exit_logits, biaffine, exit_logits, init_exits
from .loss import exit_losses, valid_cells
from .weights import BackboneError, load_backbone

__all__ = [
    "BertConfig",
    "BackboneError",
    "all_exit_logits",
    "biaffine",
    "embed",
    "encode_layers",
    "exit_logits",
    "exit_losses",
    "init_exits",
    "layer_step",
    "load_backbone",
    "valid_cells",
    "word_vectors",
]
