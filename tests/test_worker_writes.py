"""The buffering worker writes each answer in one piece.

gunicorn writes an answer's head and body with two ``sendall`` calls; the
worker's socket holds them and writes once, so a client (Dovecot's HTTP
client, once per login) is woken once per answer.  These tests use a real
socket pair: what the peer can read is what the kernel was given.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoconfig.worker import OUT_LIMIT, ReplaySocket


@pytest.fixture
def pair() -> Iterator[tuple[ReplaySocket, socket.socket]]:
    ours, peer = socket.socketpair()
    replay = ReplaySocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    peer.setblocking(False)
    yield replay, peer
    replay.close()
    peer.close()


def readable(peer: socket.socket) -> bytes:
    """Everything the peer can read now, without waiting."""
    data = b""
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_an_answer_held_reaches_the_client_only_when_released_and_in_one_piece(
    pair: tuple[ReplaySocket, socket.socket],
) -> None:
    replay, peer = pair
    replay.hold_writes()
    replay.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    replay.sendall(b"{}")
    assert readable(peer) == b""
    replay.release_writes()
    assert readable(peer) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


def test_writes_outside_an_answer_go_out_at_once(pair: tuple[ReplaySocket, socket.socket]) -> None:
    """Error answers gunicorn writes after a failure, and 100 Continue, are not held."""
    replay, peer = pair
    replay.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert readable(peer) == b"HTTP/1.1 400 Bad Request\r\n\r\n"
    replay.hold_writes()
    replay.release_writes()
    replay.sendall(b"next")
    assert readable(peer) == b"next"


def test_a_large_answer_goes_out_in_pieces_of_the_limit_without_losing_a_byte(
    pair: tuple[ReplaySocket, socket.socket],
) -> None:
    replay, peer = pair
    body = bytes(range(256)) * (OUT_LIMIT // 256) * 3
    replay.setblocking(True)
    replay.hold_writes()
    replay.sendall(b"head\r\n\r\n")
    received = b""
    for start in range(0, len(body), 1000):
        replay.sendall(body[start : start + 1000])
        received += readable(peer)
    assert received, "past the limit, the answer flows before it is complete"
    replay.release_writes()
    received += readable(peer)
    assert received == b"head\r\n\r\n" + body


def test_a_file_follows_the_head_held_before_it(pair: tuple[ReplaySocket, socket.socket], tmp_path: Path) -> None:
    """gunicorn writes the head, then sends a file's bytes with sendfile: they must not overtake it."""
    replay, peer = pair
    static = tmp_path / "style.css"
    static.write_bytes(b"body { margin: 0 }\n")
    replay.setblocking(True)
    replay.hold_writes()
    replay.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\n")
    with static.open("rb") as file:
        replay.sendfile(file)
    replay.sendall(b"")
    replay.release_writes()
    assert readable(peer) == b"HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\nbody { margin: 0 }\n"
