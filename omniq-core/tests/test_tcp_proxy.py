"""The forwarding process of :mod:`omniq.testing.tcp_proxy` losing one answer (``cut``):
the request that holds the marker must reach the server whole, however it is split
into reads, and its answer must never reach the client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from omniq.testing import until
from omniq.testing.proxies import forwarding


class _Server:
    """A server on 127.0.0.1 that keeps what it got and answers each line (a request)
    once it has all of it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.got = bytearray()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    self.got.extend(data)
                    if data.endswith(b"\n"):
                        conn.sendall(b"ok\n")
            except OSError:
                pass


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.sock.close()


def _answer(sock: socket.socket) -> bytes | None:
    sock.settimeout(5)
    try:
        return sock.recv(100)
    except ConnectionResetError:
        return None


def test_a_cut_request_larger_than_one_read_reaches_the_server_whole(server: _Server) -> None:
    request = b"MARK" + b"x" * 300_000 + b"END\n"
    with (
        forwarding(f"tcp://127.0.0.1:{server.port}") as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as sock,
    ):
        proxy.lose_next_answer("MARK")
        sock.sendall(request)
        proxy.cut(timeout=5)
        assert not _answer(sock), "the answer was lost"
    until(lambda: len(server.got) >= len(request), "the server got the whole request", deadline=5)
    got = len(server.got)
    assert got == len(request), f"the server got {got} bytes of the {len(request)} sent"


def test_a_marker_split_between_two_reads_is_still_cut(server: _Server) -> None:
    with (
        forwarding(f"tcp://127.0.0.1:{server.port}") as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        proxy.lose_next_answer("MARK")
        sock.sendall(b"first\n")
        assert _answer(sock) == b"ok\n", "no marker: answered"
        sock.sendall(b"second MA")  # the request's first read ends inside the marker
        time.sleep(0.2)
        sock.sendall(b"RK, its rest\n")
        proxy.cut(timeout=5)
        assert not _answer(sock), "the answer was lost"
