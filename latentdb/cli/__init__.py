"""The ``latentdb`` command: a thin layer over the library.

latentdb demo ["your question"]        build a collection of stdlib docstrings, ask it
latentdb collections PATH              list collections and their latent spaces
latentdb query PATH COLLECTION "text"  nearest records to a text
latentdb alias PATH ALIAS COLLECTION   create or switch an alias (--delete removes it)
latentdb migrate PATH NAME --embedder E  re-embed a collection, switch NAME when done
latentdb ingest PATH COLLECTION FILES  embed a JSONL/Parquet corpus (--ray: on a Ray cluster)
latentdb serve PATH                    serve a database over HTTP (API keys, OpenAPI)
latentdb analyze PATH COLLECTION       the space report: norms, concentration, hubness, advice
latentdb map PATH COLLECTION -o F      a 2-D map of the records (HTML, or PNG for *.png)
latentdb compare PATH A B              how much neighbourhoods change from collection A to B
"""

# Each command registers on ``app`` as its module loads: _commands' before _analysis',
# the order of the help.
from latentdb.cli import _commands  # noqa: F401
from latentdb.cli._analysis import report_tables
from latentdb.cli._app import app, main

__all__ = ["app", "main", "report_tables"]
