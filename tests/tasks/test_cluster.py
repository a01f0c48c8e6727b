"""The local Ray's fixed ports fall back to free ones when another process holds them."""

from __future__ import annotations

import socket

from tasks.cluster import _port_or_free


def test_a_free_port_is_kept() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    assert _port_or_free(port, "dashboard") == port


def test_a_taken_port_is_replaced_by_a_free_one() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = int(holder.getsockname()[1])
        other = _port_or_free(taken, "dashboard")
        assert other != taken
        with socket.socket() as check:
            check.bind(("127.0.0.1", other))  # really free
