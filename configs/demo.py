"""The embedded default: the GENIA sample shipped inside the package (1,000 / 200 / 200 sentences).

    python train.py --config configs/demo.py --workdir runs/demo
    python eval.py --workdir runs/demo

Needs no ../shared/data. Corpus annotations (c) GENIA Project, CC BY 3.0
(vee_jax/data/demo/GENIA_LICENSE.txt).
"""

from vee_jax.config import DEMO, base_config


def get_config():
    c = base_config()
    c.data.format = "json"
    c.data.train = str(DEMO / "train.json")
    c.data.dev = str(DEMO / "dev.json")
    c.data.test = str(DEMO / "test.json")
    c.data.nested = True
    c.train.epochs = 5
    c.train.early_stopping_patience = 8
    return c
