"""``python predict.py --workdir runs/genia [--strategy vee --patience 2 --tau 0.01] "text" ...``.

One JSON line per input. Inputs come from the arguments, ``--input FILE`` (repeatable; ``-``
for stdin) or stdin. Each input is one sentence, ``{"text", "entities": [{"start", "end",
"type", "text", "score"}], "exit_layer"}``, unless it is a document (``--sentences RULE``, or
``--input-format jsonl`` or ``file``): then it is cut into sentences and answered as
``{"text", "entities": [{..., "sentence"}], "sentences": [{"start", "end", "exit_layer",
"words"}]}`` with offsets into the document (docs/documents.md)::

    python predict.py --workdir runs/genia --sentences auto --input abstracts.txt   # a document a line
    python predict.py --workdir runs/genia --input-format jsonl --input docs.jsonl  # {"id", "text"} lines
    python predict.py --workdir runs/conll --input-format file stories/*.txt        # a file a document
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from absl import flags

from .common import begin, define_policy_flags, fail, positive_int, user_errors

DESCRIPTION = ("Entities in raw text with a trained workdir, one JSON line per input. Inputs come from the "
               "arguments, --input FILE (repeatable; - for stdin) or stdin. Without --sentences and with "
               "--input-format lines each input is one sentence: "
               '{"text", "entities": [{"start", "end", "type", "text", "score"}], "exit_layer"}. '
               "As documents (--sentences RULE, or --input-format jsonl or file) each input is cut into "
               'sentences: {"text", "entities": [{..., "sentence"}], "sentences": [{"start", "end", '
               '"exit_layer", "words"}]}, offsets into the document (docs/documents.md).')
SENTENCE_RULES = ["auto", "pysbd", "lines", "lines+pysbd", "zh", "none"]


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "the --workdir given to train.py", flag_values=fv)
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "which checkpoint", flag_values=fv)
    flags.DEFINE_multi_string("input", None, "a file of inputs (- for stdin; repeat for several); see "
                                             "--input-format", flag_values=fv)
    flags.DEFINE_enum("input_format", "lines", ["lines", "jsonl", "file"],
                      'lines: one input per line (default); jsonl: one JSON object per line with "text" (its other '
                      'fields, an "id" say, are copied to the output); file: each --input file (or argument) is '
                      'one document (its name in "file" instead of its text)', flag_values=fv)
    flags.DEFINE_enum("sentences", None, SENTENCE_RULES,
                      "treat each input as a document and cut it into sentences by this rule (auto: the rule of "
                      "the workdir's data format: pysbd for GENIA-like json/hf, lines for conll, zh for msra; "
                      "docs/sentences.md); the default for --input-format jsonl and file", flag_values=fv)
    flags.DEFINE_string("output", None, "write the JSON lines here (default stdout)", flag_values=fv)
    positive_int("batch_size", 32, "sentences per engine call", fv)
    flags.DEFINE_enum("weights", "float32", ["float32", "int8"], "the layers' dense weights: as trained, or int8 "
                      "(about half a layer's time on CPU; a deviation from the paper: docs/performance.md)",
                      flag_values=fv)
    positive_int("chunk", 1024, "inputs read and answered at a time from a file", fv)
    flags.DEFINE_enum("word_rule", None, ["ptb", "chars", "whitespace"],
                      "how text is cut into words (default: the rule of the workdir's data format)", flag_values=fv)
    flags.DEFINE_boolean("quiet", False, "no progress bar, no log lines", flag_values=fv)
    define_policy_flags(fv, "exit policy (default: vee, kl, tau 0.01, patience 2)")
    flags.mark_flag_as_required("workdir", flag_values=fv)
    return fv


def jsonl_records(lines: Iterable[str], where: str) -> Iterator[dict]:
    """``{"text": ..., ...}`` per non-blank line of a JSONL file; a bad line is a ``UserError``."""
    from ..errors import UserError

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


def inputs(args: Sequence[str], sources: Sequence[str] | None, input_format: str,
           stack: contextlib.ExitStack) -> tuple[Iterator[dict], int | None]:
    """``(records, total)``: dicts with "text" (and copied fields, or "file"), in input order; total
    None when reading stdin."""
    if input_format == "file":
        names = list(args) + list(sources or [])
        if not names:
            names = ["-"]

        def files():
            for src in names:
                yield {"file": "-", "text": sys.stdin.read()} if src == "-" else \
                    {"file": src, "text": Path(src).read_text(encoding="utf-8")}
        return files(), len(names)
    if args:
        return ({"text": t} for t in args), len(args)
    sources = list(sources or ["-"])

    def records():
        for src in sources:
            f = sys.stdin if src == "-" else stack.enter_context(open(src, encoding="utf-8"))
            if input_format == "jsonl":
                yield from jsonl_records(f, src)
            else:
                yield from ({"text": t.rstrip("\r\n")} for t in f)
    if "-" in sources:
        return records(), None
    total = 0
    for src in sources:
        with open(src, encoding="utf-8") as g:
            total += sum(1 for line in g if line.strip() or input_format == "lines")
    return records(), total


def write_answers(predictor, chunk: list[dict], documents: bool, out) -> None:
    """One JSON line per input of ``chunk``."""
    texts = [r["text"] for r in chunk]
    if not documents:
        for pred in predictor(texts):
            out.write(json.dumps(pred.to_dict(), ensure_ascii=False) + "\n")
        return
    for rec, doc in zip(chunk, predictor.predict_documents(texts)):
        extra = {k: v for k, v in rec.items() if k not in ("text", "file")}
        row = doc.to_dict(with_text="file" not in rec)
        row = {"file": rec["file"], **row} if "file" in rec else row
        out.write(json.dumps({**extra, **row}, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    import itertools

    fv = define_flags()
    args = begin(fv, "predict.py", DESCRIPTION, argv, positional=True, quiet_flag="quiet")
    from ..policies import policy_from_input
    from ..predict import Predictor

    documents = fv.sentences is not None or fv.input_format != "lines"
    try:
        predictor = Predictor.from_workdir(fv.workdir, policy_from_input(fv), checkpoint=fv.checkpoint,
                                           word_rule=fv.word_rule, batch_size=fv.batch_size,
                                           weights=fv.weights)
        if fv.sentences not in (None, "auto"):  # auto: the workdir's, set by from_workdir
            predictor.sentence_rule = fv.sentences
    except user_errors() as e:
        fail(e)
    with contextlib.ExitStack() as stack:
        out = sys.stdout
        if fv.output:
            Path(fv.output).parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(open(fv.output, "w", encoding="utf-8"))
        try:
            records, total = inputs(args, fv.input, fv.input_format, stack)
        except OSError as e:
            fail(e)
        from_args = bool(args) and fv.input_format != "file"
        interactive = not from_args and fv.input in (None, ["-"]) and sys.stdin.isatty()
        size = 1 if interactive else len(args) if from_args else fv.chunk  # a terminal: answer each line
        bar = None
        if not fv.quiet and not from_args:
            from tqdm.auto import tqdm

            bar = stack.enter_context(tqdm(total=total, desc="predict", unit="doc" if documents else "text",
                                           file=sys.stderr))
        it = iter(records)
        try:
            while chunk := list(itertools.islice(it, size)):
                write_answers(predictor, chunk, documents, out)
                out.flush()
                if bar is not None:
                    bar.update(len(chunk))
        except (OSError, UnicodeDecodeError) as e:
            fail(e)
        except user_errors() as e:
            fail(e)
