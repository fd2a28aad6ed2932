"""The demo corpus: docstrings of the installed Python standard library.

Every machine with Python has it, so the demo needs no download. The sources are read
with :mod:`ast`, never imported, so no module's import-time side effects run.
``latentdb demo`` builds its collection with :func:`demo_collection`,
:func:`stdlib_docstrings` and :func:`add_docstrings`, and times the model's loading with
:func:`load_model`.
"""

from __future__ import annotations

import ast
import sysconfig
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from latentdb.api import Collection, Database
from latentdb.embed import get_embedder

__all__ = [
    "DEMO_COLLECTION",
    "DEMO_QUESTIONS",
    "DocstringRecord",
    "add_docstrings",
    "demo_collection",
    "load_model",
    "stdlib_docstrings",
]

DEMO_COLLECTION = "stdlib"

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


def demo_collection(database: Database) -> Collection:
    """The demo's collection (:data:`DEMO_COLLECTION`): the one built earlier, whatever
    its model, or a new one with the default embedder."""
    if DEMO_COLLECTION in database.list_collections():
        return database.get_collection(DEMO_COLLECTION)
    return database.create_collection(DEMO_COLLECTION)


def add_docstrings(
    collection: Collection,
    records: Sequence[DocstringRecord],
    *,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Embed and add docstring records (ids, documents, metadata) to a collection.

    Args:
        collection: A collection with an embedder, e.g. :func:`demo_collection`'s.
        records: From :func:`stdlib_docstrings`.
        progress: Called with the number of records embedded so far.
    """
    collection.add(
        [record.id for record in records],
        documents=[record.document for record in records],
        metadatas=[dict(record.metadata) for record in records],
        progress=progress,
    )


def load_model(embedder: str | None) -> float:
    """Load an embedder, so that later timings are of embedding alone.

    Args:
        embedder: A collection's embedder name (None: nothing to load).

    Returns:
        The seconds taken: the embedder's fingerprint and a first text (models load
        on first use).
    """
    if embedder is None:
        return 0.0
    started = time.perf_counter()
    model = get_embedder(embedder)
    _ = model.fingerprint
    model.embed_texts(["a first text loads the model"])
    return time.perf_counter() - started
