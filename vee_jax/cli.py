"""Command lines: ``vee-train`` / ``train.py`` and ``vee-eval`` / ``eval.py``.

Errors a user can fix (bad data, a missing file, a wrong workdir) print one line and exit 2,
without a Python traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path



def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "fix your input", printed as one line (exit 2).

    Bad data (DataError, with file and line), a wrong workdir, backbone folder or cache, a
    config field or option that cannot be used, and a missing file. Anything else is a bug and
    keeps its traceback. Imported lazily so that ``--help`` stays fast.
    """
    from .cache import CacheError
    from .config import ConfigError
    from .data.sentence import DataError
    from .weights import BackboneError
    from .workdir import WorkdirError

    return (DataError, WorkdirError, BackboneError, CacheError, ConfigError, FileNotFoundError)


def _setup_logging() -> None:
    _enable_compilation_cache()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _enable_compilation_cache() -> None:
    """Keep compiled steps on disk (JAX's persistent cache) so that a second run skips compiling.

    ``VEE_JAX_XLA_CACHE`` sets the folder (default ``~/.cache/vee_jax/xla``); ``none`` disables it.
    """
    import os

    import jax

    where = os.environ.get("VEE_JAX_XLA_CACHE", str(Path.home() / ".cache" / "vee_jax" / "xla"))
    if where.lower() != "none" and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", where)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _fail(e: BaseException) -> None:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


# --- train -----------------------------------------------------------------------------------
def _train(argv) -> None:
    from absl import flags

    from .trainer import TrainingError, train_and_evaluate

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        _fail(ValueError(f"unexpected arguments {argv[1:]}"))
    _setup_logging()
    try:
        meta = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(130)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    except user_errors() as e:
        _fail(e)
    if not meta.get("done"):
        print(f"stopped at step {meta['step']} (config.train.max_steps); the same command resumes")
        return
    print(f"done: best dev score {meta['best_score']:.4f} at epoch {meta['best_epoch'] + 1}; "
          f"evaluate with: python eval.py --workdir {FLAGS.workdir}")


def train_main() -> None:
    """``python train.py --config configs/genia.py --workdir runs/genia [--config.train.epochs=8]``."""
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "a config file with get_config()", lock_config=True)
    flags.DEFINE_string("workdir", None, "where checkpoints, metrics and the config go (resumes if present)")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(_train)


# --- eval ------------------------------------------------------------------------------------
def _float_list(text: str) -> list[float]:
    """``"2,3,4.5"`` -> ``[2.0, 3.0, 4.5]`` (argparse reports anything else as a usage error)."""
    try:
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _positive_int(text: str) -> int:
    """An integer > 0 (argparse reports anything else as a usage error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return value


def eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval.py",
        description="Evaluate a trained vee_jax workdir exit by exit, under one exit policy (--strategy), "
                    "or sweep every policy on dev and test (--sweep).")
    p.add_argument("--workdir", required=True, help="the --workdir given to train.py")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--data", default=None, help="evaluate this file instead of the config's split")
    p.add_argument("--checkpoint", default="best", choices=["best", "latest"])
    p.add_argument("--output", default=None, help="write the results as JSON here")
    p.add_argument("--plot", default=None, help="draw F1 and entropy per exit (Figure 1) as a PNG here")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("early exiting (Sec. 4.2, 5.2): evaluate one exit policy with the online engine")
    g.add_argument("--strategy", default=None, choices=["vee", "entropy", "maxprob", "budget", "full"],
                   help="exit policy; without it, the per-exit table")
    g.add_argument("--measure", default=None, choices=["kl", "euclidean", "cosine", "edit"],
                   help="VEE's consistency measure, as a distance (default kl)")
    g.add_argument("--tau", type=float, default=None,
                   help="vee: largest distance that counts as agreement; entropy: exit when below; "
                        "maxprob: exit when above")
    g.add_argument("--patience", type=int, default=None, help="vee: votes needed to exit (default 2)")
    g.add_argument("--ensemble", action="store_true", help="predict the mean of the tables up to the exit")
    g.add_argument("--layer", type=int, default=None, help="budget: the exit layer m* (1-based)")
    g.add_argument("--exit-rank", type=int, default=0,
                   help="run the policy on low-rank exits of this rank (faster; 0: exact; README 'Performance')")
    g.add_argument("--dump-tables", default=None,
                   help="write every sentence's tables as probs_<i> [M, n, n, K] to this .npz")
    s = p.add_argument_group("sweeps (Figures 3-5, Table 1): every strategy on dev and test from cached tables")
    s.add_argument("--sweep", action="store_true",
                   help="sweep every strategy's grid on dev and test (BERT runs once per split and checkpoint; "
                        "tables cached in workdir/cache) and write CSV, figures and Table 1")
    s.add_argument("--sweep-dir", default=None, help="where the sweep's files go (default workdir/sweeps)")
    s.add_argument("--targets", default=None, type=_float_list,
                   help="Table 1's target average exit layers, comma-separated (default M/3,M/2,2M/3)")
    s.add_argument("--edit-max-words", type=int, default=48,
                   help="compute the edit distance (O(L^4)) only for sentences of at most this many words "
                        "(default 48; -1: all; 0: skip the edit distance)")
    s.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples for Table 1")
    s.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    s.add_argument("--cache-dtype", default="float32", choices=["float32", "float16"],
                   help="how the cached tables are stored (float16 halves the file, rounding at ~1e-3)")
    return p


def eval_main(argv: list[str] | None = None) -> None:
    """``python eval.py --workdir runs/genia --split test --output per_exit.json``.

    With ``--strategy vee --measure kl --tau 0.01 --patience 2 [--ensemble]`` (or ``entropy``,
    ``maxprob``, ``budget --layer m``, ``full``): one exit policy, P/R/F1, average exit layer
    and wall-clock time against the full model.

    With ``--sweep``: every strategy's grid on dev and test from the cached tables (CSV, the
    figures, Table 1 chosen on dev with paired bootstraps) under ``workdir/sweeps``.
    """
    args = eval_parser().parse_args(argv)
    _setup_logging()
    from .evaluate_cli import run_eval, run_policy_eval

    if args.sweep:
        if args.strategy:
            _fail(ValueError("--sweep evaluates every strategy; drop --strategy"))
        from .evaluate_cli import format_sweep, run_sweep

        try:
            result = run_sweep(args)
        except user_errors() as e:
            _fail(e)
        print(format_sweep(result))
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(result, indent=2))
            print(f"wrote {args.output}")
        return
    try:
        result = run_policy_eval(args) if args.strategy else run_eval(args)
    except user_errors() as e:
        _fail(e)
    from .evaluation import format_policy, format_table

    print(format_policy(result) if args.strategy else format_table(result["per_exit"]))
    if args.dump_tables and args.strategy:
        print(f"wrote {args.dump_tables}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.output}")
