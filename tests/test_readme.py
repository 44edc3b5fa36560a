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


def test_every_config_field_is_documented():
    from vee_jax.config import base_config

    text = (ROOT / "README.md").read_text()
    c = base_config()
    missing = [f"{sec}.{k}" for sec in ("data", "model", "optim", "train", "mesh") for k in c[sec]
               if f"`{sec}.{k}`" not in text and f"`{sec}.{k}`," not in text and f"{sec}.{k}`" not in text]
    missing += [] if "`seed`" in text else ["seed"]
    assert not missing, f"config fields missing from README's Configs table: {missing}"
