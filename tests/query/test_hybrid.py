"""Hybrid search's text side (issue 18): a query's stopwords are left out unless it has
no other word, and words most documents hold count in the BM25 score but bring no
document in by themselves."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from latentdb import Collection, Database
from latentdb.query import fts_query
from latentdb.query._hybrid import COMMON_ROWS, COMMON_SHARE, STOPWORDS
from latentdb.store import TextMatch
from latentdb.store._text import text_expressions

TEXT_ONLY = (0.0, 1.0)  # fusion weights that leave the text ranking alone


def test_fts_query_quotes_words_and_leaves_stopwords_out() -> None:
    match = fts_query('PDF viewer for the "terminal", pdf THE col:x')
    assert match is not None
    # Repeats in another case count once; punctuation (FTS5 syntax included) is no word.
    assert match.phrases == ('"PDF"', '"viewer"', '"terminal"', '"col"', '"x"')
    assert not match.all_words
    assert (match.common_share, match.common_rows) == (COMMON_SHARE, COMMON_ROWS)
    only = fts_query("To be, or not to BE")
    assert only is not None and only.all_words
    assert only.phrases == ('"To"', '"be"', '"or"', '"not"')
    assert fts_query("!!! ...") is None
    assert {"the", "for", "don", "t", "s"} <= STOPWORDS and "python" not in STOPWORDS


def _index(documents: list[str]) -> sqlite3.Connection:
    """An FTS5 table named as the store's, holding ``documents``."""
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE VIRTUAL TABLE records_fts USING fts5(document)")
    connection.executemany(
        "INSERT INTO records_fts (document) VALUES (?)", [(d,) for d in documents]
    )
    return connection


def _match(text: str, *, share: float = 0.5, rows: int = 0) -> TextMatch:
    match = fts_query(text)
    assert match is not None
    return match._replace(common_share=share, common_rows=rows)


def test_common_words_score_but_bring_no_rows() -> None:
    connection = _index(["python pdf reader"] + ["python tool"] * 6 + ["pdf"] * 2 + ["other"])
    # "python" is in 7 of 10 documents (over half): it scores, "pdf" brings the rows.
    assert text_expressions(connection, _match("python pdf")) == ('"python" OR "pdf"', '"pdf"')
    # Every word rare (or in few rows at any share): the plain OR, nothing more.
    plain = ('"python" OR "pdf"', None)
    assert text_expressions(connection, _match("python pdf", share=0.9)) == plain
    assert text_expressions(connection, _match("python pdf", rows=7)) == plain
    # Only common words: rows must hold them all; so too for a query of stopwords.
    assert text_expressions(connection, _match("python tool")) == ('"python" AND "tool"', None)
    assert text_expressions(connection, _match("the who", share=0.9)) == ('"the" AND "who"', None)


@pytest.fixture
def texts(db: Database, hashing_embedder: Any) -> Collection:
    collection = db.create_collection("h", embedder="test-hashing")
    documents = {
        "viewer": "pdf viewer for the terminal",
        "viewer-short": "pdf viewer",
        "markdown": "markdown viewer in a browser",
        "the-who": "the who and the kinks: a fan site",
        "just-the": "the best of the rest",
        "for-the": "a tool for the job",
        "who-only": "who is who",
    }
    collection.add(
        list(documents),
        documents=list(documents.values()),
        metadatas=[{"n": i} for i in range(len(documents))],
    )
    return collection


def _text_ranking(collection: Collection, text: str, **options: Any) -> list[str]:
    found = collection.query(texts=text, k=7, hybrid=True, hybrid_weights=TEXT_ONLY, **options)
    return found.ids[0]


def test_a_query_with_stopwords_ranks_as_the_same_words_without_them(
    texts: Collection,
) -> None:
    mixed = _text_ranking(texts, "a PDF viewer for the terminal")
    assert mixed == _text_ranking(texts, "PDF viewer terminal")
    assert mixed == ["viewer", "viewer-short", "markdown"]
    fused = texts.query(texts="a PDF viewer for the terminal", k=3, hybrid=True)
    assert fused.ids[0][0] == "viewer"


def test_a_query_of_stopwords_only_ranks_documents_holding_all_of_them(
    texts: Collection,
) -> None:
    assert _text_ranking(texts, "The Who") == ["the-who"]
    assert set(_text_ranking(texts, "for the")) == {"viewer", "for-the"}
    assert set(_text_ranking(texts, "who")) == {"the-who", "who-only"}
    assert _text_ranking(texts, "the who is this") == []  # none holds them all
    assert _text_ranking(texts, "zzz nothing matches") == []  # no hits, no error
    fused = texts.query(texts="the who is this", k=3, hybrid=True)
    assert len(fused.ids[0]) == 3  # the vector side still answers


def test_filters_apply_to_the_restricted_ranking(texts: Collection) -> None:
    assert _text_ranking(texts, "the pdf viewer", where={"n": {"$gt": 0}}) == [
        "viewer-short",
        "markdown",
    ]
    filtered = _text_ranking(texts, "the pdf viewer", where_document={"$not_contains": "terminal"})
    assert "viewer" not in filtered and "viewer-short" in filtered
