"""What the benchmarks share: the machine's description."""

from __future__ import annotations

import platform
import subprocess


def cpu_name() -> str:
    """The CPU model as lscpu names it (platform.processor() where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except Exception:  # noqa: BLE001 - best effort description
        return platform.processor()


def write_results(out, result: dict, markdown: str) -> None:
    """``out`` (.json) and the Markdown table beside it (.md); print the table."""
    import json
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"wrote {out} and {out.with_suffix('.md')}")
