"""The import-linter contracts of pyproject.toml ([tool.importlinter]) hold: the paper's modules
import no data reader, no command and no serving module; commands import nothing from each other;
errors.py is at the bottom. Run by hand: ``lint-imports`` in the repository root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    pytest.importorskip("importlinter", reason="pip install import-linter (the dev extra)")
    # lint-imports reads pyproject.toml in the working directory; the package it checks is the one
    # on sys.path first (this checkout, as the other tests use).
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    r = subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout, r.stdout
