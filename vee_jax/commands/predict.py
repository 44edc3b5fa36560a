"""``python predict.py --workdir runs/genia [--strategy vee --patience 2 --tau 0.01] "text" ...``.

One JSON line per text: ``{"text", "entities": [{"start", "end", "type", "text", "score"}],
"exit_layer"}``. Texts come from the arguments, ``--input FILE`` (one per line; ``-`` for
stdin) or stdin.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from absl import flags

from .common import define_policy_flags, fail, parse, positive_int, setup_logging, user_errors

DESCRIPTION = ("Entities in raw text with a trained workdir: one JSON line per text, "
               '{"text", "entities": [{"start", "end", "type", "text", "score"}], "exit_layer"}. '
               "Texts come from the arguments, --input FILE (one per line; - for stdin) or stdin.")


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("workdir", None, "the --workdir given to train.py", flag_values=fv)
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "which checkpoint", flag_values=fv)
    flags.DEFINE_string("input", None, "a file of texts, one per line (- for stdin)", flag_values=fv)
    flags.DEFINE_string("output", None, "write the JSON lines here (default stdout)", flag_values=fv)
    positive_int("batch_size", 32, "sentences per engine call", fv)
    positive_int("chunk", 1024, "lines read and answered at a time from a file", fv)
    flags.DEFINE_enum("word_rule", None, ["ptb", "chars", "whitespace"],
                      "how text is cut into words (default: the rule of the workdir's data format)", flag_values=fv)
    flags.DEFINE_boolean("quiet", False, "no progress bar, no log lines", flag_values=fv)
    define_policy_flags(fv, "exit policy (default: vee, kl, tau 0.01, patience 2)")
    flags.mark_flag_as_required("workdir", flag_values=fv)
    return fv


def chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lines (their line ends dropped) in lists of ``size``."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def main(argv: Sequence[str] | None = None) -> None:
    from ..allocator import keep_freed_memory

    fv = define_flags()
    texts = parse(fv, "predict.py", DESCRIPTION, argv)
    keep_freed_memory()  # many jitted calls on large batches: no page faults at each (allocator.py)
    setup_logging(quiet=fv.quiet)
    from ..policies import policy_from_input
    from ..predict import Predictor

    try:
        predictor = Predictor.from_workdir(fv.workdir, policy_from_input(fv), checkpoint=fv.checkpoint,
                                           word_rule=fv.word_rule, batch_size=fv.batch_size)
    except user_errors() as e:
        fail(e)
    with contextlib.ExitStack() as stack:
        out = sys.stdout
        if fv.output:
            Path(fv.output).parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(open(fv.output, "w", encoding="utf-8"))
        if texts:
            source, total = [texts], len(texts)
        else:
            src = fv.input or "-"
            if src == "-":
                f, total = sys.stdin, None
                size = 1 if sys.stdin.isatty() else fv.chunk  # interactive: answer each line at once
            else:
                try:
                    f = stack.enter_context(open(src, encoding="utf-8"))
                except OSError as e:
                    fail(e)
                with open(src, encoding="utf-8") as g:
                    total = sum(1 for _ in g)
                size = fv.chunk
            source = chunks(f, size)
        bar = None
        if not fv.quiet and not texts:
            from tqdm.auto import tqdm

            bar = stack.enter_context(tqdm(total=total, desc="predict", unit="text", file=sys.stderr))
        for batch in source:
            for pred in predictor(batch):
                out.write(json.dumps(pred.to_dict(), ensure_ascii=False) + "\n")
            out.flush()
            if bar is not None:
                bar.update(len(batch))
