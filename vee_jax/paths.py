"""How a path is written into a result file or a log line: never as this machine's absolute path.

Results are committed and read on other machines, so a path under the working directory is
written relative to it (``runs/demo``), one under the home folder as ``~/...``, and any other
absolute path by its last two parts (``.../data/test.json``), which still names it.
"""

from __future__ import annotations

import os
from pathlib import Path


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a result file should record it (see the module docstring); relative paths as given."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        return str(path)
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            return prefix + str(p.relative_to(base)) if p != base else (prefix.rstrip("/") or ".")
        except ValueError:
            continue
    return str(Path("...", *p.parts[-2:]))
