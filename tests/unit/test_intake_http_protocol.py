"""intake's HTTP protocol (services/intake/http.py): a response's header block waits for
its body and both go out in one write; every kind of response still arrives whole."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from services.intake.http import JoinedWritesProtocol, _JoiningTransport
from tests.helpers import serving

HEAD = b"HTTP/1.1 202 Accepted\r\ncontent-length: 5\r\n\r\n"


class _Sink(asyncio.Protocol):
    pass


async def _connected() -> tuple[asyncio.Transport, socket.socket]:
    """A real transport of this loop on one end of a loopback connection, and the plain
    non-blocking socket at the other end."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    ours, _ = listener.accept()
    listener.close()
    peer.setblocking(False)
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(_Sink, ours)
    return transport, peer


def _available(peer: socket.socket) -> bytes:
    with contextlib.suppress(BlockingIOError):
        return peer.recv(65536)
    return b""


async def _read(peer: socket.socket, n: int) -> bytes:
    got = b""
    for _ in range(500):
        got += _available(peer)
        if len(got) >= n:
            return got
        await asyncio.sleep(0.01)
    return got


async def test_header_block_waits_for_the_body_and_goes_with_it() -> None:
    transport, peer = await _connected()
    joined = _JoiningTransport(transport, asyncio.get_running_loop())
    try:
        joined.write(HEAD)
        assert _available(peer) == b""  # held, not sent
        joined.write(b"hello")
        assert await _read(peer, len(HEAD) + 5) == HEAD + b"hello"
    finally:
        transport.close()
        peer.close()


async def test_a_header_block_alone_goes_out_on_the_next_turn_and_before_close() -> None:
    transport, peer = await _connected()
    joined = _JoiningTransport(transport, asyncio.get_running_loop())
    try:
        joined.write(HEAD)  # e.g. the answer to a HEAD request: no body follows
        await asyncio.sleep(0)
        assert await _read(peer, len(HEAD)) == HEAD
        joined.write(b"plain data is not held")
        assert await _read(peer, 22) == b"plain data is not held"
        joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        joined.close()  # a Connection: close answer: the block goes before the close
        assert await _read(peer, 19) == b"HTTP/1.1 200 OK\r\n\r\n"
    finally:
        transport.close()
        peer.close()


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    out = b"echo:" + body
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(out))],
        }
    )
    await send({"type": "http.response.body", "body": out})


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
    return head, body


async def test_uvicorn_with_the_protocol_answers_every_kind_of_request() -> None:
    async with serving(_app, http=JoinedWritesProtocol, lifespan="off") as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for i in range(3):  # keep-alive: one connection, several requests
                data = b"n%d" % i
                writer.write(
                    b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(data), data)
                )
                head, body = await _response(reader)
                assert head.startswith(b"HTTP/1.1 200 ") and body == b"echo:" + data
            # Expect: 100-continue: the interim answer comes before the body is sent.
            writer.write(
                b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"ok")
            head, body = await _response(reader)
            assert head.startswith(b"HTTP/1.1 200 ") and body == b"echo:ok"
            # HEAD: a header block with no body after it.
            writer.write(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 ")
            # Connection: close: the whole answer, then the end of the stream.
            writer.write(
                b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz"
            )
            head, body = await _response(reader)
            assert body == b"echo:z"
            assert await asyncio.wait_for(reader.read(), 10) == b""
        finally:
            writer.close()
