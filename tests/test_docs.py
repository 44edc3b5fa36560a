"""docs/: the Sphinx build passes with warnings as errors, every config field is documented, and no
committed result or fixture file carries a path of the machine that wrote it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install -e '.[dev]')")
    pytest.importorskip("myst_parser", reason="myst-parser is not installed (pip install -e '.[dev]')")
    # The same command as README.md's "Documentation"; -E: no saved environment, every page read.
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html", str(DOCS),
           str(tmp_path / "html")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"sphinx-build failed ({r.returncode}):\n{r.stderr[-6000:]}"
    assert (tmp_path / "html" / "paper_notes.html").exists()
    # "NOTES item N" in the code resolves to a stable anchor of the paper notes page.
    notes = (tmp_path / "html" / "paper_notes.html").read_text()
    cited = {int(n) for f in ROOT.joinpath("vee_jax").rglob("*.py")
             for m in re.finditer(r"NOTES items? ([\d, \-]+)", f.read_text())
             for n in re.findall(r"\d+", m.group(1))}
    assert cited, "no NOTES item cited in vee_jax/ (update this test)"
    missing = sorted(n for n in cited if f'id="paper-item-{n}"' not in notes)
    assert not missing, f"NOTES items cited in the code without an anchor in docs/paper_notes.md: {missing}"


def test_every_config_field_is_documented():
    from vee_jax.config import base_config

    text = (DOCS / "configuration.md").read_text()
    c = base_config()
    missing = [f"{sec}.{k}" for sec in ("data", "model", "optim", "train", "mesh") for k in c[sec]
               if f"`{sec}.{k}`" not in text and f"`{sec}.{k}`," not in text and f"{sec}.{k}`" not in text]
    missing += [] if "`seed`" in text else ["seed"]
    assert not missing, f"config fields missing from docs/configuration.md's table: {missing}"


# A path of the machine: /root/..., /home/..., /work/..., /tmp/..., C:\...; not a URL, not ~/..., not
# a relative path, not a ratio such as "ms/sentence".
ABSOLUTE = re.compile(r"(?<![\w.~:/\-\]\)])(/(?:root|home|work|tmp|check|mnt|Users|opt|var|srv|scratch|data|private)"
                      r"(?:/[^\s\"',;)]*)?)(?=[\s\"',;)]|$)|\b[A-Za-z]:\\\\?[\w]")
SCANNED = ["results", "bench/results", "tests/fixtures"]


def test_no_machine_paths_in_committed_results():
    hits = []
    for top in SCANNED:
        for f in sorted((ROOT / top).rglob("*")):
            if not f.is_file() or f.suffix in {".png", ".npz", ".pdf"}:
                continue
            for i, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
                m = ABSOLUTE.search(line)
                if m:
                    hits.append(f"{f.relative_to(ROOT)}:{i}: {m.group(0)}")
    assert not hits, ("absolute paths of a machine in committed results (write ~/..., a relative path or a "
                      "placeholder):\n" + "\n".join(hits[:30]))


def test_the_path_scan_catches_paths():
    for bad in ['"workdir": "/root/vee_runs/genia"', "Model: /tmp/vee/demo_full, 300", "serving /home/a/x on",
                "data (/work/shared/data/genia/test.json)", '"C:\\\\runs\\\\genia"']:
        assert ABSOLUTE.search(bad), bad
    for good in ['"workdir": "~/vee_runs/genia"', "../shared/data/genia/test.json", "runs/demo",
                 "https://example.org/work/x", "ms/sentence", "p50/p95", "http://127.0.0.1:58709 (docs: /docs;"]:
        assert not ABSOLUTE.search(good), good


def test_display_path_writes_no_machine_path(tmp_path, monkeypatch):
    from vee_jax.paths import display_path

    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert display_path(tmp_path / "repo" / "runs" / "demo") == "runs/demo"
    assert display_path(tmp_path / "home" / "vee_runs" / "genia") == "~/vee_runs/genia"
    assert display_path("runs/demo") == "runs/demo"  # relative paths as given
    elsewhere = display_path("/srv/shared/data/genia/test.json")
    assert elsewhere == ".../genia/test.json"
    for shown in (elsewhere, display_path(tmp_path / "x")):
        assert not ABSOLUTE.search(f'"workdir": "{shown}"'), shown
