"""Read the splits a config names: train / dev / test sentences and the label set."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .readers import collect_labels, holdout_split, read_split
from .sentence import DataError, Sentence

log = logging.getLogger(__name__)


def reader_options(data_cfg: Any) -> dict[str, Any]:
    """The reader keyword arguments of ``config.data`` for its format."""
    if data_cfg.format == "conll":
        return dict(scheme=data_cfg.scheme, token_column=data_cfg.token_column, tag_column=data_cfg.tag_column,
                    lenient=data_cfg.get("lenient", False))
    if data_cfg.format == "hf":
        return dict(scheme=data_cfg.scheme, lenient=data_cfg.get("lenient", False),
                    tag_names=tuple(data_cfg.get("tag_names") or ()), hf_config=data_cfg.get("hf_config", ""),
                    tokens_column=data_cfg.get("hf_tokens_column", "tokens"),
                    tags_column=data_cfg.get("hf_tags_column", "ner_tags"),
                    entities_column=data_cfg.get("hf_entities_column", "entities"),
                    doc_id_column=data_cfg.get("hf_doc_id_column", ""))
    return {}


def read_file(data_cfg: Any, path: str | Path) -> list[Sentence]:
    """One file (or ``hf`` dataset) in the config's format; a lenient BIO read logs how many tags it repaired."""
    options = reader_options(data_cfg)
    stats: dict[str, int] = {}
    if data_cfg.format in ("conll", "hf"):
        options["stats"] = stats
    sentences = read_split(str(path) if data_cfg.format == "hf" else Path(path), data_cfg.format, **options)
    if stats.get("repairs"):
        log.warning("%s: %d BIO tag(s) repaired: an I-X that starts an entity was read as B-X "
                    "(config.data.lenient)", path, stats["repairs"])
    return sentences


def load_split(data_cfg: Any, split: str) -> list[Sentence]:
    """Sentences of one split (``train``, ``dev`` or ``test``); dev may be a held-out part of train."""
    path = data_cfg.get(split) or ""
    if split == "dev" and not path and data_cfg.get("dev_fraction", 0.0) > 0:
        _, dev = holdout_split(read_file(data_cfg, data_cfg.train), data_cfg.dev_fraction, data_cfg.get("dev_seed", 0))
        return require_sentences(dev, f"dev (held out of {data_cfg.train})", "raise config.data.dev_fraction")
    if not path:
        raise ConfigError(f"config.data.{split} is empty: give the path of the {split} split "
                         f"({data_cfg.format} format), or config.data.dev_fraction for a held-out dev")
    sentences = read_file(data_cfg, path)
    if split == "train" and not data_cfg.get("dev") and data_cfg.get("dev_fraction", 0.0) > 0:
        sentences, _ = holdout_split(sentences, data_cfg.dev_fraction, data_cfg.get("dev_seed", 0))
    return require_sentences(sentences, path)


def require_sentences(sentences: list[Sentence], name: str | Path, hint: str = "") -> list[Sentence]:
    """``sentences``, or a DataError when there are none (a split to train or evaluate on must have some)."""
    if not sentences:
        raise DataError(name, "no sentences to train or evaluate on" + (f" ({hint})" if hint else ""))
    return sentences


def label_set(data_cfg: Any, train: list[Sentence]) -> list[str]:
    """``config.data.labels`` when given, else the sorted types found in train."""
    labels = list(data_cfg.get("labels") or ())
    return labels or collect_labels(train)


def check_labels(sentences: list[Sentence], labels: list[str], name: str, source: str = "") -> None:
    """Refuse a split with a type outside the label set (it could never be predicted).

    ``name`` names the split and its file (``"dev (data/dev.json)"``); ``source`` says where the
    label set came from (``"config.data.labels"``, ``"the types found in train"``), for the message.
    Raises DataError naming the sentence (0-based, among the split's sentences) and the type.
    """
    known = set(labels)
    for i, s in enumerate(sentences):
        for _, _, t in s.spans:
            if t not in known:
                origin = f" ({source})" if source else ""
                raise DataError(name, f"entity type {t!r} is not in the label set {labels}{origin}", sentence=i)


def label_source(data_cfg: Any) -> str:
    """Where ``label_set`` takes the labels from, in words (for error messages)."""
    return "config.data.labels" if data_cfg.get("labels") else f"the types found in {data_cfg.train}"
