"""Sphinx configuration: Markdown pages (MyST) and an API reference from the docstrings (autodoc).

Build (as tests/test_docs.py does): ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, not whatever vee_jax is installed

project = "vee_jax"
author = "vee_jax authors"
copyright = "vee_jax authors"

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # shapes and types are stated in the docstrings; signatures stay short
autodoc_default_options = {"members": True, "undoc-members": False}

html_theme = "alabaster"
html_title = "vee_jax"


# --- docstrings ---------------------------------------------------------------------------------
# The docstrings are written to be read in the source: Google-style "Args:" / "Returns:" sections
# (read with napoleon's parser) and ``literal``s glued to a plural or suffix. Napoleon's parser is
# applied to functions, classes and modules only: on a property or attribute it would read the first
# "text: more" as "type: description" and try to link the text as a type.

import re  # noqa: E402

from sphinx.ext.napoleon import Config as _NapoleonConfig  # noqa: E402
from sphinx.ext.napoleon.docstring import GoogleDocstring  # noqa: E402

class _Docstring(GoogleDocstring):
    """Napoleon's Google parser, with "Returns:" read as prose: the project writes what comes back
    there ("(config, params, tokenizer): ..."), not a type to link."""

    def _consume_returns_section(self, preprocess_types=False):
        lines = self._dedent(self._consume_to_next_section())
        return [("", "", lines)] if lines else []


_NAPOLEON = _NapoleonConfig(napoleon_use_param=True, napoleon_use_rtype=True)
_GLUED_LITERAL = re.compile(r"(?<![`\w])(``[^`\s](?:[^`]*[^`\s])?``)(?=[A-Za-z])")  # ``jax.Array``s -> ``jax.Array``\ s


def _process_docstring(app, what, name, obj, options, lines):
    text = [_GLUED_LITERAL.sub(r"\1\\ ", line) for line in lines]
    if what not in ("attribute", "property", "data"):
        text = _Docstring(text, _NAPOLEON, app, what, name, obj, options).lines()
    lines[:] = text


def setup(app):
    app.connect("autodoc-process-docstring", _process_docstring)
