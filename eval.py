"""Evaluate a trained workdir: ``python eval.py --workdir runs/genia --split test --output per_exit.json``."""

from vee_jax.commands.eval import main

if __name__ == "__main__":
    main()
