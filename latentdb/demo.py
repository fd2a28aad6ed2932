"""The demo corpus: docstrings of the installed Python standard library.

Every machine with Python has it, so the demo needs no download. The sources are read
with :mod:`ast`, never imported, so no module's import-time side effects run.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEMO_QUESTIONS", "DocstringRecord", "stdlib_docstrings"]

DEMO_QUESTIONS = (
    "how do I read a CSV file?",
    "compress data with gzip",
    "run a shell command and capture its output",
    "parse command line arguments",
    "make a temporary directory that is removed afterwards",
)

# Packages that are tests, demos or GUI internals: noise for a "find the API" demo.
_SKIPPED_PARTS = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "site-packages",
    "dist-packages",
    "turtledemo",
    "ensurepip",
    "pydoc_data",
    "__pycache__",
    "distutils",
}
# Shorter first paragraphs are mostly "Return x." fragments that say little.
_MIN_CHARACTERS = 20


@dataclass(frozen=True)
class DocstringRecord:
    """One public module, class or function and the first paragraph of its docstring."""

    id: str
    document: str
    metadata: dict[str, str]


def stdlib_docstrings(root: Path | None = None) -> list[DocstringRecord]:
    """Public docstrings of the standard library, in a stable order.

    Args:
        root: The standard library folder (default: this interpreter's).

    Returns:
        One record per public module, class, function or method with a docstring of at
        least 20 characters in its first paragraph; ids are qualified names
        (``json.dumps``), documents are ``"<name>: <first paragraph>"``.
    """
    root = root or Path(sysconfig.get_paths()["stdlib"])
    records: dict[str, DocstringRecord] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(part in _SKIPPED_PARTS or part.startswith("test") for part in relative.parts):
            continue
        module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        if any(part.startswith("_") for part in module.split(".")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for name, kind, docstring in _documented(tree, module):
            paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
            if len(paragraph) >= _MIN_CHARACTERS and name not in records:
                records[name] = DocstringRecord(
                    id=name,
                    document=f"{name}: {paragraph}",
                    metadata={"module": module, "kind": kind},
                )
    return list(records.values())


def _documented(tree: ast.Module, module: str) -> Iterator[tuple[str, str, str]]:
    """(qualified name, kind, docstring) of the module and its public classes/functions."""
    docstring = ast.get_docstring(tree)
    if docstring:
        yield module, "module", docstring
    stack: list[tuple[ast.Module | ast.ClassDef, str]] = [(tree, module)]
    while stack:
        node, prefix = stack.pop(0)
        for child in node.body:
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if child.name.startswith("_"):
                continue
            name = f"{prefix}.{child.name}"
            docstring = ast.get_docstring(child)
            if isinstance(child, ast.ClassDef):
                kind = "class"
            else:
                kind = "method" if isinstance(node, ast.ClassDef) else "function"
            if docstring:
                yield name, kind, docstring
            if isinstance(child, ast.ClassDef):
                stack.append((child, name))
