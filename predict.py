"""Entities in raw text: ``python predict.py --workdir runs/genia [--strategy vee --patience 2 --tau 0.01] "text" ...``.

Texts from the arguments, ``--input FILE`` (one per line) or stdin; one JSON line per text.
"""

from vee_jax.commands.predict import main

if __name__ == "__main__":
    main()
