"""What a user can fix: one base class, ``UserError``, at the bottom of the package.

A ``UserError`` means "fix your input": the message says what is wrong and what to do. The
commands print it as one line and exit 2 (``cli.user_errors``); anything else is a bug and keeps
its traceback. This module imports nothing from the package, so every module may raise these.
The classes keep their old import paths too (``vee_jax.config.ConfigError`` is
``errors.ConfigError``, ``vee_jax.data.sentence.DataError`` is ``errors.DataError``, ...).
"""

from __future__ import annotations

import errno
from os import PathLike


class UserError(ValueError):
    """An input a user can fix (data, workdir, backbone, config, cache, policy); the message says
    why and what to do."""


class ConfigError(UserError):
    """A config field or command-line option that cannot be used; the message names it and says why."""


class PolicyError(ConfigError):
    """An exit policy that cannot be built or run as given (a flag, a JSON object, a sweep row)."""


class WorkdirError(UserError):
    """A workdir that cannot be used as asked; the message says why and what to do."""


class BackboneError(UserError):
    """A backbone folder that cannot be loaded; the message says what was found and expected."""


class DiskFullError(UserError):
    """The disk filled while a checkpoint or a cache was written; the message says what failed and
    what was kept (nothing half-written is ever read: both are written aside and renamed)."""


def is_disk_full(e: BaseException) -> bool:
    """``e`` (or what caused it) is a full disk: ``OSError`` ENOSPC, or a library's error that
    carries it in its text (Orbax and TensorStore raise ``ValueError("RESOURCE_EXHAUSTED: ...
    No space left on device [os_error_code='28']")`` from their writer threads)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e) or f"os_error_code='{errno.ENOSPC}'" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


class CacheError(UserError):
    """A cache that cannot be built as asked (no checkpoint, no data file)."""


class DataError(UserError):
    """A data file that cannot be read as promised; the message says where and why.

    The message is ``"<path>: <where>: <problem>"`` where ``<where>`` is ``line N`` (1-based)
    for line formats, or ``record N`` (0-based, the index in the returned list / JSON array)
    with ``(line L, column C)`` when known, e.g.
    ``data/train.json: record 12 (line 14, column 3): span [5, 3] ends before it starts``;
    or ``sentence N`` (0-based, the index among the file's sentences) for problems found after
    reading, such as an entity type outside the label set; or ``row N`` (0-based) for a row of
    a Hugging Face dataset, whose "path" is the dataset as ``config.data`` names it.
    """

    def __init__(self, path: str | PathLike[str], problem: str, *, line: int | None = None,
                 record: int | None = None, column: int | None = None, sentence: int | None = None,
                 row: int | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.line = line
        self.record = record
        self.column = column
        self.sentence = sentence
        self.row = row
        super().__init__(f"{self.path}: {self._where()}{problem}")

    def _where(self) -> str:
        if self.sentence is not None:
            return f"sentence {self.sentence}: "
        if self.row is not None:
            return f"row {self.row}: "
        pos = []
        if self.line is not None:
            pos.append(f"line {self.line}")
        if self.column is not None:
            pos.append(f"column {self.column}")
        if self.record is not None:
            return f"record {self.record}" + (f" ({', '.join(pos)})" if pos else "") + ": "
        return (", ".join(pos) + ": ") if pos else ""

    def __reduce__(self):  # keep the keyword-only fields through pickling (multiprocessing)
        return (_rebuild_data_error, (type(self), self.path, self.problem, self.line,
                                      self.record, self.column, self.sentence, self.row))


class MissingDataFile(DataError, FileNotFoundError):
    """The data file does not exist: a DataError (so ``check`` exits cleanly) and a
    FileNotFoundError (so ``except FileNotFoundError`` still works)."""

    def __init__(self, path: str | PathLike[str], problem: str, **where) -> None:
        DataError.__init__(self, path, problem, **where)
        self.filename = str(path)  # the OSError fields, for callers that read them
        self.errno = errno.ENOENT
        self.strerror = problem

    def __str__(self) -> str:  # OSError's own __str__ would print "[Errno 2] ..." instead
        return self.args[0]


def _rebuild_data_error(cls, path, problem, line, record, column, sentence=None, row=None):
    return cls(path, problem, line=line, record=record, column=column, sentence=sentence, row=row)


__all__ = ["BackboneError", "CacheError", "ConfigError", "DataError", "MissingDataFile", "PolicyError",
           "UserError", "WorkdirError"]
