"""What the commands share: flag parsing, the exit-policy flags, logging, one-line errors.

Flags are absl flags, each command on its own ``FlagValues`` (so that commands built in one
process, as the tests do, never share a flag). Flag names are written with underscores and
accepted with dashes too (``--batch-size`` is ``--batch_size``), as the docs write them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from absl import flags

from ..errors import UserError


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "fix your input", printed as one line (exit 2).

    Every ``errors.UserError`` (bad data with file and line, a wrong workdir, backbone folder or
    cache, a config field, option or policy that cannot be used, a full disk while a checkpoint
    or a cache was written) and a missing file. Anything else is a bug and keeps its traceback.
    """
    return (UserError, FileNotFoundError)


def fail(e: BaseException | str, code: int = 2) -> NoReturn:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(code)


def _dashes_to_underscores(arg: str) -> str:
    """``--batch-size=3`` -> ``--batch_size=3`` (absl names use underscores; the docs use dashes)."""
    if not arg.startswith("--") or arg == "--":
        return arg
    name, eq, value = arg[2:].partition("=")
    return "--" + name.replace("-", "_") + eq + value


def parse(fv: flags.FlagValues, prog: str, description: str, argv: Sequence[str] | None) -> list[str]:
    """Parse ``argv`` (without the program name; None: ``sys.argv[1:]``) into ``fv``; the positional arguments.

    ``--help`` prints the flags and exits 0; a bad flag prints one ``error:`` line and exits 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "--helpfull") for a in argv):
        print(f"usage: {prog} [flags]\n\n{description}\n\nflags:\n"
              + fv.get_help(prefix="  ", include_special_flags=False))
        sys.exit(0)
    try:
        return fv([prog] + [_dashes_to_underscores(a) for a in argv])[1:]
    except flags.Error as e:
        fail(f"{prog}: {e} ({prog} --help lists the flags)")


def begin(fv: flags.FlagValues, prog: str, description: str, argv: Sequence[str] | None, *,
          positional: bool = False, keep_memory: bool = True, quiet_flag: str | None = None,
          cache_min_compile_secs: float = 1.0) -> list[str]:
    """A command's start: its flags parsed (``parse``), the process settings made, the positional arguments.

    ``positional``: whether arguments besides flags are allowed; ``keep_memory``: tune glibc's
    malloc for many jitted calls on large batches (``allocator.keep_freed_memory``; train.py
    leaves it alone); ``quiet_flag``: the name of the flag that silences the log;
    ``cache_min_compile_secs``: programs that compiled faster are not written to the persistent cache.
    """
    rest = parse(fv, prog, description, argv)
    if rest and not positional:
        fail(f"{prog}: unexpected arguments {rest}")
    if keep_memory:
        from ..allocator import keep_freed_memory

        keep_freed_memory()  # no page faults at each jitted call on large batches (allocator.py)
    setup_logging(quiet=bool(fv[quiet_flag].value) if quiet_flag else False)
    enable_compilation_cache(cache_min_compile_secs)
    return rest


def positive_int(name: str, default: int, help: str, fv: flags.FlagValues) -> None:
    flags.DEFINE_integer(name, default, help, lower_bound=1, flag_values=fv)


def define_policy_flags(fv: flags.FlagValues, strategy_help: str) -> None:
    """The exit-policy flags of eval.py, predict.py and serve.py (read by ``policies.policy_from_input``)."""
    from ..policies import POLICIES

    # The registry's names: a policy registered before the flags are defined is a choice too.
    flags.DEFINE_enum("strategy", None, sorted(POLICIES), strategy_help, flag_values=fv)
    flags.DEFINE_enum("measure", None, ["kl", "euclidean", "cosine", "edit"],
                      "VEE's consistency measure, as a distance (default kl)", flag_values=fv)
    flags.DEFINE_float("tau", None, "vee: largest distance that counts as agreement; entropy: exit when below; "
                                    "maxprob: exit when above", flag_values=fv)
    flags.DEFINE_integer("patience", None, "vee: votes needed to exit (default 2)", flag_values=fv)
    flags.DEFINE_boolean("ensemble", False, "predict the mean of the tables up to the exit", flag_values=fv)
    flags.DEFINE_integer("layer", None, "budget: the exit layer m* (1-based)", flag_values=fv)


def setup_logging(quiet: bool = False) -> None:
    """Log lines with a time stamp; quiet: warnings only."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("absl").addFilter(skip_disk_full)
    if quiet:
        logging.getLogger("vee_jax").setLevel(logging.WARNING)


def skip_disk_full(record: logging.LogRecord) -> bool:
    """Drop Orbax's tracebacks of a full disk (logged from its writer threads through absl): the
    command reports it as one ``errors.DiskFullError`` line that says what was kept."""
    from ..errors import is_disk_full

    exc = record.exc_info[1] if record.exc_info else None
    return not ((exc is not None and is_disk_full(exc)) or "No space left on device" in record.getMessage())


def enable_compilation_cache(min_compile_secs: float = 1.0) -> None:
    """Keep compiled steps on disk (JAX's persistent cache) so that a second run skips compiling.

    ``VEE_JAX_XLA_CACHE`` sets the folder (default ``~/.cache/vee_jax/xla``); ``none`` disables it.
    ``min_compile_secs``: programs that compiled faster are not written (JAX's default, 1 s, keeps
    the engine's large programs; serve.py passes 0 for its hundreds of small layer calls).
    """
    import jax

    where = os.environ.get("VEE_JAX_XLA_CACHE", str(Path.home() / ".cache" / "vee_jax" / "xla"))
    if where.lower() != "none" and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)  # whoever set the folder
