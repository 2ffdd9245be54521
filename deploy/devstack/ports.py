"""Free loopback ports for stacks that must not collide with a running `make up` stack."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"
# The ports of a `make up` stack: never take them, even when they happen to be free right now.
STACK_PORTS = frozenset({1025, 8000, 8001, 8002, 8010, 8011, 8025, 9092, 9093, 55432})


def free_ports(count: int) -> list[int]:
    """count distinct loopback ports that were free a moment ago (held open together, so distinct)."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
            if port not in STACK_PORTS:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports
