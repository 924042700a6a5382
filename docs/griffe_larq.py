"""Griffe extension: read larq-style docstring sections as Google-style sections.

larq's docstrings (and this package's) mark sections with Markdown headings:

    # Arguments
        name: Description.

mkdocstrings' Google parser expects `Arguments:` instead. This extension rewrites the
heading line of every section (outside code fences) before the docstring is parsed, so
`# Arguments`, `# Attributes`, `# Raises` and `# Returns` render as mkdocstrings' tables
and any other heading (`# References`, ...) as an admonition with that title. Library
docstrings are not changed; only what the docs build reads. Used by `mkdocs.yml`.

It also reads the `#: ...` comment block above a module constant as that constant's docstring
(the form the package uses; griffe itself only reads a string after the assignment), so the
API reference shows the same public names `tests/test_docs.py` requires a docstring for.
"""

from __future__ import annotations

import re
from typing import Any

try:
    import griffe
except ImportError:  # tests/test_docs.py checks `larq_to_google` without the docs tools
    griffe = None

_HEADING = re.compile(r"^(?P<indent>\s*)# (?P<title>[A-Z][A-Za-z ]*[A-Za-z])\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_TITLES = {"Arguments": "Args"}
_ITEM_SECTIONS = {"Arguments", "Attributes", "Raises"}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _join_wrapped_names(lines: list[str], start: int) -> None:
    """Join an item whose list of names wraps onto the next line (`a, b,` / `c: As in X.`)."""
    item_indent = _indent(lines[start])
    i = start
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) >= item_indent):
        line = lines[i]
        if _indent(line) == item_indent and line.rstrip().endswith(",") and ":" not in line:
            if i + 1 < len(lines) and lines[i + 1].strip():
                lines[i] = f"{line.rstrip()} {lines[i + 1].strip()}"
                del lines[i + 1]
                continue
        i += 1


def larq_to_google(text: str) -> str:
    """Rewrite larq-style `# Section` headings in `text` as Google-style `Section:` lines."""
    lines = text.split("\n")
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(line)
        if not match:
            continue
        following = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), None)
        if following is None or _indent(lines[following]) <= len(match["indent"]):
            continue  # a heading without an indented block is left alone
        title = match["title"]
        lines[i] = f"{match['indent']}{_TITLES.get(title, title)}:"
        if title in _ITEM_SECTIONS:
            _join_wrapped_names(lines, following)
        if title == "Returns":
            # One item, no name: a leading ":" keeps the Google parser from reading the
            # first word before a colon as a name or type.
            body = lines[following]
            lines[following] = f"{body[: _indent(body)]}: {body.lstrip()}"
    return "\n".join(lines)


def comment_docstring(lines: list[str], lineno: int) -> str | None:
    """The `#:` comment block right above line `lineno` (1-based) of `lines`, as text.

    The package documents module constants that way (`#: What it is.` above `NAME = ...`), a
    form Sphinx reads but griffe does not.
    """
    block = []
    i = lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        block.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    return "\n".join(block).strip() or None


if griffe is not None:

    class LarqDocstrings(griffe.Extension):
        """Apply `larq_to_google` to every docstring griffe loads, and read `#:` comments
        above attributes that have no docstring."""

        def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
            if obj.docstring is not None:
                obj.docstring.value = larq_to_google(obj.docstring.value)

        def on_attribute_instance(
            self, *, node: Any, attr: griffe.Attribute, agent: Any, **kwargs: Any
        ) -> None:
            code = getattr(agent, "code", None)
            lineno = getattr(node, "lineno", None)
            if attr.docstring is not None or not code or not lineno:
                return
            text = comment_docstring(code.split("\n"), lineno)
            if text:
                attr.docstring = griffe.Docstring(
                    text,
                    lineno=lineno,
                    endlineno=lineno,
                    parent=attr,
                    parser=getattr(agent, "docstring_parser", None),
                    parser_options=getattr(agent, "docstring_options", None),
                )
