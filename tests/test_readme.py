"""README.md is the front page: CI runs exactly its install and test commands, and it stays short."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands():
    readme = ROOT / "README.md"
    ci = ROOT / ".ci" / "run"
    commands = [l for l in ci.read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert commands, ".ci/run runs no command"
    blocks = readme.read_text()
    for c in commands:
        assert f"\n{c}\n" in blocks, f".ci/run runs {c!r}, which README.md does not show"


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the manual belongs in docs/ (at most 250)"
    for section in ("## Install and run", "## Test", "## Train on each data set", "## Results",
                    "## Differences from the paper", "## Documentation"):
        assert section in lines, f"README.md lost its section {section!r}"
