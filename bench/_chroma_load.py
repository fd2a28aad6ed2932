"""Fill a running Chroma server through Chroma's own Python client (bench/server.py).

Runs under the peer's virtual environment (``--chroma-venv``), which has chromadb and
numpy but not latentdb: ``python bench/_chroma_load.py PORT VECTORS.npy``. It creates the
cosine collection ``pypi`` (Chroma's default HNSW settings), adds the rows with ids
``0..n-1`` and metadata ``{"bucket": i % 1000}`` (the same as latentdb's), 5,000 per call
(Chroma's server refuses batches over 5,461 rows), and prints the collection's id,
tenant and database as JSON.
"""

from __future__ import annotations

import json
import sys
import time

import chromadb
import numpy as np
from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT

BATCH = 5_000
BUCKETS = 1000


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    vectors = np.load(path)
    client = chromadb.HttpClient(host="127.0.0.1", port=port)
    started = time.perf_counter()
    collection = client.create_collection(
        "pypi", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    for low in range(0, len(vectors), BATCH):
        high = min(low + BATCH, len(vectors))
        collection.add(
            ids=[str(i) for i in range(low, high)],
            embeddings=vectors[low:high],
            metadatas=[{"bucket": i % BUCKETS} for i in range(low, high)],
        )
    count = collection.count()
    print(
        json.dumps(
            {
                "collection_id": str(collection.id),
                "tenant": DEFAULT_TENANT,
                "database": DEFAULT_DATABASE,
                "count": count,
                "ingest_s": round(time.perf_counter() - started, 2),
                "chromadb": chromadb.__version__,
                "configuration": str(collection.configuration_json),
            }
        )
    )


if __name__ == "__main__":
    main()
