"""Hybrid search: the vector ranking and the full-text (BM25) ranking of the same query
text, fused by reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009).

The text side ranks the documents holding any word of the query (an OR) by BM25,
without the query's English stopwords: "PDF viewer for the terminal" ranks as "PDF viewer
terminal". A query made only of stopwords ranks the documents holding all of them ("the
who"). Words in more than ``COMMON_SHARE`` of the documents count in the score without
bringing documents in by themselves (:class:`~latentdb.store.TextMatch`).

Why: an OR of every word, stopwords included, matched 23,827 of 50k PyPI summaries on
average, and SQLite computed BM25 for each (bench/results/text.md; issue 18: "PDF viewer
for the terminal" took 335 ms, "PDF viewer terminal" 39 ms).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from latentdb.store import TextMatch

__all__ = [
    "COMMON_ROWS",
    "COMMON_SHARE",
    "RRF_CONSTANT",
    "STOPWORDS",
    "candidates",
    "fts_query",
    "fuse",
]

RRF_CONSTANT = 60  # the k of RRF: 1 / (60 + rank), as in the paper and most systems
KeyArray = npt.NDArray[np.int64]


def candidates(k: int) -> int:
    """How deep each ranking is read before fusing."""
    return max(50, 5 * k)


def fuse(
    vector_keys: KeyArray,
    text_keys: Sequence[int],
    k: int,
    weights: tuple[float, float],
) -> tuple[list[int], list[float]]:
    """The top ``k`` keys by weighted reciprocal-rank score, and their scores.

    Args:
        vector_keys: Keys nearest first (-1 for none).
        text_keys: Keys best BM25 first.
        k: How many to keep.
        weights: (vector weight, text weight).
    """
    scores: dict[int, float] = {}
    for weight, ranking in ((weights[0], vector_keys.tolist()), (weights[1], list(text_keys))):
        if weight == 0:
            continue
        for rank, key in enumerate(ranking, start=1):
            if key >= 0:
                scores[key] = scores.get(key, 0.0) + weight / (RRF_CONSTANT + rank)
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [key for key, _ in best], [score for _, score in best]


# NLTK's English stopword list (nltk_data corpora/stopwords/english), without the
# entries holding an apostrophe: the words of a query split there, as FTS5's unicode61
# tokenizer splits documents ("don't" is "don" and "t", both listed).
_STOPWORD_LIST = """
    a about above after again against ain all am an and any are aren as at be because
    been before being below between both but by can couldn d did didn do does doesn
    doing don down during each few for from further had hadn has hasn have haven having
    he her here hers herself him himself his how i if in into is isn it its itself just
    ll m ma me mightn more most mustn my myself needn no nor not now o of off on once
    only or other our ours ourselves out over own re s same shan she should shouldn so
    some such t than that the their theirs them themselves then there these they this
    those through to too under until up ve very was wasn we were weren what when where
    which while who whom why will with won wouldn y you your yours yourself yourselves
"""
STOPWORDS = frozenset(_STOPWORD_LIST.split())
# A word in more documents than this share of them is common (it scores, but brings no
# document in alone). 0.05 on 50k PyPI summaries (bench/results/text.md): on queries that
# held stopwords, the BM25 side's CPU time p99 30 ms, against 77 with no common words and
# 16 at 0.02; the fused top 10 of stopword-free queries as before for 96% of them (98%
# with no common words, 88% at 0.02).
COMMON_SHARE = 0.05
# ... unless it is in at most this many: ranking them costs a few milliseconds.
COMMON_ROWS = 1000

_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> TextMatch | None:
    """The full-text side of a hybrid query: the words of a plain text but its stopwords,
    each quoted so that no character of it is read as FTS5 syntax; the stopwords, all of
    them to be held, when the text has no other word; None when it has no words at all.

    Words repeated in another case count once (FTS5 folds case, and a repeated phrase
    would count twice in BM25).
    """
    words: dict[str, str] = {}
    for word in _WORD.findall(text):
        words.setdefault(word.lower(), word)
    if not words:
        return None
    kept = [word for folded, word in words.items() if folded not in STOPWORDS]
    return TextMatch(
        phrases=tuple('"' + word.replace('"', '""') + '"' for word in kept or words.values()),
        all_words=not kept,
        common_share=COMMON_SHARE,
        common_rows=COMMON_ROWS,
    )
