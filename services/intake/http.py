"""uvicorn's httptools protocol, writing each response's header block and body with one
system call instead of two.

ASGI hands a response over in two messages (``http.response.start``, then
``http.response.body``) and uvicorn writes each to the socket as it comes: two ``send()``
calls per response, and on loopback two wake-ups of the client. Here the connection's
transport holds a block that starts with a status line until the next write, which
joins it; for a small response the body follows within the same step of the handler, so
nothing waits. If no write follows (a ``HEAD`` response, ``100 Continue``, a streamed
body that comes later), the block goes out on the event loop's next turn; ``close()``
and ``write_eof()`` send it first."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_STATUS_LINE = b"HTTP/1.1 "


class _JoiningTransport:
    """Forwards everything to the socket's transport; joins a held header block to the
    write after it."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
        elif data[: len(_STATUS_LINE)] == _STATUS_LINE:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http="services.intake.http:JoinedWritesProtocol")``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        joined = _JoiningTransport(transport, self.loop)
        super().connection_made(joined)  # type: ignore[arg-type]
