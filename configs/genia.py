"""GENIA nested NER (5 types) with the shipped MiniLM backbone.

    python train.py --config configs/genia.py --workdir ~/vee_runs/genia
    python train.py --config configs/genia.py --workdir ~/vee_runs/genia_last --config.model.exits=last
"""

from vee_jax.config import DATA, base_config


def get_config():
    c = base_config()
    c.data.format = "json"
    c.data.train = str(DATA / "genia" / "train.json")
    c.data.dev = str(DATA / "genia" / "dev.json")
    c.data.test = str(DATA / "genia" / "test.json")
    c.data.nested = True
    return c
