"""Fuzzing a live server from its own OpenAPI document with schemathesis.

Schemathesis draws requests for every operation (positive: as documented; negative:
anything else), and each is sent on ONE keep-alive connection, so a reply that drops
the connection is seen. Each reply is classed: a server error (5xx), a status the
document does not list for that operation, a body or content type the document does
not describe, a broken connection (the request failed, or the next one had to open a
new connection). ``tests/server/test_fuzz.py`` runs it briefly; ``bench/fuzz_server.py``
runs it long.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, response_schema_conformance

__all__ = ["FuzzReport", "fuzz"]

# Operations whose path names a collection are sent half the time to this one (which
# the caller creates), so that requests get past "not found" into the engine.
KNOWN_COLLECTION = "c"
# The model of its vectors, named by every write of them (require_model).
KNOWN_MODEL = "test/fuzz"
# Never aimed at the known collection: it would be gone for the rest of the run.
SPARED = frozenset({("DELETE", "/v1/collections/{name}")})
# Uvicorn closes a keep-alive connection idle this long (its timeout_keep_alive, 5 s,
# less a margin): schemathesis can take that long to prepare an operation's strategy.
KEEP_ALIVE_SECONDS = 4.0


@dataclass
class FuzzReport:
    """What a run saw."""

    cases: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    undocumented: list[str] = field(default_factory=list)
    nonconforming: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    idle_closes: int = 0
    per_operation: Counter[str] = field(default_factory=Counter)

    def problems(self) -> list[str]:
        """Every failing case, one line each (empty when the run is clean)."""
        return self.server_errors + self.undocumented + self.nonconforming + self.broken


class _Connection:
    """One httpx client with one connection; notices when it was replaced."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.client = httpx.Client(
            base_url=url,
            headers=headers,
            timeout=60,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self.stream: object = None
        self.last = ""  # the request before, and its status
        self.answered = time.monotonic()  # when the request before was answered
        self.idle_closes = 0

    def send(self, kwargs: dict[str, Any]) -> tuple[httpx.Response | None, str | None]:
        """The reply, or None and why the connection broke."""
        headers = dict(kwargs.get("headers") or {})
        content = kwargs.get("data")
        if "json" in kwargs:  # escaped as JSON allows: lone surrogates travel too
            content = json.dumps(kwargs["json"]).encode()
            headers.setdefault("Content-Type", "application/json")
        try:
            response = self.client.request(
                kwargs["method"],
                kwargs["url"],
                headers=headers,
                params=kwargs.get("params"),
                content=content,
            )
        except httpx.TransportError as error:
            self.stream, before = None, self.last
            self.last = f"{_request(kwargs)} -> {type(error).__name__}"
            return None, f"{type(error).__name__}: {error}; the request before: {before}"
        stream = response.extensions.get("network_stream")
        replaced = self.stream is not None and stream is not self.stream
        idle = time.monotonic() - self.answered
        self.stream, before = stream, self.last
        self.last = f"{_request(kwargs)} -> {response.status_code}"
        self.answered = time.monotonic()
        if replaced and idle > KEEP_ALIVE_SECONDS:
            self.idle_closes += 1  # the server may close an idle connection: not a break
        elif replaced:
            return response, f"the server closed the connection after {before}"
        return response, None

    def close(self) -> None:
        self.client.close()


def _negatable(operation: Any) -> bool:
    """Whether a request can break the document: a body, or a parameter other than a
    plain string (any path segment is a string)."""
    raw = operation.definition.raw
    parameters = raw.get("parameters", [])
    return "requestBody" in raw or any(
        parameter.get("schema", {}).get("type") != "string" for parameter in parameters
    )


def _documented(operation: Any, status: int) -> bool:
    responses = operation.definition.raw.get("responses", {})
    return str(status) in responses or f"{str(status)[0]}XX" in responses or "default" in responses


def fuzz(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    cases: int,
    seconds: float,
    seed: int = 0,
    spared: frozenset[tuple[str, str]] = SPARED,
) -> FuzzReport:
    """Fuzz the server at ``url`` with about ``cases`` requests, stopping after
    ``seconds``. ``headers`` go with every request (an API key); operations in
    ``spared`` (method, path) are never aimed at the known collection."""
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    runs = len(operations) + sum(map(_negatable, operations))
    per_operation = -(-cases // runs)
    report = FuzzReport()
    connection = _Connection(url, headers or {})
    started = time.monotonic()
    checks = [response_schema_conformance, content_type_conformance]
    try:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for number, operation in enumerate(operations):
                if time.monotonic() - started > seconds:
                    break
                if mode is GenerationMode.NEGATIVE and not _negatable(operation):
                    continue  # hypothesis would search seconds for what cannot exist
                named = "{name}" in operation.path and (operation.method.upper(), operation.path)
                strategies = [operation.as_strategy(generation_mode=mode)]
                if named and named not in spared:
                    strategies.append(
                        operation.as_strategy(
                            generation_mode=mode, path_parameters={"name": KNOWN_COLLECTION}
                        )
                    )
                _run(
                    st.one_of(strategies),
                    per_operation,
                    seed * 1000 + number + (500 if mode is GenerationMode.NEGATIVE else 0),
                    connection,
                    operation,
                    checks,
                    report,
                    started + seconds,
                )
    finally:
        connection.close()
        report.idle_closes = connection.idle_closes
        report.seconds = time.monotonic() - started
    return report


def _run(
    strategy: st.SearchStrategy[Any],
    examples: int,
    seed: int,
    connection: _Connection,
    operation: Any,
    checks: list[Any],
    report: FuzzReport,
    deadline: float,
) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=strategy)
    def send(case: Any) -> None:
        if time.monotonic() > deadline:
            return
        kwargs = case.as_transport_kwargs(base_url=str(connection.client.base_url))
        response, broken = connection.send(kwargs)
        label = f"{operation.label}"
        report.cases += 1
        report.per_operation[label] += 1
        if broken is not None:
            report.broken.append(f"{label}: {broken} ({_request(kwargs)})")
        if response is None:
            return
        status = response.status_code
        report.statuses[status] += 1
        if status >= 500:
            report.server_errors.append(
                f"{label}: {status} {response.text[:200]} ({_request(kwargs)})"
            )
        if not _documented(operation, status):
            report.undocumented.append(f"{label}: {status} not documented ({_request(kwargs)})")
            return
        try:
            case.validate_response(response, checks=checks)
        except Exception as error:  # schemathesis raises a group of failures
            report.nonconforming.append(f"{label}: {str(error)[:300]} ({_request(kwargs)})")

    send._hypothesis_internal_use_seed = seed  # type: ignore[attr-defined]
    with contextlib.suppress(Unsatisfiable):  # nothing to vary: an operation without inputs
        send()


def _request(kwargs: dict[str, Any]) -> str:
    body = kwargs.get("json", kwargs.get("data"))
    text = f"{kwargs['method']} {kwargs['url']} params={kwargs.get('params')} body={body!r}"
    return text[:400]
