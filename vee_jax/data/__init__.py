"""Data: the Sentence type, the readers of the formats (files and Hugging Face datasets), and `python -m vee_jax.data check`."""

from .readers import (collect_labels, holdout_split, read_conll, read_hf, read_json,
                      read_msra, read_split)
from .sentence import DataError, MissingDataFile, Sentence, Span

__all__ = [
    "DataError",
    "MissingDataFile",
    "Sentence",
    "Span",
    "collect_labels",
    "holdout_split",
    "read_conll",
    "read_hf",
    "read_json",
    "read_msra",
    "read_split",
]
