"""The open-loop client of bench/intake/bench.py against a scripted loopback server: every
request is counted once (by status, by the error that ended it, or as unanswered), only
202s are accepted ids, and responses in any shape HTTP/1.1 allows are read whole."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "intake" / "bench.py"

# what the server does with request i, by i % len(SCRIPT)
CONNECTIONS = "(connections)"  # key of the count of connections accepted
SCRIPT = ["202", "500", "chunked", "split", "drop", "bye", "202 big", "200"]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_intake", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_intake"] = module
    spec.loader.exec_module(module)
    return module


def _answer(conn: socket.socket, what: str) -> bool:
    """Answer one request as scripted; False when the connection is to be closed."""
    body = b'{"status":"accepted"}'
    if what == "drop":  # no answer at all
        return False
    if what == "500":
        problem = b'{"title":"boom"}'
        conn.sendall(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % len(problem)
            + problem
        )
    elif what == "chunked":  # in two segments, a pause between
        conn.sendall(b'HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"st\r\n')
        time.sleep(0.01)
        conn.sendall(b'10;ext=1\r\natus":"accepted"\r\n1\r\n}\r\n0\r\n\r\n')
    elif what == "200":  # a success, but not an accepted webhook
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    elif what == "split":  # head and body in two segments, a pause between
        conn.sendall(b"HTTP/1.1 202 Accepted\r\ncontent-length: %d\r\n\r\n" % len(body))
        time.sleep(0.01)
        conn.sendall(body)
    elif what == "bye":
        conn.sendall(
            b"HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        return False
    elif what == "202 big":  # a body larger than one read
        big = b"x" * 200_000
        conn.sendall(b"HTTP/1.1 202 Accepted\r\nCONTENT-LENGTH: %d\r\n\r\n" % len(big) + big)
    else:
        conn.sendall(b"HTTP/1.1 202 Accepted\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    return True


def _serve_one(conn: socket.socket, seen: Counter[str]) -> None:
    seen[CONNECTIONS] += 1
    buf = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(buf) < length:
                buf += conn.recv(65536)
            body, buf = buf[:length], buf[length:]
            i = int(json.loads(body)["event_id"].rsplit("-", 1)[1])
            seen[json.loads(body)["event_id"]] += 1
            if not _answer(conn, SCRIPT[i % len(SCRIPT)]):
                return


@pytest.fixture
def server() -> Iterator[tuple[int, Counter[str]]]:
    seen: Counter[str] = Counter()
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve_one, args=(conn, seen), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1], seen
    stop.set()
    listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
    listener.close()
    thread.join(5)


def test_every_request_is_counted_once_by_what_became_of_it(
    bench: ModuleType, server: tuple[int, Counter[str]]
) -> None:
    port, seen = server
    n = 80
    bodies = bench.make_bodies(n, "t")
    res = bench.http_load(
        "scripted", port, "/x", bodies, rate=1000, connections=4, drain_timeout=10
    )
    connections = seen.pop(CONNECTIONS)

    want = Counter(SCRIPT[i % len(SCRIPT)] for i in range(n))
    accepted = [
        f"t-{i}"
        for i in range(n)
        if SCRIPT[i % len(SCRIPT)] in ("202", "chunked", "split", "bye", "202 big")
    ]
    assert res.statuses["500"] == want["500"]
    assert res.statuses["closed"] == want["drop"]
    assert res.statuses["202"] == len(accepted)
    assert res.statuses["unanswered"] == 0
    assert sorted(res.accepted_ids) == sorted(accepted)
    assert res.statuses["200"] == want["200"]
    assert res.ok == len(accepted) + want["200"] == len(res.latencies)
    assert all(lat >= 0 for lat in res.latencies)
    assert res.errors == want["500"] + want["drop"]
    assert set(seen) == {event_id for event_id, _ in bodies}  # each sent, none twice
    assert set(seen.values()) == {1}
    # connections are opened again only after the server closed one: nothing misread
    assert connections == 4 + want["drop"] + want["bye"]
    assert res.client_cpu is not None and res.client_cpu > 0


def test_requests_with_no_server_end_unanswered(bench: ModuleType) -> None:
    from shared.localstack import free_port

    bodies = bench.make_bodies(5, "u")
    res = bench.http_load(
        "nobody", free_port(), "/x", bodies, rate=1000, connections=2, drain_timeout=0.3
    )
    assert res.ok == 0
    assert res.statuses["unanswered"] == 5
    assert res.accepted_ids == []
