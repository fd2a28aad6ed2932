"""uvicorn's HTTP protocol (httptools), with each reply sent in one write.

uvicorn writes a reply's status line and headers as soon as the application starts the
reply, and its body in a second write. On loopback each write wakes the client, which
reads the headers, finds the body missing and sleeps again: two wake-ups and two
context switches a reply. Profiling ``latentdb serve`` under one client on 2 busy cores
found the worker inside the header write in 56% of its samples, against 11% in the
search itself (issue 18). Here the connection's writes within one turn of the event
loop are gathered and written together at the end of that turn: a reply's headers and
body leave in one ``send``, as an HTTP server written in another language sends them.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["ConnectionShare", "OneWriteProtocol", "counting"]


class _GatheredWrites:
    """A transport whose writes within one turn of the loop become one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Write what was gathered, now."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def __getattr__(self, name: str) -> Any:
        # is_closing, get_extra_info, pause_reading, resume_reading, set_protocol, abort
        return getattr(self._transport, name)


class OneWriteProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a transport that gathers each turn's writes,
    and that closes a keep-alive connection only when it is idle."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        gathered: Any = _GatheredWrites(transport, self.loop)
        super().connection_made(gathered)

    def on_response_complete(self) -> None:
        # The reply is whole: it leaves now, in one write, rather than at the end of the
        # loop's turn. A query run on the loop next could hold the turn for long, and
        # uvicorn starts the keep-alive timer here: a client still waiting for a reply
        # held back that long would be timed out as idle (seen under writes).
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()

    def timeout_keep_alive_handler(self) -> None:
        # uvicorn closes a connection that sent nothing for timeout_keep_alive seconds
        # after a reply. When the event loop was held longer than that (a query on the
        # loop waiting for the engine), the timer runs before the request that arrived
        # meanwhile is read, and the client gets a reset (seen under 16 clients, 10%
        # writes). A request waiting in the socket means the connection is not idle.
        if not _waiting(self.transport):
            super().timeout_keep_alive_handler()


def _waiting(transport: asyncio.BaseTransport) -> bool:
    """Whether bytes the loop has not read yet wait in ``transport``'s socket."""
    pseudo = transport.get_extra_info("socket")
    if pseudo is None:
        return False
    try:
        # uvloop's transport sockets cannot recv(): peek through a copy of the descriptor
        with socket.socket(fileno=os.dup(pseudo.fileno())) as copy:
            return bool(copy.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing waiting (EAGAIN), or the socket is gone
        return False


class ConnectionShare:
    """The connections each worker of a server holds, in memory the workers share, and
    which of them is this worker's (``slots[index]``, changed by this worker only).

    Args:
        slots: One count per worker (a ``multiprocessing.Array`` of ints).
        index: This worker's slot.
    """

    def __init__(self, slots: Any, index: int) -> None:
        self.slots = slots
        self.index = index

    def opened(self) -> None:
        self.slots[self.index] += 1

    def closed(self) -> None:
        self.slots[self.index] -= 1

    def crowded(self) -> bool:
        """Whether this worker holds more than its share of the connections (the total
        over the workers, rounded up)."""
        counts = self.slots[:]
        return bool(counts[self.index] > -(-sum(counts) // len(counts)))


def counting(share: ConnectionShare) -> type[OneWriteProtocol]:
    """:class:`OneWriteProtocol`, counting this worker's connections in ``share``."""

    class Counted(OneWriteProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            share.opened()
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            share.closed()
            super().connection_lost(exc)

    return Counted
