"""The load generator of bench/server.py: closed-loop clients over raw keep-alive sockets.

Run by bench/server.py in a process of its own (``python bench/_load.py SPEC.json``);
it prints one JSON object, the phase's measurements, on stdout. Each client is a thread
with one keep-alive HTTP/1.1 connection to the server; it sends a request, reads the
whole reply, checks it, and sends the next, until the phase ends. Requests are bytes
prepared outside the clock (queries) or assembled from prepared parts (adds: the ids
differ each time), so a request costs the load generator a ``sendall``, a few
``recv`` calls and one ``orjson.loads``: it shares the machine's cores with the server,
and an HTTP client library (httpx, the servers' own Python clients) costs several
times more per request than the server's own work.

Two protocols, one for each server: latentdb's REST API (vectors in its binary form, as
its Python client sends them) and Chroma's v2 REST API (vectors as JSON lists of
numbers, as its Python client sends them). Both ask for ids and distances only.

Kept free of latentdb imports: it measures a server, whatever the working tree holds.
"""

from __future__ import annotations

import base64
import json
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

K = 10
# The filter of the filtered phase: bucket = row % 1000, so bucket < 100 is 10% of rows.
FILTER = {"bucket": {"$lt": 100}}
BUCKETS = 1000
# Distinct blocks of rows an add picks from (noised copies of training rows, prepared
# before the clock starts).
ADD_BLOCKS = 32


class ProtocolError(Exception):
    """The server answered something that is not HTTP/1.1 as expected."""


class Connection:
    """One keep-alive HTTP/1.1 connection: send prepared bytes, read one reply."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.sock = self._open()
        self.buffer = b""

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self.address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def request(self, data: bytes) -> tuple[int, bytes]:
        """Send ``data`` (a whole request) and return the reply's status and body."""
        self.sock.sendall(data)
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            buffer += self._recv()
            end = buffer.find(b"\r\n\r\n")
        head, buffer = buffer[:end], buffer[end + 4 :]
        lines = head.split(b"\r\n")
        status = int(lines[0][9:12])
        length, chunked, close = None, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            body, buffer = self._chunks(buffer)
        elif length is not None:
            while len(buffer) < length:
                buffer += self._recv()
            body, buffer = buffer[:length], buffer[length:]
        else:
            raise ProtocolError("a reply without Content-Length or chunked encoding")
        self.buffer = buffer
        if close:
            self.sock.close()
            self.sock, self.buffer = self._open(), b""
        return status, body

    def _chunks(self, buffer: bytes) -> tuple[bytes, bytes]:
        body = b""
        while True:
            end = buffer.find(b"\r\n")
            while end < 0:
                buffer += self._recv()
                end = buffer.find(b"\r\n")
            size = int(buffer[:end].split(b";")[0], 16)
            buffer = buffer[end + 2 :]
            while len(buffer) < size + 2:
                buffer += self._recv()
            body += buffer[:size]
            buffer = buffer[size + 2 :]
            if size == 0:
                return body, buffer

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ProtocolError("the server closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


def http_request(method: str, host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Protocol:
    """How one server is asked: prepared query requests, and add requests."""

    def __init__(self, spec: dict[str, Any], queries: np.ndarray, filtered: bool) -> None:
        self.spec = spec
        self.host = f"{spec['host']}:{spec['port']}"
        self.queries = [self._query(vector, filtered) for vector in queries]

    def _query(self, vector: np.ndarray, filtered: bool) -> bytes:
        raise NotImplementedError

    def add(self, ids: list[str], block: Any, metadatas: list[dict[str, int]]) -> bytes:
        raise NotImplementedError

    def prepare_block(self, vectors: np.ndarray) -> Any:
        raise NotImplementedError

    def hits(self, reply: Any) -> int:
        raise NotImplementedError


class LatentdbProtocol(Protocol):
    def __init__(self, spec: dict[str, Any], queries: np.ndarray, filtered: bool) -> None:
        self.headers = {
            "Authorization": f"Bearer {spec['key']}",
            "Content-Type": "application/json",
            "X-LatentDB-Vectors": "binary",
        }
        self.base = f"/v1/collections/{spec['collection']}"
        super().__init__(spec, queries, filtered)

    @staticmethod
    def _binary(vectors: np.ndarray) -> dict[str, Any]:
        data = np.ascontiguousarray(vectors, dtype="<f4")
        return {
            "dtype": "float32",
            "shape": list(data.shape),
            "data": base64.b64encode(data.tobytes()).decode("ascii"),
        }

    def _query(self, vector: np.ndarray, filtered: bool) -> bytes:
        body: dict[str, Any] = {
            "vectors": self._binary(vector[None, :]),
            "k": K,
            "include": ["distances"],
        }
        if filtered:
            body["where"] = FILTER
        return http_request(
            "POST", self.host, f"{self.base}/query", self.headers, orjson.dumps(body)
        )

    def prepare_block(self, vectors: np.ndarray) -> Any:
        return self._binary(vectors)

    def add(self, ids: list[str], block: Any, metadatas: list[dict[str, int]]) -> bytes:
        body = orjson.dumps(
            {"ids": ids, "vectors": block, "metadatas": metadatas, "model": self.spec["model"]}
        )
        return http_request("POST", self.host, f"{self.base}/records", self.headers, body)

    def hits(self, reply: Any) -> int:
        return len(reply["ids"][0])


class ChromaProtocol(Protocol):
    def __init__(self, spec: dict[str, Any], queries: np.ndarray, filtered: bool) -> None:
        self.headers = {"Content-Type": "application/json"}
        self.base = (
            f"/api/v2/tenants/{spec['tenant']}/databases/{spec['database']}"
            f"/collections/{spec['collection_id']}"
        )
        super().__init__(spec, queries, filtered)

    def _query(self, vector: np.ndarray, filtered: bool) -> bytes:
        body: dict[str, Any] = {
            "query_embeddings": [vector.tolist()],
            "n_results": K,
            "include": ["distances"],
        }
        if filtered:
            body["where"] = FILTER
        return http_request(
            "POST", self.host, f"{self.base}/query", self.headers, orjson.dumps(body)
        )

    def prepare_block(self, vectors: np.ndarray) -> Any:
        return vectors.tolist()

    def add(self, ids: list[str], block: Any, metadatas: list[dict[str, int]]) -> bytes:
        body = orjson.dumps({"ids": ids, "embeddings": block, "metadatas": metadatas})
        return http_request("POST", self.host, f"{self.base}/add", self.headers, body)

    def hits(self, reply: Any) -> int:
        return len(reply["ids"][0])


PROTOCOLS: dict[str, Callable[[dict[str, Any], np.ndarray, bool], Protocol]] = {
    "latentdb": LatentdbProtocol,
    "chroma": ChromaProtocol,
}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """One phase: ``clients`` threads for ``warmup`` + ``duration`` seconds; requests
    that start within the last ``duration`` seconds are the ones measured."""
    queries = np.load(spec["queries"])
    protocol = PROTOCOLS[spec["server"]](spec, queries, spec["filtered"])
    clients, write_share, rows = spec["clients"], spec["write_share"], spec["write_rows"]
    blocks: list[Any] = []
    if write_share > 0:
        pool = np.load(spec["pool"])
        noise = np.random.default_rng(spec["seed"])
        for _ in range(ADD_BLOCKS):
            picked = pool[noise.integers(0, len(pool), rows)]
            noised = picked + noise.normal(0, 0.02, picked.shape).astype(np.float32)
            noised /= np.linalg.norm(noised, axis=1, keepdims=True)
            blocks.append(protocol.prepare_block(noised))
    records: list[list[tuple[float, float, int, bool]]] = [[] for _ in range(clients)]
    written: list[list[str]] = [[] for _ in range(clients)]
    failures: list[str] = []
    connections = [Connection(spec["host"], spec["port"]) for _ in range(clients)]
    ready = threading.Barrier(clients + 1)
    clock = [0.0, 0.0]  # measured window: [start, end)

    def client(number: int) -> None:
        rng = np.random.default_rng(spec["seed"] * 1000 + number)
        draws = rng.random(200_000)
        picks = rng.integers(0, len(protocol.queries), 200_000)
        mine, acknowledged = records[number], written[number]
        connection, tag, batch, turn = connections[number], f"{spec['tag']}{number}", 0, 0
        ready.wait()
        stop = clock[1]
        while True:
            began = time.perf_counter()
            if began >= stop:
                break
            write = draws[turn % len(draws)] < write_share
            query = picks[turn % len(picks)]
            turn += 1
            ids: list[str] = []
            if write:
                ids = [f"{tag}-{batch}-{i}" for i in range(rows)]
                metadatas = [{"bucket": (batch * rows + i) % BUCKETS} for i in range(rows)]
                data = protocol.add(ids, blocks[batch % len(blocks)], metadatas)
                batch += 1
            else:
                data = protocol.queries[query]
            ok = False
            try:
                status, body = connection.request(data)
                if not 200 <= status < 300:  # Chroma answers an add with 201
                    failures.append(f"HTTP {status}: {body[:300]!r}")
                elif write:
                    acknowledged.extend(ids)
                    ok = True
                elif protocol.hits(orjson.loads(body)) == K:
                    ok = True
                else:
                    failures.append(f"fewer than {K} hits: {body[:300]!r}")
            except (OSError, ProtocolError, ValueError) as error:
                kind = "add" if write else "query"
                failures.append(
                    f"{type(error).__name__} ({kind} at {began - clock[0]:.1f} s, after "
                    f"{time.perf_counter() - began:.1f} s): {error}"
                )
                connection.close()
                connection = Connection(spec["host"], spec["port"])
            mine.append((began, time.perf_counter() - began, int(write), ok))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    now = time.perf_counter()
    clock[0], clock[1] = now + spec["warmup"], now + spec["warmup"] + spec["duration"]
    ready.wait()
    for thread in threads:
        thread.join()
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for connection in connections:
        connection.close()
    start, end = clock
    rows_in = [r for mine in records for r in mine if start <= r[0] < end]
    result: dict[str, Any] = {
        "clients": clients,
        "duration_s": spec["duration"],
        "warmup_s": spec["warmup"],
        "load_cpu_s": (cpu_after.ru_utime + cpu_after.ru_stime)
        - (cpu_before.ru_utime + cpu_before.ru_stime),
        "errors": len(failures),
        "error_samples": failures[:5],
        "acknowledged": [i for mine in written for i in mine],
    }
    # Per second of the measured window: queries and adds started, and the slowest query.
    seconds = int(np.ceil(spec["duration"]))
    timeline = [[0, 0, 0.0] for _ in range(seconds)]
    for began, took, write, _ in rows_in:
        second = timeline[min(int(began - start), seconds - 1)]
        second[write] += 1
        if not write:
            second[2] = max(second[2], round(took * 1e3, 1))
    result["timeline"] = timeline
    for name, kind in (("query", 0), ("add", 1)):
        kept = [r for r in rows_in if r[2] == kind]
        ms = np.asarray([r[1] for r in kept]) * 1e3
        result[name] = {
            "count": len(kept),
            "ok": sum(1 for r in kept if r[3]),
            "per_s": len(kept) / spec["duration"],
            "mean_ms": float(ms.mean()) if len(ms) else None,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p90_ms": float(np.percentile(ms, 90)) if len(ms) else None,
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
            "max_ms": float(ms.max()) if len(ms) else None,
        }
    return result


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    sys.stdout.write(json.dumps(run(spec)) + "\n")


if __name__ == "__main__":
    main()
