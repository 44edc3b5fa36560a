"""vee_jax: span-based NER with a biaffine exit after every BERT layer and vote early exiting."""

from .bert import BertConfig, embed, encode_layers, layer_step, word_vectors
from .batched import batched_infer
from .engine import prepare, vee_infer
from .exits import all_exit_logits, biaffine, compress_exits, exit_logits, init_exits
from .loss import exit_losses, valid_cells
from .measures import (MEASURES, cosine_distance, edit_distance, euclidean_distance, kl_distance, kl_self_term,
                       mean_max_prob, normalized_entropy)
from .offline import exit_probs, layer_distances, layer_signals, replay
from .policies import (BudgetPolicy, EntropyPolicy, FullPolicy, MaxProbPolicy, Policy, VeePolicy,
                       policy_from_input, vote_step)
from .predict import Entity, Prediction, Predictor
from .training import ModelSpec, eval_step, init_state, make_optimizer, train_step
from .weights import BackboneError, load_backbone
from .words import split_words

__all__ = [
    "BertConfig",
    "BackboneError",
    "BudgetPolicy",
    "Entity",
    "EntropyPolicy",
    "FullPolicy",
    "MEASURES",
    "MaxProbPolicy",
    "ModelSpec",
    "Policy",
    "Prediction",
    "Predictor",
    "VeePolicy",
    "all_exit_logits",
    "batched_infer",
    "biaffine",
    "compress_exits",
    "cosine_distance",
    "edit_distance",
    "embed",
    "eval_step",
    "encode_layers",
    "euclidean_distance",
    "exit_logits",
    "exit_losses",
    "exit_probs",
    "init_exits",
    "init_state",
    "kl_distance",
    "kl_self_term",
    "layer_distances",
    "layer_signals",
    "layer_step",
    "load_backbone",
    "make_optimizer",
    "mean_max_prob",
    "normalized_entropy",
    "policy_from_input",
    "prepare",
    "replay",
    "split_words",
    "train_step",
    "valid_cells",
    "vee_infer",
    "vote_step",
    "word_vectors",
]
