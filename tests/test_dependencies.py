"""Every declared dependency is used: imported by the library or its commands, or marked as a pin.

A package listed only to pin what another dependency pulls in (as ``torch==2.13.0``: the CPU
build) must say so on its own line with a comment ``# pin: <why>``; this test reads it.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, str]:
    """``{normalised distribution name: its line}`` from pyproject.toml's ``dependencies`` (raw text,
    so that comments are kept)."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[\n(.*?)^\]", text, re.S | re.M).group(1)
    out = {}
    for line in block.splitlines():
        m = re.match(r'\s*"([A-Za-z0-9_.\-]+)', line)
        if m:
            out[normalise(m.group(1))] = line
    return out


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> set[str]:
    """Top-level module names imported anywhere in vee_jax/ and the command scripts at the root,
    plus the packages the library imports by name (``weights.SHIPPED``)."""
    from vee_jax.weights import SHIPPED

    files = [*(ROOT / "vee_jax").rglob("*.py"), *ROOT.glob("*.py")]
    names = set(SHIPPED.values())
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_every_dependency_is_imported_or_marked_as_a_pin():
    dists = md.packages_distributions()
    used = {normalise(d) for mod in imported_modules() for d in dists.get(mod, [])}
    unused = [line.strip() for name, line in declared().items() if name not in used and "# pin:" not in line]
    assert not unused, f"declared in pyproject.toml but imported by no code (or mark '# pin: why'): {unused}"


def test_the_reader_sees_the_dependencies():
    deps = declared()
    assert {"jax", "flax", "optax", "datasets", "torch"} <= set(deps), sorted(deps)
