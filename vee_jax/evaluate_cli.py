"""Load a trained workdir and evaluate a split exit by exit, or under one exit policy (the body of eval.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from . import distributed
from .data.features import encode_sentences
from .data.splits import check_labels, load_split, read_file, require_sentences
from .errors import ConfigError
from .evaluation import evaluate_exits, evaluate_policy, plot_per_exit
from .policies import policy_from_input
from .trainer import build_optimizer, build_spec
from .training import init_state
from .weights import BackboneError, load_backbone, param_shapes, tokenizer_fingerprint
from .workdir import WorkdirError, checkpoint_manager, load_run_info, restore_checkpoint

log = logging.getLogger("vee_jax")


def load_trained(workdir: str | Path, checkpoint: str = "best"):
    """``(config, info, spec, state, tokenizer)`` of a trained workdir."""
    return _load_trained(workdir, checkpoint)[:5]


def _load_trained(workdir: str | Path, checkpoint: str):
    """``load_trained`` and the checkpoint's meta (``step``, ``epoch``, ...)."""
    workdir = Path(workdir).expanduser()
    config, info = load_run_info(workdir)
    try:
        bert_cfg, encoder_params, tokenizer = load_backbone(info["backbone"], jnp.dtype(config.model.dtype))
    except BackboneError as e:
        raise WorkdirError(f"{workdir} was trained with backbone {info['backbone']!r}, which cannot be loaded "
                           f"now: {e}") from None
    if bert_cfg.num_layers != info["num_layers"]:
        raise WorkdirError(f"{workdir} was trained with a {info['num_layers']}-layer backbone, but "
                           f"{info['backbone']} has {bert_cfg.num_layers} layers")
    check_tokenizer(workdir, info, tokenizer)
    saved = info.get("encoder_shapes")  # absent in workdirs written before it was saved
    if saved is not None and saved != param_shapes(encoder_params):
        now = param_shapes(encoder_params)
        diff = next((k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)), "?")
        raise WorkdirError(f"{workdir} was trained with encoder tensor {diff} of shape {saved.get(diff)}, but backbone "
                           f"{info['backbone']!r} now gives {now.get(diff)}: restore the backbone folder it was "
                           f"trained with")
    spec = build_spec(config, bert_cfg, len(info["labels"]) + 1)
    like = init_state(spec, encoder_params, build_optimizer(config, max(1, info.get("total_steps", 1))), config.seed)
    mngr = checkpoint_manager(workdir, checkpoint)
    restored = restore_checkpoint(mngr, like)
    if restored is None:
        raise WorkdirError(f"{workdir}: no {checkpoint} checkpoint in {mngr.directory}"
                           + (" (try --checkpoint latest)" if checkpoint == "best" else ""))
    state, meta = restored
    log.info("loaded %s checkpoint of %s (step %d, epoch %d)", checkpoint, workdir, meta["step"], meta["epoch"])
    return config, info, spec, state, tokenizer, meta


def check_tokenizer(workdir: Path, info: dict[str, Any], tokenizer) -> None:
    """Refuse a backbone whose tokenizer is not the one the workdir was trained with.

    The checkpoint's embedding table is indexed by the training tokenizer's ids; another
    vocabulary would feed the model other words without any error. Workdirs written before
    the fingerprint was saved (no ``tokenizer_fingerprint`` in vee_format.json) are not checked.
    """
    saved = info.get("tokenizer_fingerprint")
    if saved is None:
        return
    now = tokenizer_fingerprint(tokenizer)
    if now != saved:
        raise WorkdirError(
            f"{workdir} was trained with a tokenizer of {saved['size']} entries (vocabulary hash {saved['sha1'][:12]}), "
            f"but backbone {info['backbone']!r} now has one of {now['size']} entries (hash {now['sha1'][:12]}): the "
            f"checkpoint's word ids would mean other words; restore the backbone folder it was trained with")


def _read_eval_split(args, config, labels: list[str]):
    """The sentences to evaluate (``--data`` or the config's split) and their name, checked against ``labels``.

    Read before the model is loaded, so a bad file fails in a second.
    """
    if args.data:
        sentences = require_sentences(read_file(config.data, args.data), args.data)
        name = args.data
    else:
        sentences = load_split(config.data, args.split)
        name = f"{args.split} ({config.data.get(args.split) or 'held out of train'})"
    check_labels(sentences, labels, name, "the label set the workdir was trained with")
    return sentences, name


def _load_eval_data(args):
    """The trained workdir and the split to evaluate: ``(config, info, spec, state, sentences, encoded, name)``."""
    config, info = load_run_info(Path(args.workdir).expanduser())
    labels = info["labels"]
    sentences, name = _read_eval_split(args, config, labels)
    config, info, spec, state, tokenizer = load_trained(args.workdir, args.checkpoint)
    encoded, rep = encode_sentences(sentences, tokenizer, labels, min(config.data.max_subwords, spec.bert.max_position))
    log.info(rep.summary(name))
    return config, info, spec, state, sentences, encoded, name


def run_eval(args) -> dict[str, Any]:
    """Exit by exit (no ``--strategy``): the per-exit table of P/R/F1 and entropy."""
    mesh = _eval_mesh(args)
    config, info, spec, state, sentences, encoded, name = _load_eval_data(args)
    step = None
    if mesh is not None:
        params_sh = distributed.state_shardings(state["params"], mesh)
        state = {"params": distributed.place(state["params"], params_sh)}
        step = distributed.make_eval_step(spec, mesh, params_sh)
    result = evaluate_exits(state, spec, sentences, encoded, info["labels"], info["nested"], args.batch_size,
                            progress=not args.quiet, step=step)
    result.update(split=args.split if not args.data else args.data, checkpoint=args.checkpoint,
                  workdir=str(args.workdir))
    if args.plot:
        plot_per_exit(result["per_exit"], args.plot, title=f"{Path(args.workdir).name}: {name}")
    return result


def _eval_mesh(args):
    """The ``--mesh-data`` mesh (None for one device), checked against ``--batch-size``."""
    if args.mesh_data == 1:
        return None
    mesh = distributed.data_mesh(args.mesh_data)
    distributed.check_batch_size(mesh, args.batch_size, "--batch-size")
    return mesh


def run_policy_eval(args) -> dict[str, Any]:
    """One exit policy (``--strategy``) with the online engine: P/R/F1, exit layers, timings."""
    policy = policy_from_input(args, num_layers=load_run_info(Path(args.workdir).expanduser())[1]["num_layers"])
    mesh = _eval_mesh(args)
    config, info, spec, state, sentences, encoded, name = _load_eval_data(args)
    fixed = policy.fixed_exit(spec.num_exits, policy.knobs())  # the last exit only: the full model
    if spec.exits == "last" and (fixed is None or int(fixed) != spec.num_exits):
        log.warning("this model was trained with model.exits='last': only the last exit is trained")
    log.info("evaluating %s on %s", policy, name)
    result = evaluate_policy(state, spec, sentences, encoded, info["labels"], info["nested"], policy,
                             args.batch_size, dump_tables=args.dump_tables, progress=not args.quiet,
                             exit_rank=args.exit_rank, mesh=mesh)
    result.update(split=args.split if not args.data else args.data, checkpoint=args.checkpoint,
                  workdir=str(args.workdir), backend=jax.default_backend(), devices=mesh.size if mesh else 1)
    return result


# --- sweeps: every strategy from cached tables (Figures 3-5, Table 1) --------------------------
SWEEP_SPLITS = ("dev", "test")


def _split_summary(args, workdir: Path, config, info, split: str, sentences, model_parts):
    """One split's ``SplitSummary``, from the summary cache, else from the table cache, else from BERT.

    Returns ``(summary, report)``; the report says which caches were reused and how long each step took.
    """
    import time

    from .cache import CacheError, build_tables, load_or_build_npz, load_or_build_tables, table_cache_path, table_key
    from .sweeps import SplitSummary, summarize

    labels, nested = info["labels"], info["nested"]
    limit = None if args.edit_max_words is None or args.edit_max_words < 0 else args.edit_max_words
    measures = ["kl", "euclidean", "cosine"] + (["edit"] if limit != 0 else [])
    key = table_key(workdir, args.checkpoint, config, info, split, args.cache_dtype)
    tpath = table_cache_path(workdir, key)
    skey = {"tables": key, "summary_version": 1, "labels": labels, "nested": bool(nested), "measures": measures,
            "edit_max_words": limit}
    spath = tpath.with_name(f"{tpath.stem}.summary-e{'all' if limit is None else limit}.npz")
    report: dict[str, Any] = {"split": split, "sentences": len(sentences), "tables": str(tpath),
                              "summary": str(spath), "checkpoint_step": key["checkpoint"]["step"]}

    def build_summary():
        def build():
            m = model_parts()
            if m["step"] != key["checkpoint"]["step"]:
                raise CacheError(f"the {args.checkpoint} checkpoint changed while loading (step "
                                 f"{key['checkpoint']['step']} -> {m['step']}); run again")
            encoded, rep = encode_sentences(sentences, m["tokenizer"], labels,
                                            min(config.data.max_subwords, m["spec"].bert.max_position))
            log.info(rep.summary(split))
            t0 = time.perf_counter()
            tables = build_tables(m["state"], m["spec"], encoded, args.batch_size, progress=not args.quiet)
            report["tables_build_s"] = time.perf_counter() - t0
            log.info("%s: every exit's tables of %d sentences in %.1f s", split, len(tables), report["tables_build_s"])
            return tables

        tables, reused, _ = load_or_build_tables(workdir, key, build)
        report["tables_reused"] = reused
        if reused:
            log.info("%s: reusing cached tables %s", split, tpath)
        log.info("%s: summarising (distances, signals, decoded spans per layer)", split)
        s = summarize(tables, [x.span_set() for x in sentences], labels, nested, measures=measures,
                      edit_max_words=limit, progress=not args.quiet, log=lambda msg: log.info("%s: %s", split, msg))
        return s.to_arrays()

    arrays, reused = load_or_build_npz(spath, skey, build_summary)
    report["summary_reused"] = reused
    if reused:
        log.info("%s: reusing cached summary %s (no BERT, no decoding)", split, spath)
    summary = SplitSummary.from_arrays(arrays)
    report["timings_s"] = summary.timings
    report["edit_sentences"] = int(summary.edit_done.sum())
    return summary, report


def run_sweep(args) -> dict[str, Any]:
    """``eval.py --sweep``: every strategy on dev and test from cached tables; CSV, figures, Table 1.

    Writes under ``--sweep-dir`` (default ``workdir/sweeps``): ``sweep.csv`` (one row per split and
    configuration), ``pareto_<split>.png`` (Figure 3), ``ensemble_<split>.png`` (Figure 4),
    ``measures_<split>.png`` (Figure 5), ``table1.json`` / ``table1.md`` (chosen on dev, reported
    on test, with paired bootstraps) and ``summary.json`` (caches used, timings).
    """
    import json

    from .sweep_plots import PLOTS
    from .sweeps import SweepGrid, default_targets, format_table1, sweep_split, table1, write_csv

    if args.data:
        raise ConfigError("--sweep evaluates the config's dev and test splits; it does not take --data")
    workdir = Path(args.workdir).expanduser()
    config, info = load_run_info(workdir)
    M = info["num_layers"]
    out_dir = Path(args.sweep_dir).expanduser() if args.sweep_dir else workdir / "sweeps"
    model: dict[str, Any] = {}

    def model_parts():  # loaded only when a cache has to be built
        if not model:
            _, _, spec, state, tokenizer, meta = _load_trained(workdir, args.checkpoint)
            model.update(spec=spec, state=state, tokenizer=tokenizer, step=int(meta["step"]))
        return model

    summaries, reports, rows = {}, [], []
    for split in SWEEP_SPLITS:
        try:
            sentences = load_split(config.data, split)
        except ConfigError as e:  # no dev split in the config (a missing file is an error)
            if split == "dev":
                log.warning("no dev split (%s): sweeping test only, and no Table 1 (it is chosen on dev)", e)
                continue
            raise
        split_name = f"{split} ({config.data.get(split) or 'held out of train'})"
        check_labels(sentences, info["labels"], split_name, "the label set the workdir was trained with")
        summaries[split], rep = _split_summary(args, workdir, config, info, split, sentences, model_parts)
        reports.append(rep)
        rows += sweep_split(summaries[split], split, SweepGrid())
    if model.get("spec") is not None and model["spec"].exits == "last":
        log.warning("this model was trained with model.exits='last': only the last exit is trained")

    paths = {"csv": str(out_dir / "sweep.csv")}
    write_csv(rows, paths["csv"])
    name = workdir.name
    for split in summaries:
        split_rows = [r for r in rows if r["split"] == split]
        for stem, plot in PLOTS.items():
            path = out_dir / f"{stem}_{split}.png"
            plot(split_rows, path, f"{name}: {split} ({args.checkpoint} checkpoint)", M)
            paths[f"{stem}_{split}"] = str(path)
    result: dict[str, Any] = {"workdir": str(workdir), "checkpoint": args.checkpoint, "num_layers": M,
                              "configurations": {s: sum(r["split"] == s for r in rows) for s in summaries},
                              "splits": reports, "files": paths}
    if "dev" in summaries and "test" in summaries:
        targets = list(args.targets) if args.targets else default_targets(M)
        t1 = table1([r for r in rows if r["split"] == "dev"], [r for r in rows if r["split"] == "test"],
                    summaries["test"], targets, n_resamples=args.bootstrap, seed=args.seed)
        paths["table1_json"], paths["table1_md"] = str(out_dir / "table1.json"), str(out_dir / "table1.md")
        Path(paths["table1_json"]).write_text(json.dumps(t1, indent=2))
        Path(paths["table1_md"]).write_text(format_table1(t1))
        result["table1"] = t1
    (out_dir / "summary.json").write_text(json.dumps({k: v for k, v in result.items() if k != "table1"}, indent=2))
    paths["summary"] = str(out_dir / "summary.json")
    return result


def format_sweep(result: dict[str, Any]) -> str:
    """What a sweep did and wrote, and Table 1."""
    from .sweeps import format_table1

    lines: list[str] = []
    for r in result["splits"]:
        t = r["timings_s"]
        src = ("the cached summary, which took" if r["summary_reused"] else
               "the cached tables; took" if r.get("tables_reused") else
               f"BERT (exit tables {r.get('tables_build_s', 0):.1f} s); took")
        edit = (f"; edit distance on {r['edit_sentences']}/{r['sentences']} sentences {t['edit']:.1f} s"
                if "edit" in t else "; no edit distance")
        lines.append(f"{r['split']}: {r['sentences']} sentences, checkpoint step {r['checkpoint_step']}, from {src}: "
                     f"kl/euclidean/cosine distances + signals {t['distances_and_signals']:.1f} s, decoding "
                     f"{t['decode']:.1f} s{edit}; {result['configurations'][r['split']]} configurations")
    lines += [f"wrote {p}" for p in result["files"].values()]
    if "table1" in result:
        lines += ["", format_table1(result["table1"])]
    return "\n".join(lines)
