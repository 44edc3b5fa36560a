"""Evaluate a trained workdir: ``python eval.py --workdir runs/genia --split test --output per_exit.json``."""

from vee_jax.cli import eval_main

if __name__ == "__main__":
    eval_main()
