"""MSRA Chinese flat NER (characters), 10% of train held out as dev (MSRA has no dev split).

    python train.py --config configs/msra.py --workdir ~/vee_runs/msra
    python train.py --config configs/msra.py --config.model.backbone=/path/to/bert-base-chinese

MiniLM's uncased English vocabulary covers only about a third of MSRA's characters (the rest
become [UNK]), so numbers with it are a floor, not the paper's setting: give any local Chinese
BERT folder as the backbone for real results.
"""

from vee_jax.config import DATA, base_config


def get_config():
    c = base_config()
    c.data.format = "msra"
    c.data.train = str(DATA / "msra" / "train.txt")
    c.data.dev = ""
    c.data.dev_fraction = 0.1
    c.data.test = str(DATA / "msra" / "test_with_label.txt")
    c.data.nested = False
    return c
