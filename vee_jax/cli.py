"""Command lines: ``vee-train`` / ``train.py``, ``vee-eval`` / ``eval.py``, ``vee-predict`` / ``predict.py``, ``vee-serve`` / ``serve.py``.

Errors a user can fix (bad data, a missing file, a wrong workdir) print one line and exit 2,
without a Python traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .allocator import keep_freed_memory
from .errors import UserError


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "fix your input", printed as one line (exit 2).

    Every ``errors.UserError`` (bad data with file and line, a wrong workdir, backbone folder or
    cache, a config field, option or policy that cannot be used) and a missing file. Anything
    else is a bug and keeps its traceback.
    """
    return (UserError, FileNotFoundError)


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
    import jax

    if jax.process_index() != 0:  # multi-host: process 0 speaks for all
        return
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


def add_policy_args(g, strategy_help: str) -> None:
    """The exit policy options shared by eval.py, predict.py and serve.py (``policies.policy_from_input``)."""
    g.add_argument("--strategy", default=None, choices=["vee", "entropy", "maxprob", "budget", "full"],
                   help=strategy_help)
    g.add_argument("--measure", default=None, choices=["kl", "euclidean", "cosine", "edit"],
                   help="VEE's consistency measure, as a distance (default kl)")
    g.add_argument("--tau", type=float, default=None,
                   help="vee: largest distance that counts as agreement; entropy: exit when below; "
                        "maxprob: exit when above")
    g.add_argument("--patience", type=int, default=None, help="vee: votes needed to exit (default 2)")
    g.add_argument("--ensemble", action="store_true", help="predict the mean of the tables up to the exit")
    g.add_argument("--layer", type=int, default=None, help="budget: the exit layer m* (1-based)")


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
    p.add_argument("--mesh-data", type=int, default=1,
                   help="split every batch over this many devices (-1: all; README 'Several devices and hosts'); "
                        "--batch-size must be a multiple")
    g = p.add_argument_group("early exiting (Sec. 4.2, 5.2): evaluate one exit policy with the online engine")
    add_policy_args(g, strategy_help="exit policy; without it, the per-exit table")
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
    keep_freed_memory()  # many jitted calls on large batches: no page faults at each (allocator.py)
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


# --- predict ---------------------------------------------------------------------------------
def _policy(args):
    """The ``--strategy`` policy and its options, or VEE's defaults (kl, tau 0.01, patience 2) without one."""
    from .policies import policy_from_input

    return policy_from_input(args)


def predict_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="predict.py",
        description="Entities in raw text with a trained workdir, one JSON line per input. Inputs come from "
                    "the arguments, --input FILE... (- for stdin) or stdin. Without --sentences and with "
                    "--input-format lines each input is one sentence: "
                    '{"text", "entities": [{"start", "end", "type", "text", "score"}], "exit_layer"}. '
                    "As documents (--sentences RULE, or --input-format jsonl or file) each input is cut "
                    'into sentences: {"text", "entities": [{..., "sentence"}], "sentences": '
                    '[{"start", "end", "exit_layer", "words"}]}, offsets into the document (docs/documents.md).')
    p.add_argument("texts", nargs="*", help="texts to analyse (none: read --input or stdin)")
    p.add_argument("--workdir", required=True, help="the --workdir given to train.py")
    p.add_argument("--checkpoint", default="best", choices=["best", "latest"])
    p.add_argument("--input", default=None, nargs="+", action="extend", metavar="FILE",
                   help="files of inputs (- for stdin); see --input-format")
    p.add_argument("--input-format", default="lines", choices=["lines", "jsonl", "file"],
                   help="lines: one input per line (default); jsonl: one JSON object per line with \"text\" "
                        "(its other fields, an \"id\" say, are copied to the output); file: each --input file is "
                        "one document (its name in \"file\" instead of its text)")
    p.add_argument("--sentences", default=None, choices=["auto", "pysbd", "lines", "lines+pysbd", "zh", "none"],
                   help="treat each input as a document and cut it into sentences by this rule (auto: the rule "
                        "of the workdir's data format: pysbd for GENIA-like json/hf, lines for conll, zh for "
                        "msra; docs/sentences.md); the default for --input-format jsonl and file")
    p.add_argument("--output", default=None, help="write the JSON lines here (default stdout)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per engine call")
    p.add_argument("--chunk", type=int, default=1024, help="inputs read and answered at a time from a file")
    p.add_argument("--word-rule", default=None, choices=["ptb", "chars", "whitespace"],
                   help="how text is cut into words (default: the rule of the workdir's data format)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no log lines")
    add_policy_args(p.add_argument_group("exit policy (default: vee, kl, tau 0.01, patience 2)"),
                    strategy_help="exit policy")
    return p


def _chunks(lines, size: int):
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _jsonl_records(lines, where: str):
    """``{"text": ..., ...}`` per non-blank line of a JSONL file; a bad line is a ``UserError``."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}:{n}: not JSON ({e})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise UserError(f'{where}:{n}: expected an object with a "text" string')
        yield rec


def _inputs(args, stack):
    """``(records, total)``: records are dicts with "text" (and copied fields), in input order."""
    if args.texts:
        return ({"text": t} for t in args.texts), len(args.texts)
    sources = args.input or ["-"]
    if args.input_format == "file":
        def files():
            for src in sources:
                if src == "-":
                    yield {"file": "-", "text": sys.stdin.read()}
                else:
                    yield {"file": src, "text": Path(src).read_text(encoding="utf-8")}
        return files(), len(sources)
    total = 0 if all(s != "-" for s in sources) else None

    def records():
        for src in sources:
            f = sys.stdin if src == "-" else stack.enter_context(open(src, encoding="utf-8"))
            if args.input_format == "jsonl":
                yield from _jsonl_records(f, src)
            else:
                yield from ({"text": t.rstrip("\r\n")} for t in f)
    if total is not None:
        for src in sources:
            with open(src, encoding="utf-8") as g:
                total += sum(1 for line in g if line.strip() or args.input_format == "lines")
    return records(), total


def predict_main(argv: list[str] | None = None) -> None:
    """``python predict.py --workdir runs/genia [--strategy vee --patience 2 --tau 0.01] "text" ...``.

    Documents: ``python predict.py --workdir runs/genia --sentences auto --input abstracts.txt`` (one
    document a line), ``--input-format jsonl --input docs.jsonl`` or ``--input-format file --input *.txt``.
    """
    import contextlib
    import itertools

    args = predict_parser().parse_args(argv)
    keep_freed_memory()  # many jitted calls on large batches: no page faults at each (allocator.py)
    _setup_logging()
    if args.quiet:
        logging.getLogger("vee_jax").setLevel(logging.WARNING)
    from .predict import Predictor

    documents = args.sentences is not None or args.input_format != "lines"
    try:
        predictor = Predictor.from_workdir(args.workdir, _policy(args), checkpoint=args.checkpoint,
                                           word_rule=args.word_rule, batch_size=args.batch_size)
        if documents:
            from .documents import sentence_rule_of_workdir

            rule = args.sentences if args.sentences not in (None, "auto") else sentence_rule_of_workdir(args.workdir)
            predictor.sentence_rule = rule
    except user_errors() as e:
        _fail(e)
    with contextlib.ExitStack() as stack:
        out = sys.stdout
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(open(args.output, "w", encoding="utf-8"))
        try:
            records, total = _inputs(args, stack)
        except OSError as e:
            _fail(e)
        interactive = not args.texts and (args.input is None or args.input == ["-"]) and sys.stdin.isatty()
        size = 1 if interactive else len(args.texts) if args.texts else args.chunk  # a terminal: answer each line
        bar = None
        if not args.quiet and not args.texts:
            from tqdm.auto import tqdm

            bar = stack.enter_context(tqdm(total=total, desc="predict", unit="doc" if documents else "text",
                                           file=sys.stderr))
        it = iter(records)
        try:
            while chunk := list(itertools.islice(it, size)):
                texts = [r["text"] for r in chunk]
                if documents:
                    for rec, doc in zip(chunk, predictor.predict_documents(texts)):
                        extra = {k: v for k, v in rec.items() if k not in ("text", "file")}
                        row = doc.to_dict(with_text="file" not in rec)
                        row = {"file": rec["file"], **row} if "file" in rec else row
                        out.write(json.dumps({**extra, **row}, ensure_ascii=False) + "\n")
                else:
                    for pred in predictor(texts):
                        out.write(json.dumps(pred.to_dict(), ensure_ascii=False) + "\n")
                out.flush()
                if bar is not None:
                    bar.update(len(texts))
        except (OSError, UnicodeDecodeError) as e:
            _fail(e)
        except user_errors() as e:
            _fail(e)


# --- serve -----------------------------------------------------------------------------------
def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="serve.py",
        description="Serve a trained workdir over HTTP: POST /ner, POST /ner/documents, GET /health, GET /metrics, /docs. "
                    "With --target-p95-ms the depth follows the load (a ladder of exit policies).")
    p.add_argument("--workdir", required=True, help="the --workdir given to train.py")
    p.add_argument("--checkpoint", default="best", choices=["best", "latest"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=32, help="at most this many sentences per micro-batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a micro-batch waits to fill")
    p.add_argument("--target-p95-ms", type=float, default=None,
                   help="latency target: step down the ladder when the p95 latency or the queue's expected "
                        "wait passes it, back up when both fall under half of it (default: off, level 0 only)")
    p.add_argument("--ladder", default=None,
                   help="JSON list of policies, deepest first (default: the --strategy policy, then the dev "
                        "sweep's best VEE-KL at average exit layer <= 2M/3, M/2, M/3 when workdir/sweeps/"
                        "sweep.csv exists, else budgets at those layers)")
    p.add_argument("--max-texts", type=int, default=32, help="texts per request (413 past it)")
    p.add_argument("--max-chars", type=int, default=2000, help="characters per text (413 past it)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body size (413 past it)")
    p.add_argument("--max-document-chars", type=int, default=100_000,
                   help="POST /ner/documents: characters per request, all documents together (413 past it)")
    p.add_argument("--max-sentences", type=int, default=256,
                   help="POST /ner/documents: sentences per request (413 past it; at most --max-queue)")
    p.add_argument("--max-words", type=int, default=8192, help="POST /ner/documents: words per request (413 past it)")
    p.add_argument("--sentences", default="auto", choices=["auto", "pysbd", "lines", "lines+pysbd", "zh", "none"],
                   help="POST /ner/documents: the default sentence rule (auto: the workdir's data format's)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="sentences waiting; past it requests get 503 with Retry-After")
    p.add_argument("--warmup-subwords", type=int, default=64,
                   help="compile every ladder policy on every batch shape up to this many subwords at start "
                        "(0: compile on first use)")
    p.add_argument("--word-rule", default=None, choices=["ptb", "chars", "whitespace"])
    add_policy_args(p.add_argument_group("the deepest policy, level 0 (default: vee, kl, tau 0.01, patience 2)"),
                    strategy_help="exit policy at level 0")
    return p


def build_ladder(args, predictor):
    """The ladder of ``serve.py``'s options (see ``serve_parser``)."""
    from .serving import default_ladder, ladder_from_sweep, load_ladder

    if args.ladder:
        return load_ladder(args.ladder)
    sweep = Path(args.workdir).expanduser() / "sweeps" / "sweep.csv"
    if sweep.exists():
        return ladder_from_sweep(sweep, predictor.policy, predictor.num_layers)
    return default_ladder(predictor.policy, predictor.num_layers)


def serve_main(argv: list[str] | None = None) -> None:
    """``python serve.py --workdir runs/genia --port 8000 [--target-p95-ms 200]``."""
    import time

    args = serve_parser().parse_args(argv)
    keep_freed_memory()  # many jitted calls on large batches: no page faults at each (allocator.py)
    _setup_logging()
    log = logging.getLogger("vee_jax")
    from .predict import Predictor
    from .serving import Limits, create_app

    try:
        predictor = Predictor.from_workdir(args.workdir, _policy(args), checkpoint=args.checkpoint,
                                           word_rule=args.word_rule, batch_size=args.batch_size)
        from .documents import sentence_rule_of_workdir

        predictor.sentence_rule = sentence_rule_of_workdir(args.workdir) if args.sentences == "auto" else args.sentences
        ladder = build_ladder(args, predictor)
        limits = Limits(max_texts=args.max_texts, max_chars=args.max_chars, max_body_bytes=args.max_body_bytes,
                        max_queue=args.max_queue, max_document_chars=args.max_document_chars,
                        max_sentences=args.max_sentences, max_words=args.max_words)
        app = create_app(predictor, ladder=ladder, target_p95_ms=args.target_p95_ms, limits=limits,
                         max_wait_ms=args.max_wait_ms)
    except user_errors() as e:
        _fail(e)
    for i, lv in enumerate(ladder):
        log.info("ladder level %d: %s (dev avg exit layer %s, dev F1 %s)", i, lv.policy.to_dict(),
                 lv.avg_exit_layer, lv.f1)
    if args.warmup_subwords > 0:
        t0 = time.perf_counter()
        n = predictor.warm_up([lv.policy for lv in ladder], max_subwords=args.warmup_subwords)
        log.info("warm-up: %d compilations (policies x batch shapes up to %d subwords) in %.1f s", n,
                 args.warmup_subwords, time.perf_counter() - t0)
    import uvicorn

    log.info("serving %s on http://%s:%d (docs: /docs; adaptive depth %s)", args.workdir, args.host, args.port,
             f"on, target p95 {args.target_p95_ms} ms" if args.target_p95_ms else "off")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
