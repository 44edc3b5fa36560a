"""The default configuration; files in configs/ start from it and set what differs.

Every field is listed in the README ("Configs"). Override any field on the command line:
``python train.py --config configs/genia.py --config.train.epochs=8``.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections

from .errors import ConfigError  # noqa: F401  (its old import path: errors.ConfigError)


DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""``../shared/data`` beside a checkout (where the development data sets live)."""

DEMO = Path(__file__).resolve().parent / "data" / "demo"
"""The GENIA sample shipped inside the package (configs/demo.py)."""


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.format = "json"  # json | conll | msra | hf (Hugging Face datasets, docs/data_hf.md)
    c.data.train = ""
    c.data.dev = ""
    c.data.test = ""
    c.data.scheme = "iob1"  # conll and hf flat tags: iob1 | bio
    c.data.token_column = 0  # conll only; negative counts from the end
    c.data.tag_column = -1
    c.data.lenient = False  # bio only: read a stray I- as B- and report how many
    # hf only: data.train etc. name a save_to_disk folder, FOLDER:SPLIT of a DatasetDict folder,
    # a .jsonl/.json/.parquet file, or hub:NAME:SPLIT (online machines; docs/data_hf.md).
    c.data.hf_config = ""  # hf: the Hub dataset's configuration ("" = its default)
    c.data.hf_tokens_column = "tokens"  # hf: the column of words (a list of strings per row)
    c.data.hf_tags_column = "ner_tags"  # hf flat layout: one O/B-X/I-X tag per word ("" = none)
    c.data.hf_entities_column = "entities"  # hf nested layout: [{start, end (exclusive), type}] ("" = none)
    c.data.hf_doc_id_column = ""  # hf: a document-id column, kept on each sentence ("" = none)
    c.data.tag_names = ()  # hf flat: tag of each integer id when the column has no ClassLabel names
    c.data.labels = ()  # ordered entity types; () = sorted types found in train
    c.data.nested = True  # decoding: nested (no crossing spans) or flat (no overlap)
    c.data.dev_fraction = 0.0  # > 0: hold out this fraction of train as dev when dev is ""
    c.data.dev_seed = 0
    c.data.max_subwords = 512  # the model limit; longer sentences are reported, never silent
    # > 0: up to this many subwords of the neighbouring sentences of the same document on each
    # side of a sentence (its table stays over its own words); 0 = sentences alone, as the paper
    c.data.context_subwords = 0

    c.model = ml_collections.ConfigDict()
    c.model.backbone = "minilm"  # "minilm" (shipped) or a local HF BERT/ALBERT folder
    c.model.dtype = "float32"  # bfloat16 is slower on CPU (NOTES)
    c.model.pooling = "first"  # subword -> word: first | mean
    c.model.ffnn_size = 0  # > 0: Yu et al.'s start/end projections of this size
    c.model.exits = "all"  # all: joint training (Eq. 5); last: the single-exit baseline
    c.model.casing = False  # uncased backbones: exits add an embedding of each word's shape (docs/model.md)

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-4  # encoder (MiniLM is small: 1e-4 rather than bert-base's 5e-5)
    c.optim.exit_lr = 1e-3  # biaffine exits: higher (footnote 5)
    c.optim.weight_decay = 0.01
    c.optim.warmup_fraction = 0.1
    c.optim.clip_norm = 1.0

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 25  # Sec. 5.3
    c.train.batch_size = 16
    c.train.eval_batch_size = 32
    c.train.early_stopping_patience = 8  # epochs without a better dev score
    c.train.select_by = "last"  # best checkpoint by dev F1 of the last exit, or "mean" over exits
    c.train.checkpoint_every_steps = 200  # also at every epoch end
    c.train.log_every_steps = 20
    c.train.max_steps = 0  # > 0: stop after this many steps in all (smoke tests)
    c.train.eval_max_sentences = 0  # > 0: evaluate dev on its first N sentences only

    # Scale out (vee_jax/distributed.py, README "Several devices and hosts"); not part of a run's
    # identity: a run saved on one mesh resumes on another.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # devices on the data axis; -1 = every device / fsdp
    c.mesh.fsdp = 1  # > 1: shard parameters and optimiser state over this many devices
    c.mesh.fsdp_min_size = 16384  # arrays with fewer elements stay replicated
    c.mesh.coordinator = ""  # multi-host: host:port of process 0, or "auto" (Slurm, Open MPI, TPU); "" = $JAX_COORDINATOR_ADDRESS or one process
    c.mesh.num_processes = 0  # 0 = $JAX_NUM_PROCESSES (or JAX's own detection: Slurm, Open MPI, TPU)
    c.mesh.process_id = -1  # -1 = $JAX_PROCESS_ID
    return c
