"""Query planning pieces: the ``where`` language compiled to SQL."""

from latentdb.query._where import compile_where

__all__ = ["compile_where"]
