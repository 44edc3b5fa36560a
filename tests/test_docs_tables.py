"""Every result table in docs/ and README.md equals what scripts/docs_tables.py writes from the JSON."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "scripts" / "docs_tables.py")
docs_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_tables)

PAGES = sorted(docs_tables.pages())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_tables_match_their_json(page):
    _, changed = docs_tables.render(page.read_text())
    assert not changed, (f"{page.relative_to(ROOT)}: tables {changed} differ from their JSON "
                         f"({', '.join(docs_tables.TABLES[n].source for n in changed)}); "
                         "run python scripts/docs_tables.py")


def test_every_table_is_placed_and_every_page_marker_is_known():
    used = {m["name"] for p in PAGES for m in docs_tables.MARKER.finditer(p.read_text())}
    assert used == set(docs_tables.TABLES), (sorted(set(docs_tables.TABLES) - used), sorted(used - set(docs_tables.TABLES)))


def test_a_changed_number_is_caught():
    page = ROOT / "docs" / "results.md"
    text = page.read_text()
    assert "0.7396" in text
    _, changed = docs_tables.render(text.replace("0.7396", "0.7397", 1))
    assert changed == ["genia_per_exit"]
