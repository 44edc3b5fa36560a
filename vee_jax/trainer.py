"""train_and_evaluate(config, workdir): the training loop behind train.py / vee-train.

Resumable: the same command continues from the latest complete checkpoint (data order is a
function of (seed, epoch), dropout keys of the step, so the resumed run repeats the
uninterrupted one). Ctrl-C and SIGTERM save a checkpoint before exiting.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from . import distributed
from .config import ConfigError
from .data.features import SUBWORD_BUCKETS, batch_plan, check_casing, encode_sentences, iterate_batches, num_shapes
from .data.splits import check_labels, label_set, label_source, load_split
from .evaluation import evaluate_exits
from .training import build_optimizer, build_spec, init_state
from .weights import load_backbone, param_shapes, tokenizer_fingerprint
from .trained import (
    WorkdirError, append_metrics, checkpoint_manager, load_run_info, restore_checkpoint, run_config_changes,
    save_checkpoint, save_run_info,
)

log = logging.getLogger("vee_jax")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, say); the message names the step."""


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps, so the state is never half-updated.

    The flag is read after every train step and after every epoch end (dev evaluation and its
    checkpoints). A signal that arrives during the dev evaluation therefore lets the evaluation
    finish (it is not interrupted: its result decides the best checkpoint), the epoch-end
    checkpoints are written, and training stops right after, before the next epoch's first
    step. A second signal stops at once, without saving (the latest complete checkpoint stays).
    Before the loop starts (loading data, compiling nothing yet) the default handlers apply.
    """

    def __init__(self):
        self.signum = 0

    def __call__(self, signum, frame):
        if self.signum:  # a second signal: stop now (nothing is saved past the last checkpoint)
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt(f"second signal {signum}: stopped without saving")
        self.signum = signum


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Refuse values that would fail late or be misread (an unknown select_by, a zero interval)."""
    choices = {"data.format": ("json", "conll", "msra", "hf"), "data.scheme": ("iob1", "bio"),
               "model.pooling": ("first", "mean"), "model.exits": ("all", "last"),
               "model.dtype": ("float32", "bfloat16"), "train.select_by": ("last", "mean")}
    positive = ("train.epochs", "train.batch_size", "train.eval_batch_size", "train.log_every_steps",
                "train.early_stopping_patience", "optim.lr", "optim.exit_lr", "data.max_subwords")
    non_negative = ("train.checkpoint_every_steps", "train.max_steps", "train.eval_max_sentences",
                    "data.context_subwords", "model.ffnn_size", "optim.weight_decay", "optim.clip_norm")
    problems = []
    for field, allowed in choices.items():
        value = config[field.split(".")[0]][field.split(".")[1]]
        if value not in allowed:
            problems.append(f"config.{field}={value!r} (expected one of {', '.join(allowed)})")
    for field in positive + non_negative:
        value = config[field.split(".")[0]][field.split(".")[1]]
        if value < 0 or (field in positive and value == 0):
            problems.append(f"config.{field}={value!r} (expected {'> 0' if field in positive else '>= 0'})")
    if not 0.0 <= config.optim.warmup_fraction < 1.0:
        problems.append(f"config.optim.warmup_fraction={config.optim.warmup_fraction!r} (expected in [0, 1))")
    if not 0.0 <= config.data.dev_fraction < 1.0:
        problems.append(f"config.data.dev_fraction={config.data.dev_fraction!r} (expected in [0, 1))")
    if config.data.max_subwords > SUBWORD_BUCKETS[-1]:
        problems.append(f"config.data.max_subwords={config.data.max_subwords!r} (expected <= "
                        f"{SUBWORD_BUCKETS[-1]}, the largest length bucket)")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def dev_score(result: dict[str, Any], select_by: str) -> float:
    """The model-selection score: dev F1 of the last exit, or the mean over exits (NOTES item 10)."""
    f1 = [r["f1"] for r in result["per_exit"]]
    return f1[-1] if select_by == "last" else float(np.mean(f1))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train all exits jointly, evaluate dev every epoch, keep the best and latest checkpoints.

    Returns the final ``meta`` (epoch, step, best dev score, ...).
    """
    workdir = Path(workdir).expanduser()
    validate_config(config)
    tc = config.train
    distributed.initialize(config.mesh)  # multi-host: join before any JAX computation
    mesh = distributed.make_mesh(config.mesh)
    distributed.check_batch_size(mesh, tc.batch_size, "config.train.batch_size")
    distributed.check_batch_size(mesh, tc.eval_batch_size, "config.train.eval_batch_size")
    writer = distributed.is_writer()  # process 0 writes metrics, logs and bars
    if not writer:
        log.setLevel(logging.WARNING)

    # --- Data (read first: a bad file fails in a second), then the backbone ---------------
    train = load_split(config.data, "train")
    dev = load_split(config.data, "dev")
    labels = label_set(config.data, train)
    check_labels(train, labels, f"train ({config.data.train})", label_source(config.data))
    check_labels(dev, labels, f"dev ({config.data.dev or 'held out of train'})", label_source(config.data))
    bert_cfg, encoder_params, tokenizer = load_backbone(config.model.backbone, jnp.dtype(config.model.dtype))
    check_casing(config.model.casing, tokenizer, str(config.model.backbone))  # uncased backbones only
    if tc.eval_max_sentences:
        dev = dev[: tc.eval_max_sentences]
    max_sub = min(config.data.max_subwords, bert_cfg.max_position)
    context, casing = config.data.context_subwords, config.model.casing
    train_enc, rep = encode_sentences(train, tokenizer, labels, max_sub, context, casing=casing)
    dev_enc, dev_rep = encode_sentences(dev, tokenizer, labels, max_sub, context, casing=casing)
    log.info(rep.summary("train"))
    log.info(dev_rep.summary("dev"))
    log.info("labels: %s; train batch shapes (compilations per epoch): %d", labels, num_shapes(train_enc))
    log.info("mesh: data=%d x fsdp=%d over %d %s device(s) in %d process(es)", mesh.shape["data"],
             mesh.shape["fsdp"], mesh.size, mesh.devices.flat[0].platform, jax.process_count())

    spec = build_spec(config, bert_cfg, len(labels) + 1)
    steps_per_epoch = len(batch_plan(train_enc, tc.batch_size, shuffle=True, seed=config.seed, epoch=0))
    total_steps = steps_per_epoch * tc.epochs  # not cut by max_steps: a resumed run keeps the schedule
    optimizer = build_optimizer(config, total_steps)

    # --- Workdir: refuse to resume a different run ---------------------------------------
    info = {"labels": labels, "nested": bool(config.data.nested), "backbone": str(config.model.backbone),
            "tokenizer": str(tokenizer.name_or_path), "num_layers": bert_cfg.num_layers,
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer), "total_steps": total_steps,
            "encoder_shapes": param_shapes(encoder_params)}
    if (workdir / "vee_format.json").exists():
        old_config, old = load_run_info(workdir)
        for k in ("labels", "backbone", "num_layers", "tokenizer_fingerprint"):
            if k == "tokenizer_fingerprint" and k not in old:
                continue  # written before fingerprints were saved
            if old.get(k) != info[k]:
                raise WorkdirError(f"{workdir} holds a run with {k}={old.get(k)!r}, but this config gives "
                                   f"{info[k]!r}: use another --workdir")
        changed = run_config_changes(old_config, config)
        if changed:
            raise WorkdirError(f"{workdir} holds a run with another configuration ({'; '.join(changed)}); "
                               f"resuming it would change its schedule or data order: repeat the original "
                               f"command (see {workdir / 'config.json'}) or use another --workdir")
    elif writer:
        save_run_info(workdir, config, info)
    distributed.sync("run info written")

    # --- State: fresh, or the latest checkpoint (resharded onto this mesh) ---------------
    state = init_state(spec, encoder_params, optimizer, config.seed)
    state_sh = distributed.state_shardings(state, mesh, config.mesh.fsdp_min_size)
    state = distributed.place(state, state_sh)
    train_step = distributed.make_train_step(spec, optimizer, mesh, state_sh)
    eval_step = distributed.make_eval_step(spec, mesh, state_sh["params"])
    latest, best = checkpoint_manager(workdir, "latest"), checkpoint_manager(workdir, "best")
    meta = {"epoch": 0, "batch": 0, "step": 0, "best_score": -1.0, "best_epoch": -1, "bad_epochs": 0,
            "done": False}
    restored = restore_checkpoint(latest, state)
    if restored is not None:
        state, meta = restored
        log.info("resumed from %s: epoch %d, batch %d, step %d", latest.directory, meta["epoch"] + 1,
                 meta["batch"], meta["step"])
    if meta.get("done"):
        log.info("training already finished in %s (best dev %.4f at epoch %d)", workdir, meta["best_score"],
                 meta["best_epoch"] + 1)
        return meta

    # --- Ctrl-C and SIGTERM: finish the step, save, then exit ----------------------------
    flag = _StopFlag()
    old_handlers = {s: signal.signal(s, flag) for s in (signal.SIGINT, signal.SIGTERM)}
    step = int(meta["step"])
    try:
        # --- Loop ----------------------------------------------------------------------------
        for epoch in range(int(meta["epoch"]), tc.epochs):
            bar = tqdm(total=steps_per_epoch, initial=int(meta["batch"]), desc=f"epoch {epoch + 1}/{tc.epochs}",
                       unit="batch", dynamic_ncols=True, **({} if writer else {"disable": True}))
            t0, seen, pos = time.time(), 0, int(meta["batch"])
            for idx, batch in iterate_batches(train_enc, tc.batch_size, shuffle=True, seed=config.seed,
                                              epoch=epoch, skip=pos):
                if tc.max_steps and step >= tc.max_steps:  # a rerun of a stopped run adds no step
                    break
                state, metrics = train_step(state, distributed.shard_batch(batch, mesh))
                loss = float(metrics["loss"])
                step, pos, seen = step + 1, pos + 1, seen + len(idx)
                if not (math.isfinite(loss) and math.isfinite(float(metrics["grad_norm"]))):
                    raise TrainingError(
                        f"non-finite loss ({loss}) or gradient norm ({float(metrics['grad_norm'])}) at step {step} "
                        f"(epoch {epoch + 1}, batch {pos}); the last good checkpoint is kept in "
                        f"{latest.directory} (step {latest.latest_step()})")
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", sent_s=f"{seen / max(time.time() - t0, 1e-9):.1f}")
                if writer and step % tc.log_every_steps == 0:
                    append_metrics(workdir, {"step": step, "epoch": epoch + 1, "loss": loss,
                                             "per_exit": np.asarray(metrics["per_exit"]).round(6).tolist(),
                                             "grad_norm": float(metrics["grad_norm"]),
                                             "sentences_per_s": seen / max(time.time() - t0, 1e-9)})
                meta.update(epoch=epoch, batch=pos, step=step)
                if flag.signum:
                    bar.close()
                    log.warning("signal %d at step %d: saving a checkpoint to %s", flag.signum, step,
                                latest.directory)
                    save_checkpoint(latest, step, state, meta)
                    raise KeyboardInterrupt(f"stopped by signal {flag.signum} after step {step}; "
                                            f"the same command resumes")
                if tc.checkpoint_every_steps and step % tc.checkpoint_every_steps == 0:
                    save_checkpoint(latest, step, state, meta)
                if tc.max_steps and step >= tc.max_steps:
                    break
            bar.close()
            train_time = time.time() - t0
            if pos < steps_per_epoch:  # max_steps reached mid-epoch: save where we are, resumable
                save_checkpoint(latest, step, state, meta)
                log.info("stopping: max_steps=%d reached at epoch %d, batch %d", tc.max_steps, epoch + 1, pos)
                return meta

            # --- Dev evaluation, best checkpoint, early stopping -------------------------
            t1 = time.time()
            res = evaluate_exits(state, spec, dev, dev_enc, labels, config.data.nested, tc.eval_batch_size,
                                 step=eval_step)
            score = dev_score(res, tc.select_by)
            improved = score > meta["best_score"]
            if improved:
                meta.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            else:
                meta["bad_epochs"] += 1
            stop = meta["bad_epochs"] >= tc.early_stopping_patience
            meta.update(epoch=epoch + 1, batch=0, step=step, done=bool(stop or epoch + 1 >= tc.epochs))
            if improved:
                save_checkpoint(best, step, state, meta)
            save_checkpoint(latest, step, state, meta)
            record = {"epoch": epoch + 1, "step": step, "dev_score": score, "best_score": meta["best_score"],
                      "dev_f1_per_exit": [round(r["f1"], 6) for r in res["per_exit"]],
                      "dev_entropy_per_exit": [round(r["entropy"], 6) for r in res["per_exit"]],
                      "train_seconds": round(train_time, 1), "eval_seconds": round(time.time() - t1, 1),
                      "compilations": train_step._cache_size()}
            if writer:
                append_metrics(workdir, record)
            log.info("epoch %d: dev F1 per exit %s (score %.4f, best %.4f at epoch %d)", epoch + 1,
                     record["dev_f1_per_exit"], score, meta["best_score"], meta["best_epoch"] + 1)
            if flag.signum and not meta["done"]:  # the signal came during the evaluation: saved above
                raise KeyboardInterrupt(f"stopped by signal {flag.signum} at the end of epoch {epoch + 1} "
                                        f"(step {step}); the same command resumes")
            if stop:
                log.info("early stopping: no better dev score for %d epochs", meta["bad_epochs"])
                break
            if tc.max_steps and step >= tc.max_steps:
                log.info("stopping: max_steps=%d reached at the end of epoch %d", tc.max_steps, epoch + 1)
                break
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    return meta
