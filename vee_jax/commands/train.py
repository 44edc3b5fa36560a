"""``python train.py --config configs/genia.py --workdir runs/genia [--config.train.epochs=8]``.

Any config field can be overridden on the command line; the same command resumes.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import flags
from ml_collections import config_flags

from .common import begin, fail, user_errors

DESCRIPTION = ("Train a vee_jax model (BERT and a biaffine exit after every layer, jointly) into --workdir; "
               "the same command resumes from its latest checkpoint.")


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "a config file with get_config()", flag_values=fv,
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "where checkpoints, metrics and the config go (resumes if present)",
                        flag_values=fv)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)
    return fv


def main(argv: Sequence[str] | None = None) -> None:
    fv = define_flags()
    begin(fv, "train.py", DESCRIPTION, argv, keep_memory=False)  # training leaves glibc's malloc alone
    from ..trainer import TrainingError, train_and_evaluate

    try:
        meta = train_and_evaluate(fv.config, fv.workdir)
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(130)
    except TrainingError as e:
        fail(e, code=3)
    except user_errors() as e:
        fail(e)
    import jax

    if jax.process_index() != 0:  # multi-host: process 0 speaks for all
        return
    if not meta.get("done"):
        print(f"stopped at step {meta['step']} (config.train.max_steps); the same command resumes")
        return
    print(f"done: best dev score {meta['best_score']:.4f} at epoch {meta['best_epoch'] + 1}; "
          f"evaluate with: python eval.py --workdir {fv.workdir}")
