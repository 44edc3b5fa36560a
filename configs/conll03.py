"""CoNLL-2003 English flat NER (IOB1, 4 columns) with the shipped MiniLM backbone.

    python train.py --config configs/conll03.py --workdir ~/vee_runs/conll03

Document context (off here, as in the paper; docs/data.md "Document context"): the -DOCSTART-
documents give each sentence up to 64 subwords of its neighbouring sentences on each side:

    python train.py --config configs/conll03.py --workdir ~/vee_runs/conll03_ctx \
        --config.data.context_subwords=64
"""

from vee_jax.config import DATA, base_config


def get_config():
    c = base_config()
    c.data.format = "conll"
    c.data.train = str(DATA / "conll2003" / "eng.train")
    c.data.dev = str(DATA / "conll2003" / "eng.testa")
    c.data.test = str(DATA / "conll2003" / "eng.testb")
    c.data.scheme = "iob1"
    c.data.token_column = 0
    c.data.tag_column = -1
    c.data.nested = False
    return c
