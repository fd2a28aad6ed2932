"""Full-text ranking of plain words, hybrid search's text side: BM25 over the FTS5 index
of the documents, where words common to many documents add to a row's score but do not
bring rows in by themselves.

Why: SQLite computes BM25 for every row a query matches, and an OR of words that many
documents hold matches most of them: "python" is in 21% of 50k PyPI summaries, and an OR
of every word of a query matched 4,447 of them on average (at most 15,776; with the
query's stopwords kept, 23,827). A row that holds only common words ranks below the rows
that hold a rarer one nearly always; scoring only the rows that hold a rarer word, with
every word still counted in their score, keeps the order of those rows exactly
(bench/results/text.md). Stopwords are the query layer's business
(:func:`latentdb.query.fts_query`).
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

__all__ = ["TextMatch", "text_expressions"]


class TextMatch(NamedTuple):
    """Plain words to rank documents by with BM25, any of which may match.

    A word that more than ``common_share`` of the indexed documents hold (and more than
    ``common_rows`` of them) is *common*: it counts in the score of every row ranked but
    brings no row in by itself; when every word is common, only rows holding all of them
    are ranked. With ``all_words``, only rows holding every word are ranked, whatever
    their counts.

    Attributes:
        phrases: Each word as a quoted FTS5 string (``'"pdf"'``), none repeated.
        all_words: Rank only the rows holding every word.
        common_share: Share of the indexed documents above which a word is common.
        common_rows: Documents a word may be in without being common, at any share:
            ranking that many rows costs little, and in a small collection every word
            is in a large share of it.
    """

    phrases: tuple[str, ...]
    all_words: bool
    common_share: float
    common_rows: int


def text_expressions(connection: sqlite3.Connection, match: TextMatch) -> tuple[str, str | None]:
    """The FTS5 query a row is scored by, and the one it must match to be ranked (None:
    the same one), for a :class:`TextMatch` against the index as it is now.

    Each word is counted in at most ``limit + 1`` documents, so a common word costs a
    bounded scan of its postings, not a count of them all.
    """
    if match.all_words:
        return " AND ".join(match.phrases), None
    (documents,) = connection.execute(
        # FTS5's own table of document lengths: one row per indexed document.
        "SELECT count(*) FROM records_fts_docsize"
    ).fetchone()
    limit = max(match.common_rows, int(match.common_share * documents))
    rare = [
        phrase
        for phrase in match.phrases
        if _documents_holding(connection, phrase, limit + 1) <= limit
    ]
    every = " OR ".join(match.phrases)
    if len(rare) == len(match.phrases):
        return every, None
    if not rare:  # only common words ("python library"): a row must hold them all
        return " AND ".join(match.phrases), None
    return every, " OR ".join(rare)


def _documents_holding(connection: sqlite3.Connection, phrase: str, most: int) -> int:
    """How many indexed documents hold ``phrase``, counted up to ``most``."""
    (count,) = connection.execute(
        "SELECT count(*) FROM (SELECT 1 FROM records_fts WHERE records_fts MATCH ? LIMIT ?)",
        (phrase, most),
    ).fetchone()
    return int(count)
