"""``python eval.py --workdir runs/genia``: evaluate a trained workdir exit by exit, under one policy, or sweep.

Without ``--strategy``: the per-exit table (P/R/F1 and the entropy of Eq. 6 per exit). With
``--strategy vee --measure kl --tau 0.01 --patience 2 [--ensemble]`` (or ``entropy``,
``maxprob``, ``budget --layer m``, ``full``): one exit policy with the online engine, P/R/F1,
average exit layer and wall-clock time against the full model. With ``--sweep``: every
strategy's grid on dev and test from the cached tables (CSV, Figures 3-5, Table 1 chosen on
dev with paired bootstraps) under ``workdir/sweeps``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from absl import flags

from .common import begin, define_policy_flags, fail, positive_int, user_errors

log = logging.getLogger("vee_jax")

DESCRIPTION = ("Evaluate a trained vee_jax workdir exit by exit, under one exit policy (--strategy), "
               "or sweep every policy on dev and test (--sweep).")
SWEEP_SPLITS = ("dev", "test")


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "the --workdir given to train.py", flag_values=fv)
    flags.DEFINE_enum("split", "test", ["train", "dev", "test"], "the config's split to evaluate", flag_values=fv)
    flags.DEFINE_string("data", None, "evaluate this file instead of the config's split", flag_values=fv)
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "which checkpoint", flag_values=fv)
    flags.DEFINE_string("output", None, "write the results as JSON here", flag_values=fv)
    flags.DEFINE_string("plot", None, "draw F1 and entropy per exit (Figure 1) as a PNG here", flag_values=fv)
    positive_int("batch_size", 32, "sentences per batch", fv)
    flags.DEFINE_boolean("quiet", False, "no progress bar", flag_values=fv)
    flags.DEFINE_integer("mesh_data", 1, "split every batch over this many devices (-1: all; docs/scaling.md); "
                                         "--batch-size must be a multiple", flag_values=fv)
    define_policy_flags(fv, "early exiting (Sec. 4.2, 5.2): evaluate one exit policy with the online engine; "
                            "without it, the per-exit table")
    flags.DEFINE_integer("exit_rank", 0, "run the policy on low-rank exits of this rank (faster; 0: exact; "
                                         "docs/performance.md)", lower_bound=0, flag_values=fv)
    flags.DEFINE_string("dump_tables", None, "write every sentence's tables as probs_<i> [M, n, n, K] to this .npz",
                        flag_values=fv)
    flags.DEFINE_boolean("sweep", False, "sweep every strategy's grid on dev and test (BERT runs once per split "
                                         "and checkpoint; tables cached in workdir/cache) and write CSV, figures "
                                         "and Table 1", flag_values=fv)
    flags.DEFINE_string("sweep_dir", None, "where the sweep's files go (default workdir/sweeps)", flag_values=fv)
    flags.DEFINE_list("targets", None, "Table 1's target average exit layers, comma-separated "
                                       "(default M/3,M/2,2M/3)", flag_values=fv)
    flags.DEFINE_integer("edit_max_words", 48, "compute the edit distance (O(L^4)) only for sentences of at most "
                                               "this many words (-1: all; 0: skip the edit distance)",
                         flag_values=fv)
    flags.DEFINE_integer("bootstrap", 1000, "paired bootstrap resamples for Table 1", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "the bootstrap's seed", flag_values=fv)
    flags.DEFINE_enum("cache_dtype", "float32", ["float32", "float16"],
                      "how the cached tables are stored (float16 halves the file, rounding at ~1e-3)", flag_values=fv)
    flags.mark_flag_as_required("workdir", flag_values=fv)
    return fv


def targets_of(values: Sequence[str] | None) -> list[float] | None:
    """``["2", "3", "4.5"]`` (``--targets 2,3,4.5``) -> ``[2.0, 3.0, 4.5]``."""
    if not values:
        return None
    try:
        return [float(t) for t in values]
    except ValueError:
        fail(f"eval.py: --targets expects comma-separated numbers, got {','.join(values)!r}")


# --- the split and the model ---------------------------------------------------------------------
def read_eval_split(workdir, split: str, data: str | None):
    """The sentences to evaluate (``data`` or the config's ``split``) and their name, checked against the labels.

    Read before the model is loaded, so a bad file fails in a second.
    """
    from ..data.splits import check_labels, load_split, read_file, require_sentences

    config = workdir.config
    if data:
        sentences, name = require_sentences(read_file(config.data, data), data), data
    else:
        sentences = load_split(config.data, split)
        name = f"{split} ({config.data.get(split) or 'held out of train'})"
    check_labels(sentences, workdir.labels, name, "the label set the workdir was trained with")
    return sentences, name


def encode(model, sentences, name: str):
    """``Encoded`` sentences for ``model`` (``data.features.encode_sentences``), logged."""
    from ..data.features import encode_sentences

    encoded, rep = encode_sentences(sentences, model.tokenizer, model.labels, model.max_subwords,
                                    model.context_subwords, casing=model.spec.casing)
    log.info(rep.summary(name))
    return encoded


def eval_mesh(mesh_data: int, batch_size: int):
    """The ``--mesh-data`` mesh (None for one device), checked against ``--batch-size``."""
    from .. import distributed

    if mesh_data == 1:
        return None
    mesh = distributed.data_mesh(mesh_data)
    distributed.check_batch_size(mesh, batch_size, "--batch-size")
    return mesh


# --- exit by exit, and one policy ---------------------------------------------------------------
def per_exit(model, sentences, name: str, *, batch_size: int, mesh, progress: bool) -> dict[str, Any]:
    """Exit by exit: the per-exit table of P/R/F1 and entropy."""
    from .. import distributed
    from ..evaluation import evaluate_exits

    state, step = model.state, None
    if mesh is not None:
        params_sh = distributed.state_shardings(state["params"], mesh)
        state = {"params": distributed.place(state["params"], params_sh)}
        step = distributed.make_eval_step(model.spec, mesh, params_sh)
    return evaluate_exits(state, model.spec, sentences, encode(model, sentences, name), model.labels, model.nested,
                          batch_size, progress=progress, step=step)


def one_policy(model, sentences, name: str, policy, *, batch_size: int, mesh, exit_rank: int,
               dump_tables: str | None, progress: bool) -> dict[str, Any]:
    """One exit policy with the online engine: P/R/F1, exit layers, timings."""
    import jax

    from ..evaluation import evaluate_policy

    spec = model.spec
    fixed = policy.fixed_exit(spec.num_exits, policy.knobs())  # the last exit only: the full model
    if spec.exits == "last" and (fixed is None or int(fixed) != spec.num_exits):
        log.warning("this model was trained with model.exits='last': only the last exit is trained")
    log.info("evaluating %s on %s", policy, name)
    result = evaluate_policy(model.state, spec, sentences, encode(model, sentences, name), model.labels, model.nested,
                             policy, batch_size, dump_tables=dump_tables, progress=progress, exit_rank=exit_rank,
                             mesh=mesh)
    result.update(backend=jax.default_backend(), devices=mesh.size if mesh else 1)
    return result


# --- sweeps: every strategy from cached tables (Figures 3-5, Table 1) --------------------------
def split_summary(workdir, checkpoint: str, split: str, sentences, model_parts: Callable[[], dict], *,
                  edit_max_words: int | None, cache_dtype: str, batch_size: int, progress: bool):
    """One split's ``SplitSummary``, from the summary cache, else from the table cache, else from BERT.

    Returns ``(summary, report)``; the report says which caches were reused and how long each step took.
    """
    from ..cache import CacheError, build_tables, load_or_build_npz, load_or_build_tables, table_cache_path, table_key
    from ..paths import display_path
    from ..sweeps import SplitSummary, summarize

    config, info = workdir.run_info
    labels, nested = workdir.labels, workdir.nested
    limit = None if edit_max_words is None or edit_max_words < 0 else edit_max_words
    measures = ["kl", "euclidean", "cosine"] + (["edit"] if limit != 0 else [])
    key = table_key(workdir.path, checkpoint, config, info, split, cache_dtype)
    tpath = table_cache_path(workdir.path, key)
    skey = {"tables": key, "summary_version": 1, "labels": labels, "nested": bool(nested), "measures": measures,
            "edit_max_words": limit}
    spath = tpath.with_name(f"{tpath.stem}.summary-e{'all' if limit is None else limit}.npz")
    report: dict[str, Any] = {"split": split, "sentences": len(sentences), "tables": display_path(tpath),
                              "summary": display_path(spath), "checkpoint_step": key["checkpoint"]["step"]}

    def build_summary():
        def build():
            m = model_parts()
            if m.meta["step"] != key["checkpoint"]["step"]:
                raise CacheError(f"the {checkpoint} checkpoint changed while loading (step "
                                 f"{key['checkpoint']['step']} -> {m.meta['step']}); run again")
            t0 = time.perf_counter()
            tables = build_tables(m.state, m.spec, encode(m, sentences, split), batch_size, progress=progress)
            report["tables_build_s"] = time.perf_counter() - t0
            log.info("%s: every exit's tables of %d sentences in %.1f s", split, len(tables), report["tables_build_s"])
            return tables

        tables, reused, _ = load_or_build_tables(workdir.path, key, build)
        report["tables_reused"] = reused
        if reused:
            log.info("%s: reusing cached tables %s", split, tpath)
        log.info("%s: summarising (distances, signals, decoded spans per layer)", split)
        s = summarize(tables, [x.span_set() for x in sentences], labels, nested, measures=measures,
                      edit_max_words=limit, progress=progress, log=lambda msg: log.info("%s: %s", split, msg))
        return s.to_arrays()

    arrays, reused = load_or_build_npz(spath, skey, build_summary)
    report["summary_reused"] = reused
    if reused:
        log.info("%s: reusing cached summary %s (no BERT, no decoding)", split, spath)
    summary = SplitSummary.from_arrays(arrays)
    report["timings_s"] = summary.timings
    report["edit_sentences"] = int(summary.edit_done.sum())
    return summary, report


def sweep(workdir, checkpoint: str = "best", *, out_dir: str | Path | None = None, targets=None,
          bootstrap: int = 1000, seed: int = 0, edit_max_words: int | None = 48, cache_dtype: str = "float32",
          batch_size: int = 32, progress: bool = True) -> dict[str, Any]:
    """``eval.py --sweep``: every strategy on dev and test from cached tables; CSV, figures, Table 1.

    Writes under ``out_dir`` (default ``workdir/sweeps``): ``sweep.csv`` (one row per split and
    configuration), ``pareto_<split>.png`` (Figure 3), ``ensemble_<split>.png`` (Figure 4),
    ``measures_<split>.png`` (Figure 5), ``table1.json`` / ``table1.md`` (chosen on dev, reported
    on test, with paired bootstraps) and ``summary.json`` (caches used, timings). The model is
    loaded only when a cache has to be built.
    """
    from ..config import ConfigError
    from ..data.splits import check_labels, load_split
    from ..paths import display_path
    from ..sweep_plots import PLOTS
    from ..sweeps import SweepGrid, default_targets, format_table1, sweep_split, table1, write_csv
    from ..trained import TrainedModel

    M = workdir.num_layers
    out_dir = Path(out_dir).expanduser() if out_dir else workdir.sweeps_dir
    model: list = []

    def model_parts():  # loaded only when a cache has to be built
        if not model:
            model.append(TrainedModel.load(workdir, checkpoint))
        return model[0]

    summaries, reports, rows = {}, [], []
    for split in SWEEP_SPLITS:
        try:
            sentences = load_split(workdir.config.data, split)
        except ConfigError as e:  # no dev split in the config (a missing file is an error)
            if split == "dev":
                log.warning("no dev split (%s): sweeping test only, and no Table 1 (it is chosen on dev)", e)
                continue
            raise
        split_name = f"{split} ({workdir.config.data.get(split) or 'held out of train'})"
        check_labels(sentences, workdir.labels, split_name, "the label set the workdir was trained with")
        summaries[split], rep = split_summary(workdir, checkpoint, split, sentences, model_parts,
                                              edit_max_words=edit_max_words, cache_dtype=cache_dtype,
                                              batch_size=batch_size, progress=progress)
        reports.append(rep)
        rows += sweep_split(summaries[split], split, SweepGrid())
    if model and model[0].spec.exits == "last":
        log.warning("this model was trained with model.exits='last': only the last exit is trained")

    files = {"csv": out_dir / "sweep.csv"}
    write_csv(rows, files["csv"])
    for split in summaries:
        split_rows = [r for r in rows if r["split"] == split]
        for stem, plot in PLOTS.items():
            files[f"{stem}_{split}"] = out_dir / f"{stem}_{split}.png"
            plot(split_rows, files[f"{stem}_{split}"], f"{workdir.path.name}: {split} ({checkpoint} checkpoint)", M)
    result: dict[str, Any] = {"workdir": display_path(workdir.path), "checkpoint": checkpoint, "num_layers": M,
                              "configurations": {s: sum(r["split"] == s for r in rows) for s in summaries},
                              "splits": reports}
    if "dev" in summaries and "test" in summaries:
        t1 = table1([r for r in rows if r["split"] == "dev"], [r for r in rows if r["split"] == "test"],
                    summaries["test"], list(targets) if targets else default_targets(M), n_resamples=bootstrap,
                    seed=seed)
        files["table1_json"], files["table1_md"] = out_dir / "table1.json", out_dir / "table1.md"
        files["table1_json"].write_text(json.dumps(t1, indent=2))
        files["table1_md"].write_text(format_table1(t1))
        result["table1"] = t1
    files["summary"] = out_dir / "summary.json"
    result["files"] = {k: display_path(p) for k, p in files.items()}
    files["summary"].write_text(json.dumps({k: v for k, v in result.items() if k != "table1"}, indent=2))
    return result


def format_sweep(result: dict[str, Any]) -> str:
    """What a sweep did and wrote, and Table 1."""
    from ..sweeps import format_table1

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


# --- the command --------------------------------------------------------------------------------
def evaluate(fv: flags.FlagValues) -> tuple[dict[str, Any], str]:
    """What the flags ask for: ``(result, its text for the terminal)``."""
    from ..evaluation import format_policy, format_table, plot_per_exit
    from ..paths import display_path
    from ..policies import policy_from_input
    from ..trained import TrainedModel, Workdir

    workdir = Workdir(fv.workdir)
    progress = not fv.quiet
    if fv.sweep:
        if fv.strategy:
            fail("--sweep evaluates every strategy; drop --strategy")
        if fv.data:
            fail("--sweep evaluates the config's dev and test splits; it does not take --data")
        result = sweep(workdir, fv.checkpoint, out_dir=fv.sweep_dir, targets=targets_of(fv.targets),
                       bootstrap=fv.bootstrap, seed=fv.seed, edit_max_words=fv.edit_max_words,
                       cache_dtype=fv.cache_dtype, batch_size=fv.batch_size, progress=progress)
        return result, format_sweep(result)
    policy = policy_from_input(fv, num_layers=workdir.num_layers) if fv.strategy else None
    mesh = eval_mesh(fv.mesh_data, fv.batch_size)
    sentences, name = read_eval_split(workdir, fv.split, fv.data)
    model = TrainedModel.load(workdir, fv.checkpoint)
    if policy is None:
        result = per_exit(model, sentences, name, batch_size=fv.batch_size, mesh=mesh, progress=progress)
        text = format_table(result["per_exit"])
        if fv.plot:
            plot_per_exit(result["per_exit"], fv.plot, title=f"{workdir.path.name}: {name}")
    else:
        result = one_policy(model, sentences, name, policy, batch_size=fv.batch_size, mesh=mesh,
                            exit_rank=fv.exit_rank, dump_tables=fv.dump_tables, progress=progress)
        text = format_policy(result) + (f"\nwrote {fv.dump_tables}" if fv.dump_tables else "")
    result.update(split=fv.data or fv.split, checkpoint=fv.checkpoint, workdir=display_path(workdir.path))
    return result, text


def main(argv: Sequence[str] | None = None) -> None:
    fv = define_flags()
    begin(fv, "eval.py", DESCRIPTION, argv)
    try:
        result, text = evaluate(fv)
    except user_errors() as e:
        fail(e)
    print(text)
    if fv.output:
        Path(fv.output).parent.mkdir(parents=True, exist_ok=True)
        Path(fv.output).write_text(json.dumps(result, indent=2))
        print(f"wrote {fv.output}")
