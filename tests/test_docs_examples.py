"""The Python examples of docs/*.md run as written (each page's blocks in order, one namespace).

Blocks that need the shipped MiniLM weights run too (the package is a dependency); blocks
marked with a first line ``# not run`` are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ["model.md", "api.md"]


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run(page):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)
    assert blocks, f"{page} has no python block"
    namespace: dict = {}
    for i, code in enumerate(blocks):
        if code.startswith("# not run"):
            continue
        exec(compile(code, f"{page} block {i + 1}", "exec"), namespace)
