"""Train vee_jax: ``python train.py --config configs/genia.py --workdir runs/genia``.

Any config field can be overridden: ``--config.train.epochs=8``. The same command resumes.
"""

from vee_jax.commands.train import main

if __name__ == "__main__":
    main()
