"""The documentation covers the public API: every public module has an API page on the site
(a `::: module` directive under docs/, rendered by mkdocstrings) and every name in every
public module's `__all__` has a docstring of its own.

These checks need no mkdocs: the site itself is built separately (`bash scripts/docs.sh`,
`mkdocs build --strict`), which fails on broken links and on docstrings it cannot render.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import larq_meta

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Public modules (in `larq_meta.__all__`) that get no API page, and why.
NOT_ON_THE_SITE = {
    "analysis": "deprecated alias module, split into hidden_weights and quadratic (#13)",
}

_DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)


def public_modules() -> list[str]:
    """`larq_meta` and its public submodules: the lower-case, non-dunder names of its `__all__`
    (the others are re-exported classes such as `MetaplasticAdam`)."""
    names = [n for n in larq_meta.__all__ if not n.startswith("_") and n[:1].islower()]
    return ["larq_meta"] + [f"larq_meta.{n}" for n in names if n not in NOT_ON_THE_SITE]


def api_directives() -> dict[str, Path]:
    """Object path -> the docs page whose `::: path` directive renders it."""
    found: dict[str, Path] = {}
    for page in sorted(DOCS.rglob("*.md")):
        for match in _DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            found.setdefault(match.group(1), page)
    return found


def _own_docstring(obj) -> str | None:
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
        # dataclasses and namedtuples invent "Name(field, ...)" when a class has none.
        if doc and doc.startswith(f"{obj.__name__}("):
            return None
        return doc
    if inspect.ismodule(obj) or inspect.isroutine(obj):
        return obj.__doc__
    doc = getattr(obj, "__doc__", None)
    wrapped = getattr(obj, "__wrapped__", None) or getattr(obj, "python_function", None)
    if wrapped is not None and inspect.isroutine(wrapped):  # tf.function, functools.wraps
        return wrapped.__doc__
    return None if doc == type(obj).__doc__ else doc


def _sources(module) -> list[str]:
    """The source of `module` and, for a package, of its submodules."""
    files = [inspect.getsourcefile(module)]
    if hasattr(module, "__path__"):
        for info in pkgutil.iter_modules(module.__path__):
            files.append(str(Path(module.__path__[0]) / f"{info.name}.py"))
    return [Path(f).read_text(encoding="utf-8") for f in files if f and Path(f).is_file()]


def _attribute_documented(source: str, name: str) -> bool:
    """Whether a module-level assignment to `name` has a docstring (a string right after it)
    or a `#:` comment right above it, the two forms mkdocstrings renders."""
    tree = ast.parse(source)
    lines = source.splitlines()
    body = tree.body
    for index, node in enumerate(body):
        targets = []
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, (ast.AnnAssign, ast.TypeAlias if hasattr(ast, "TypeAlias") else ())):
            target = getattr(node, "target", None) or getattr(node, "name", None)
            targets = [target.id] if isinstance(target, ast.Name) else []
        if name not in targets:
            continue
        following = body[index + 1] if index + 1 < len(body) else None
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
            and following.value.value.strip()
        ):
            return True
        above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
        if above.startswith("#:") and above[2:].strip():
            return True
    return False


def undocumented_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    missing = []
    for name in module.__all__:
        if name.startswith("__") and name.endswith("__"):
            continue  # conventions such as `__version__`, described on the page by hand
        obj = getattr(module, name)
        if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj):
            documented = bool((_own_docstring(obj) or "").strip())
        else:
            documented = bool((_own_docstring(obj) or "").strip()) or any(
                _attribute_documented(source, name) for source in _sources(module)
            )
        if not documented:
            missing.append(name)
    return missing


def test_public_modules_are_listed():
    modules = public_modules()
    # the redesign's public modules (#13); a module dropped from `__all__` must leave on purpose
    for name in ("optimizers", "models", "tasks", "training", "callbacks", "export"):
        assert f"larq_meta.{name}" in modules


@pytest.mark.parametrize("module_name", public_modules())
def test_public_module_has_an_api_page(module_name):
    directives = api_directives()
    assert module_name in directives, (
        f"{module_name} is public (larq_meta.__all__) but no page under docs/ has "
        f"`::: {module_name}`: add docs/api/<name>.md with it and list the page in "
        f"mkdocs.yml's nav (API reference)."
    )


def test_api_pages_document_only_public_modules():
    modules = set(public_modules())
    for target, page in api_directives().items():
        parts = target.split(".")
        owner = ".".join(parts[:2]) if len(parts) > 1 else parts[0]
        assert owner in modules, (
            f"{page.relative_to(ROOT)} renders `{target}`, which is not in a public module "
            f"of larq_meta.__all__: remove the page or make the module public."
        )


@pytest.mark.parametrize("module_name", public_modules())
def test_public_names_have_docstrings(module_name):
    module = importlib.import_module(module_name)
    assert isinstance(getattr(module, "__all__", None), (list, tuple)), (
        f"{module_name} has no explicit `__all__`"
    )
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"
    missing = undocumented_names(module_name)
    assert not missing, (
        f"public names of {module_name} without a docstring: {', '.join(missing)} "
        f"(the API reference would show nothing for them)"
    )


def test_docstring_check_catches_an_undocumented_name(tmp_path, monkeypatch):
    """The check is not vacuous: an undocumented function, class and constant are caught,
    and documented ones (including a `#:` constant and a dataclass) are not."""
    package = tmp_path / "docs_probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        '"""Probe."""\n'
        "import dataclasses\n"
        "__all__ = ['good', 'bad', 'Good', 'Bad', 'Data', 'GOOD', 'BAD', 'ALSO_GOOD']\n"
        "def good():\n    '''Documented.'''\n"
        "def bad():\n    pass\n"
        "class Good:\n    '''Documented.'''\n"
        "class Bad(Good):\n    pass\n"
        "@dataclasses.dataclass\nclass Data:\n    x: int = 0\n"
        "#: Documented constant.\nGOOD = 1\n"
        "BAD = 2\n"
        "ALSO_GOOD = 3\n'''Documented constant.'''\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert undocumented_names("docs_probe_pkg") == ["bad", "Bad", "Data", "BAD"]


def _griffe_larq():
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_larq", DOCS / "griffe_larq.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_larq_sections_become_google_sections():
    """docs/griffe_larq.py: what mkdocstrings' Google parser reads instead of larq headings."""
    docstring = (
        "Summary.\n"
        "\n"
        "!!! example\n"
        "    ```python\n"
        "    # Returns\n"
        "        not a section: inside a code fence\n"
        "    ```\n"
        "\n"
        "# Arguments\n"
        "    x: The input.\n"
        "    clipnorm, clipvalue,\n"
        "        name: As in Adam.\n"
        "\n"
        "# Returns\n"
        "    `(a, b)`: a pair, not a name and a type.\n"
        "\n"
        "# References\n"
        "    - [A paper](https://doi.org/10.0/x)\n"
        "\n"
        "# Not a section\n"
        "\n"
        "text\n"
    )
    converted = _griffe_larq().larq_to_google(docstring).split("\n")
    assert converted[4:6] == ["    # Returns", "        not a section: inside a code fence"]
    assert converted[8:11] == [
        "Args:",
        "    x: The input.",
        "    clipnorm, clipvalue, name: As in Adam.",
    ]
    assert converted[12:14] == ["Returns:", "    : `(a, b)`: a pair, not a name and a type."]
    assert converted[15] == "References:"
    assert "# Not a section" in converted


def test_comment_blocks_document_constants():
    lines = ["X = 0", "#: What Y is,", "#: on two lines.", "Y = 1", "Z = 2"]
    comment_docstring = _griffe_larq().comment_docstring
    assert comment_docstring(lines, 4) == "What Y is,\non two lines."
    assert comment_docstring(lines, 5) is None
    assert comment_docstring(lines, 1) is None
