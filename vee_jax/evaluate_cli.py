"""Load a trained workdir and evaluate a split exit by exit, or under one exit policy (the body of eval.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from .data.features import encode_sentences
from .data.readers import read_split
from .data.splits import check_labels, load_split, reader_options
from .evaluation import evaluate_exits, evaluate_policy, plot_per_exit
from .policies import make_policy
from .trainer import build_optimizer, build_spec
from .training import init_state
from .weights import load_backbone
from .workdir import WorkdirError, checkpoint_manager, load_run_info, restore_checkpoint

log = logging.getLogger("vee_jax")


def load_trained(workdir: str | Path, checkpoint: str = "best"):
    """``(config, info, spec, state, tokenizer)`` of a trained workdir."""
    workdir = Path(workdir).expanduser()
    config, info = load_run_info(workdir)
    bert_cfg, encoder_params, tokenizer = load_backbone(info["backbone"], jnp.dtype(config.model.dtype))
    if bert_cfg.num_layers != info["num_layers"]:
        raise WorkdirError(f"{workdir} was trained with a {info['num_layers']}-layer backbone, but "
                           f"{info['backbone']} has {bert_cfg.num_layers} layers")
    spec = build_spec(config, bert_cfg, len(info["labels"]) + 1)
    like = init_state(spec, encoder_params, build_optimizer(config, max(1, info.get("total_steps", 1))), config.seed)
    mngr = checkpoint_manager(workdir, checkpoint)
    restored = restore_checkpoint(mngr, like)
    if restored is None:
        raise WorkdirError(f"{workdir}: no {checkpoint} checkpoint in {mngr.directory}"
                           + (" (try --checkpoint latest)" if checkpoint == "best" else ""))
    state, meta = restored
    log.info("loaded %s checkpoint of %s (step %d, epoch %d)", checkpoint, workdir, meta["step"], meta["epoch"])
    return config, info, spec, state, tokenizer


def _load_eval_data(args):
    """The trained workdir and the split to evaluate: ``(config, info, spec, state, sentences, encoded, name)``."""
    config, info, spec, state, tokenizer = load_trained(args.workdir, args.checkpoint)
    labels = info["labels"]
    if args.data:
        sentences = read_split(Path(args.data), config.data.format, **reader_options(config.data))
        name = args.data
    else:
        sentences = load_split(config.data, args.split)
        name = f"{args.split} ({config.data.get(args.split) or 'held out of train'})"
    check_labels(sentences, labels, name)
    encoded, rep = encode_sentences(sentences, tokenizer, labels, min(config.data.max_subwords, spec.bert.max_position))
    log.info(rep.summary(name))
    return config, info, spec, state, sentences, encoded, name


def run_eval(args) -> dict[str, Any]:
    """Exit by exit (no ``--strategy``): the per-exit table of P/R/F1 and entropy."""
    config, info, spec, state, sentences, encoded, name = _load_eval_data(args)
    result = evaluate_exits(state, spec, sentences, encoded, info["labels"], info["nested"], args.batch_size,
                            progress=not args.quiet)
    result.update(split=args.split if not args.data else args.data, checkpoint=args.checkpoint,
                  workdir=str(args.workdir))
    if args.plot:
        plot_per_exit(result["per_exit"], args.plot, title=f"{Path(args.workdir).name}: {name}")
    return result


def policy_from_args(args):
    """The exit policy of ``--strategy`` and its options (unset options keep the policy's defaults)."""
    return make_policy(args.strategy, measure=args.measure, tau=args.tau, patience=args.patience,
                       ensemble=args.ensemble, layer=args.layer)


def run_policy_eval(args) -> dict[str, Any]:
    """One exit policy (``--strategy``) with the online engine: P/R/F1, exit layers, timings."""
    policy = policy_from_args(args)
    if args.strategy == "budget" and args.layer is None:
        raise ValueError("--strategy budget needs --layer m (1-based)")
    config, info, spec, state, sentences, encoded, name = _load_eval_data(args)
    if spec.exits == "last" and args.strategy not in ("full",):
        log.warning("this model was trained with model.exits='last': only the last exit is trained")
    log.info("evaluating %s on %s", policy, name)
    result = evaluate_policy(state, spec, sentences, encoded, info["labels"], info["nested"], policy,
                             args.batch_size, dump_tables=args.dump_tables, progress=not args.quiet)
    result.update(split=args.split if not args.data else args.data, checkpoint=args.checkpoint,
                  workdir=str(args.workdir), backend=jax.default_backend())
    return result
