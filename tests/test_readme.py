"""README.md and .ci/run agree: CI runs exactly the README's install and test commands."""

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
