"""Entities in raw text: ``python predict.py --workdir runs/genia [--strategy vee --patience 2 --tau 0.01] "text" ...``.

Texts from the arguments, ``--input FILE`` (one per line) or stdin; one JSON line per text.
"""

from vee_jax.cli import predict_main

if __name__ == "__main__":
    predict_main()
